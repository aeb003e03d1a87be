"""Streaming from disk vs in memory: training throughput and peak memory on a folder ~4x its budget.

Generates an image folder of 32x32 RGB PNGs whose decoded size is ``--oversize`` times ``--cache-max-gb``,
then, in a fresh child process per mode, runs greendiff's training workflow (``run_train``: the green
recipe, ``tiny`` UNet) on it:

- ``baseline``: a folder 1/50 the size, in memory: what training holds without the data;
- ``memory``: every image decoded into one tensor first (a budget above the data);
- ``streamed``: ``cache_max_gb`` below the decoded size, so loader workers decode each step's batch.

Each child reports images/s (the median of the run's log records after ``--warmup`` steps), its wall time,
its own peak RSS and its loader workers' peak RSS. Verdicts: streamed throughput within 10 % of
in-memory, and the streamed run's peak RSS above the baseline under half the decoded dataset size
(memory stays bounded while the in-memory run's grows by the whole dataset). Results are cached per mode in
``bench/results/streaming.json`` (a rerun skips finished modes; ``--fresh`` redoes them).

    python bench/streaming.py [--cache-max-gb 0.05] [--oversize 4] [--steps 150] [--workers 2] [--write-benchmarks]
    python bench/streaming.py --quick   # a smoke test of a few seconds (tiny sizes, nothing cached)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "streaming.json"
RESOLUTION, CHANNELS = 32, 3
MODES = ("baseline", "memory", "streamed")


def make_folder(folder: Path, images: int) -> None:
    """``images`` 32x32 RGB PNGs (smooth gradients with noise: they compress like photos, not like noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, RESOLUTION, dtype=np.float32)
    existing = len(list(folder.glob("*/*.png")))
    for i in range(existing, images):  # resumable: a folder cut short is completed
        base = rng.uniform(0, 255, 3).astype(np.float32)
        img = base + 80 * ramp[None, :, None] * rng.uniform(-1, 1, 3) + rng.normal(0, 8, (RESOLUTION, RESOLUTION, 3))
        sub = folder / f"c{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(sub / f"{i:07d}.png", compress_level=1)


def _rss_kb() -> int:
    import psutil

    return psutil.Process().memory_info().rss // 1024


