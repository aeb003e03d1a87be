"""Two greendiff trainings at once on this machine: do they share the cores, or spin against each other?

One `greendiff train --preset nano` alone, then two started together, each with the cores shared
(the default: ``greendiff.parallel.CoreShare`` gives each process its share) and, for comparison,
with ``GREENDIFF_THREADS=all`` (each process keeps PyTorch's default of every core, the behaviour
before CoreShare). Throughput is the median ``samples_per_s`` of the middle half of each run's log
records, so it is measured while both runs train. Each measured run is cached in
``bench/results/concurrency.json``; a rerun resumes where it stopped (``--fresh`` starts over).

Run it alone: any other process on the machine makes its figures worthless.

    python bench/concurrency.py [--steps 600] [--steps-all 60] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.train._precision import cpu_has_native_bf16  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "concurrency.json"
BATCH = 64  # the green recipe's default batch


def command(steps: int, out: Path, name: str) -> list[str]:
    return [EXE, "train", "--preset", "nano", "--max-steps", str(steps), "--no-gpu", "--country", "FRA",
            "--set", f"run.sample_every={steps + 1}", "--set", f"run.checkpoint_every={steps + 1}",
            "--set", "run.log_every=10", "--output-dir", str(out), "--name", name]


def throughput(run_root: Path, steps: int) -> tuple[float, float]:
    """(images/s over all the time in training steps, median images/s over the middle half of the log records)."""
    (run_dir,) = run_root.iterdir()
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in logs if "samples_per_s" in r]
    middle = rates[len(rates) // 4: max(len(rates) * 3 // 4, len(rates) // 4 + 1)]
    summary = json.loads((run_dir / "emissions.json").read_text())
    train_s = next(p["duration_s"] for p in summary["phases"] if p["name"] == "train")
    return steps * BATCH / train_s, statistics.median(middle)


def measure(mode: str, processes: int, steps: int, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GREENDIFF_THREADS")}
    env["GREENDIFF_LEDGER"] = str(tmp / f"{mode}-{processes}.sqlite")
    if mode == "all":
        env["GREENDIFF_THREADS"] = "all"
    roots = [tmp / f"{mode}-{processes}-{k}" for k in range(processes)]
    began = time.perf_counter()
    procs = [subprocess.Popen(command(steps, root, f"p{k}"), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k, root in enumerate(roots)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a training failed:\n{err[-3000:]}")
    rates = [throughput(root, steps) for root in roots]
    return {"mode": mode, "processes": processes, "steps": steps, "images_per_s": [r[0] for r in rates],
            "total": sum(r[0] for r in rates), "median_log_images_per_s": [r[1] for r in rates],
            "wall_s": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="Steps per run with the cores shared.")
    parser.add_argument("--steps-all", type=int, default=60, help="Steps per run with every process on all cores.")
    parser.add_argument("--fresh", action="store_true", help="Ignore cached results.")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    cache = {} if args.fresh or not CACHE.exists() else json.loads(CACHE.read_text())
    # one run alone takes as many steps either way (the two "alone" figures must compare); two runs each on every
    # core crawl, so they take fewer
    plan = [("shared", 1, args.steps), ("all", 1, args.steps), ("shared", 2, args.steps), ("all", 2, args.steps_all)]
    with tempfile.TemporaryDirectory() as tmp:
        for mode, processes, steps in plan:
            key = f"{mode}-{processes}-{steps}"
            if key not in cache:
                cache[key] = measure(mode, processes, steps, Path(tmp))
                cache[key]["machine"], cache[key]["date"] = machine(), today()
                CACHE.parent.mkdir(exist_ok=True)
                CACHE.write_text(json.dumps(cache, indent=2))
            print(json.dumps(cache[key]), flush=True)
    rows = {(m, p): cache[f"{m}-{p}-{s}"] for m, p, s in plan}
    lines = ["## Two runs at once on one machine (`bench/concurrency.py`)", "",
             f"`python bench/concurrency.py --steps {args.steps} --steps-all {args.steps_all} --write-benchmarks` · "
             f"{rows['shared', 2]['date']} · {rows['shared', 2]['machine']} · CPU bf16: "
             f"{'native (AVX512-BF16/AMX)' if cpu_has_native_bf16() else 'none (no AVX512-BF16/AMX; fp32 runs)'}", "",
             "`greendiff train --preset nano` (MNIST 16×16, batch 64, no sampling or checkpoints), alone and two "
             "started together. images/s: the run's images over the time in its training steps (the ledger's "
             "`train` phase); in brackets, the median over the middle half of its log records. Wall: start to end "
             "of the slower run, start-up included. *shared*: the default, each process takes its share of the "
             "cores (`CoreShare`); *all cores each*: `GREENDIFF_THREADS=all`, every process on every core, as "
             "before.", "",
             "| threads | steps (alone / two) | one run alone | two at once: each | two at once: together | together / alone | "
             "wall, one / two |", "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, label in (("shared", "shared (default)"), ("all", "all cores each")):
        one, two = rows[mode, 1], rows[mode, 2]
        each = " and ".join(f"{r:.0f} ({m:.0f})" for r, m in zip(two["images_per_s"], two["median_log_images_per_s"]))
        lines.append(f"| {label} | {one['steps']} / {two['steps']} | {one['total']:.0f} ({one['median_log_images_per_s'][0]:.0f}) | "
                     f"{each} | {two['total']:.0f} | {two['total'] / one['total']:.0%} | "
                     f"{one['wall_s']:.0f} s / {two['wall_s']:.0f} s |")
    ratio = rows["shared", 2]["total"] / rows["shared", 1]["total"]
    lines += ["", f"Target: two runs together reach at least 80 % of one run's throughput: "
              f"{'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.0%})."]
    print("\n".join(lines))
    if args.write_benchmarks:
        write_section("concurrency", "\n".join(lines))


if __name__ == "__main__":
    main()
