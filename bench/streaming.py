"""Streaming from disk vs in memory: training throughput and peak memory on a folder ~4x its budget.

Generates an image folder of 32x32 RGB PNGs whose decoded size is ``--oversize`` times ``--cache-max-gb``,
then, in a fresh child process per mode, trains the ``tiny`` UNet (``build_unet``, ``diffusion_loss``,
``make_noise_scheduler``, AdamW) on it:

- ``memory``: every image decoded into one tensor first (no budget);
- ``streamed``: ``cache_max_gb`` below the decoded size, so loader workers decode each step's batch.

Each child reports images/s over ``--steps`` timed steps (after ``--warmup``), its load time, its own peak
RSS, its loader workers' peak RSS and its RSS before any data (torch, the model, one training step on zeros:
activations and AdamW's state). Verdicts: streamed
throughput within 10 % of in-memory, and the streamed child's peak RSS above that baseline below the
decoded dataset size (memory stays bounded). Results are cached per mode in
``bench/results/streaming.json`` (a rerun skips finished modes; ``--fresh`` redoes them).

    python bench/streaming.py [--cache-max-gb 0.05] [--oversize 4] [--steps 150] [--workers 2] [--write-benchmarks]
    python bench/streaming.py --quick   # a smoke test of a few seconds (tiny sizes, nothing cached)
"""

from __future__ import annotations

import argparse
import json
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
MODES = ("memory", "streamed")


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
    """One mode, in this (fresh) process: load, warm up, time ``args.steps`` steps; memory as it went."""
    import torch

    from greendiff.data import load_dataset
    from greendiff.train import build_unet, diffusion_loss, make_noise_scheduler, resolve_config

    config = resolve_config(overrides={"model.preset": "tiny", "data.resolution": RESOLUTION})
    torch.manual_seed(0)
    unet = build_unet(config.model, RESOLUTION, CHANNELS, config.optim.num_train_timesteps)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    scheduler = make_noise_scheduler(config.optim)

    def train_step(x0: torch.Tensor, step: int) -> None:
        loss = diffusion_loss(unet, scheduler, x0, torch.Generator().manual_seed(step), config.optim)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # the baseline holds what training needs without data (activations, AdamW's state): one step on zeros first
    train_step(torch.zeros(args.batch_size, CHANNELS, RESOLUTION, RESOLUTION), -1)
    baseline_kb = _rss_kb()
    t0 = time.perf_counter()
    budget = None if args.child == "memory" else args.cache_max_gb
    data = load_dataset(str(args.folder), RESOLUTION, cache_max_gb=budget, workers=args.workers)
    load_s = time.perf_counter() - t0
    batches = data.batches(0, args.batch_size, seed=0)
    for step, batch in zip(range(args.warmup + args.steps), batches):
        if step == args.warmup:
            t0 = time.perf_counter()
        train_step(batch.images.float() / 127.5 - 1.0, step)
    train_s = time.perf_counter() - t0
    batches.close()  # the loader's workers exit and are waited for: their peak RSS is now counted
    return {"mode": args.child, "placement": data.placement, "load_s": load_s, "train_s": train_s,
            "images_per_s": args.steps * args.batch_size / train_s, "baseline_rss_mb": baseline_kb / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_mode(mode: str, folder: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--cache-max-gb", str(args.cache_max_gb),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def verdicts(results: dict, decoded_mb: float) -> dict:
    mem, streamed = results["memory"], results["streamed"]
    ratio = streamed["images_per_s"] / mem["images_per_s"]
    above = max(streamed["peak_rss_mb"] - streamed["baseline_rss_mb"], 0)
    # a worker is forked from the trainer: its RSS starts at the trainer's (shared pages) and what it adds is its own
    workers_above = max(streamed["workers_peak_rss_mb"] - streamed["baseline_rss_mb"], 0)
    return {"throughput_ratio": ratio, "throughput_met": ratio >= 0.9, "streamed_rss_above_baseline_mb": above,
            "workers_rss_above_baseline_mb": workers_above, "rss_bounded": max(above, workers_above) < decoded_mb}


def table(result: dict) -> str:
    cfg, v = result["config"], result["verdicts"]
    lines = ["## Streaming from disk vs in memory (`bench/streaming.py`)", "",
             f"- Command: `python {' '.join(result['argv'])}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
             f"- {cfg['images']:,} RGB PNGs at {RESOLUTION}x{RESOLUTION}: {cfg['decoded_mb']:.0f} MB decoded, "
             f"{cfg['oversize']:g}x `cache_max_gb` {cfg['cache_max_gb']:g}; `tiny` UNet, batch {cfg['batch_size']}, fp32, "
             f"{cfg['steps']} timed steps after {cfg['warmup']}; streamed with {cfg['workers']} loader workers.", "",
             "| mode | load | images/s | peak RSS | RSS before data | workers' peak RSS |", "|---|---:|---:|---:|---:|---:|"]
    for mode in MODES:
        r = result["modes"][mode]
        lines.append(f"| {mode} | {r['load_s']:.1f} s | {r['images_per_s']:.0f} | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['baseline_rss_mb']:.0f} MB | {r['workers_peak_rss_mb']:.0f} MB |")
    lines += ["", f"Streamed throughput is **{v['throughput_ratio']:.0%}** of in-memory (target: within 10 % → "
                  f"**{'met' if v['throughput_met'] else 'NOT met'}**); the streamed trainer's peak RSS rose "
                  f"{v['streamed_rss_above_baseline_mb']:.0f} MB above its baseline (a worker's at most "
                  f"{v['workers_rss_above_baseline_mb']:.0f} MB), against {cfg['decoded_mb']:.0f} MB "
                  f"decoded (bounded → **{'yes' if v['rss_bounded'] else 'NO'}**)."]
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
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.cache_max_gb, args.steps, args.warmup, args.batch_size, args.workers = 1e-4, 2, 1, 8, 1
    images = int(args.oversize * args.cache_max_gb * 1e9 / (CHANNELS * RESOLUTION * RESOLUTION))
    config = {"images": images, "decoded_mb": images * CHANNELS * RESOLUTION ** 2 / 1e6, **{k: getattr(args, k) for k in (
        "cache_max_gb", "oversize", "steps", "warmup", "batch_size", "workers")}}
    folder = args.data_dir / (f"quick-{images}" if args.quick else f"rgb32-{images}")
    make_folder(folder, images)
    cached = {} if args.quick or not RESULTS.exists() else json.loads(RESULTS.read_text())
    modes = cached.get("modes", {}) if cached.get("config") == config and not args.fresh else {}
    for mode in MODES:
        if mode not in modes:
            modes[mode] = run_mode(mode, folder, args)
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