def child(args: argparse.Namespace) -> dict:
    """One mode, in this (fresh) process: ``greendiff train`` (the workflow, in-process) on the folder; its
    throughput from the run's log records after the warm-up, its peak RSS and its loader workers'."""
    import statistics

    from greendiff.workflows import MeasurementOptions, TrainJob, run_train

    budget = {"memory": 1e6, "streamed": args.cache_max_gb, "baseline": 1e6}[args.child]
    steps = args.warmup + args.steps
    t0 = time.perf_counter()
    outcome = run_train(TrainJob(overrides={
        "model.preset": "tiny", "data.dataset": str(args.folder), "data.resolution": RESOLUTION,
        "data.cache_max_gb": budget, "data.loader_workers": args.workers, "optim.batch_size": args.batch_size,
        "run.max_steps": steps, "run.log_every": 10, "run.sample_every": steps, "run.checkpoint_every": steps,
        "run.num_samples": 1, "run.output_dir": str(args.out), "run.name": args.child,
    }, measurement=MeasurementOptions(country="FRA")))
    wall_s = time.perf_counter() - t0
    records = [json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    rates = [r["samples_per_s"] for r in records if "loss" in r and r["step"] > args.warmup]
    return {"mode": args.child, "status": outcome.status, "placement": start.get("placement", ""),
            "precision": start["precision"], "wall_s": wall_s, "images_per_s": statistics.median(rates),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_mode(mode: str, folder: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--cache-max-gb", str(args.cache_max_gb),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--out", str(args.data_dir / "runs")]
    env = {**os.environ, "GREENDIFF_LEDGER": str(args.data_dir / "ledger.sqlite"),
           "GREENDIFF_CACHE_DIR": str(args.data_dir / "cache")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def verdicts(results: dict, decoded_mb: float) -> dict:
    """The baseline is the same training on a folder 1/50 the size, in memory: what the trainer holds
    without the data (torch, the model, activations, AdamW's state). A worker is forked from the trainer:
    its RSS starts at the trainer's (shared pages) and what it adds is its own."""
    mem, streamed, base = results["memory"], results["streamed"], results["baseline"]
    ratio = streamed["images_per_s"] / mem["images_per_s"]
    above = max(streamed["peak_rss_mb"] - base["peak_rss_mb"], 0)
    workers_above = max(streamed["workers_peak_rss_mb"] - base["peak_rss_mb"], 0)
    return {"throughput_ratio": ratio, "throughput_met": ratio >= 0.9, "streamed_rss_above_baseline_mb": above,
            "memory_rss_above_baseline_mb": max(mem["peak_rss_mb"] - base["peak_rss_mb"], 0),
            "workers_rss_above_baseline_mb": workers_above, "rss_bounded": max(above, workers_above) < decoded_mb / 2}


def table(result: dict) -> str:
    cfg, v = result["config"], result["verdicts"]
    lines = ["## Streaming from disk vs in memory (`bench/streaming.py`)", "",
             f"- Command: `python {' '.join(result['argv'])}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
             f"- {cfg['images']:,} RGB PNGs at {RESOLUTION}x{RESOLUTION}: {cfg['decoded_mb']:.0f} MB decoded, "
             f"{cfg['oversize']:g}x `cache_max_gb` {cfg['cache_max_gb']:g}; `greendiff train` (the training workflow, "
             f"in-process), `tiny` UNet, batch {cfg['batch_size']}, precision {result['modes']['memory']['precision']}, "
             f"{cfg['warmup'] + cfg['steps']} steps; images/s: median of the log records after step {cfg['warmup']}; "
             f"streamed with {cfg['workers']} loader workers. Baseline: the same run on {cfg['baseline_images']:,} "
             "of the images, in memory (what training holds without the data).", "",
             "| mode | placement | wall | images/s | peak RSS | children's peak RSS (loader workers, meter helpers) |", "|---|---|---:|---:|---:|---:|"]
    for mode in MODES:
        r = result["modes"][mode]
        lines.append(f"| {mode} | {r['placement']} | {r['wall_s']:.0f} s | {r['images_per_s']:.0f} | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['workers_peak_rss_mb']:.0f} MB |")
    lines += ["", f"Streamed throughput is **{v['throughput_ratio']:.0%}** of in-memory (target: within 10 % → "
                  f"**{'met' if v['throughput_met'] else 'NOT met'}**). Peak RSS above the baseline: in memory "
                  f"{v['memory_rss_above_baseline_mb']:.0f} MB, streamed {v['streamed_rss_above_baseline_mb']:.0f} MB "
                  f"(a loader worker at most {v['workers_rss_above_baseline_mb']:.0f} MB), against {cfg['decoded_mb']:.0f} MB "
                  f"decoded (bounded, under half of it → **{'yes' if v['rss_bounded'] else 'NO'}**)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-max-gb", type=float, default=0.05)
    parser.add_argument("--oversize", type=float, default=4.0, help="decoded size / cache_max_gb")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "greendiff-bench-streaming")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds, nothing cached")
    parser.add_argument("--fresh", action="store_true", help="redo modes already in the results file")
    parser.add_argument("--write-benchmarks", action="store_true")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.cache_max_gb, args.steps, args.warmup, args.batch_size, args.workers = 1e-4, 2, 1, 8, 1
    images = int(args.oversize * args.cache_max_gb * 1e9 / (CHANNELS * RESOLUTION * RESOLUTION))
    baseline_images = max(images // 50, args.batch_size)
    config = {"images": images, "baseline_images": baseline_images, "decoded_mb": images * CHANNELS * RESOLUTION ** 2 / 1e6,
              **{k: getattr(args, k) for k in ("cache_max_gb", "oversize", "steps", "warmup", "batch_size", "workers")}}
    folders = {"baseline": args.data_dir / f"rgb32-{baseline_images}"}
    folders["memory"] = folders["streamed"] = args.data_dir / (f"quick-{images}" if args.quick else f"rgb32-{images}")
    for folder, n in ((folders["baseline"], baseline_images), (folders["memory"], images)):
        make_folder(folder, n)
    cached = {} if args.quick or not RESULTS.exists() else json.loads(RESULTS.read_text())
    modes = cached.get("modes", {}) if cached.get("config") == config and not args.fresh else {}
    for mode in MODES:
        if mode not in modes:
            modes[mode] = run_mode(mode, folders[mode], args)
            if not args.quick:  # each mode kept as soon as it is measured (a stopped run resumes)
                RESULTS.write_text(json.dumps({"config": config, "modes": modes}, indent=2))
    result = {"date": today(), "machine": machine(), "argv": sys.argv, "config": config, "modes": modes,
              "verdicts": verdicts(modes, config["decoded_mb"])}
    if not args.quick:
        RESULTS.write_text(json.dumps(result, indent=2))
    print(table(result))
    if args.write_benchmarks and not args.quick:
        write_section("streaming", table(result))


if __name__ == "__main__":
    main()
