"""Tracker overhead: a CPU-bound loop of ~50 ms steps, bare vs greendiff vs CodeCarbon.

Modes, interleaved round by round so machine drift hits all of them:
  bare                the loop alone
  greendiff           Tracker started, a window around every step, stopped (ledger in a temp dir)
  codecarbon          OfflineEmissionsTracker started before the loop, stopped after
  codecarbon-tasks    the same, plus start_task/stop_task around every step (its per-step API)

Start-up + shut-down (paid once per run) and the loop are timed apart. The loop overhead of a
mode is the median over rounds of (loop time - bare loop time of the same round) / bare loop
time. Because greendiff's loop difference is below the machine's noise, its per-window cost is
also timed directly (200,000 begin/end pairs) and reported as a fraction of a step.

    python bench/tracker_overhead.py [--rounds 5] [--steps 100] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.carbon import Location  # noqa: E402
from greendiff.energy import EnergyMonitor, MonitorOptions  # noqa: E402
from greendiff.tracking import Tracker  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tracker_overhead.json"


def make_step(target_s: float = 0.05):
    """A pure-Python CPU-bound step calibrated to ~target_s on this machine."""
    def work(n: int) -> int:
        acc = 0
        for i in range(n):
            acc = (acc + i * i) % 1_000_003
        return acc

    n = 100_000
    for _ in range(3):  # refine: the first estimates are skewed by warm-up
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            work(n)
            timings.append(time.perf_counter() - t0)
        n = max(1000, int(n * target_s / statistics.median(timings)))
    return lambda: work(n)


def step_interleaved(step, pairs: int, tmp: Path) -> dict[str, float]:
    """Alternate steps with and without per-step tracking inside one run, so drift cancels.

    Returns the median over pairs of (tracked step - neighbouring bare step) / bare step, for
    greendiff windows and for CodeCarbon tasks (when installed).
    """
    def median_rel(tracked_step) -> float:
        diffs = []
        for i in range(pairs):
            order = (True, False) if i % 2 else (False, True)
            t = {}
            for tracked in order:
                c0 = time.process_time()
                tracked_step() if tracked else step()
                t[tracked] = time.process_time() - c0
            diffs.append((t[True] - t[False]) / t[False])
        return statistics.median(diffs)

    tracker = Tracker("bench", location=Location(country="FRA"), ledger=tmp / "l.sqlite").start()

    def gd_step():
        with tracker.window("step"):
            step()

    result = {"greendiff": median_rel(gd_step)}
    tracker.stop()
    try:
        cc = _codecarbon(tmp)
    except ImportError:
        return result
    cc.start()

    def cc_step():
        cc.start_task("step")
        step()
        cc.stop_task()

    result["codecarbon-tasks"] = median_rel(cc_step)
    cc.stop()
    return result


class Timer:
    """Splits a mode's time into start-up, the loop, and shut-down; wall and process CPU time.

    Process CPU time counts every thread of the process (a tracker's background threads too) and
    is far less disturbed by other tenants of a shared VM than wall time.
    """

    def __init__(self) -> None:
        self.marks = [(time.perf_counter(), time.process_time())]

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def parts(self) -> tuple[float, float, float, float]:
        """start+stop wall, loop wall, loop CPU, (unused) — see main()."""
        (w0, _), (w1, c1), (w2, c2), (w3, _) = self.marks
        return w1 - w0, w2 - w1, w3 - w2, c2 - c1


def run_bare(step, steps: int, _tmp: Path):
    timer = Timer()
    timer.mark()
    for _ in range(steps):
        step()
    timer.mark()
    timer.mark()
    return timer.parts()


def run_greendiff(step, steps: int, tmp: Path):
    timer = Timer()
    tracker = Tracker("bench", location=Location(country="FRA"), ledger=tmp / "ledger.sqlite",
                      monitor_options=MonitorOptions()).start()
    timer.mark()
    for _ in range(steps):
        with tracker.window("step"):
            step()
    timer.mark()
    tracker.stop()
    timer.mark()
    return timer.parts()


def _codecarbon(tmp: Path):
    from codecarbon import OfflineEmissionsTracker

    return OfflineEmissionsTracker(country_iso_code="FRA", log_level="error", save_to_file=False, output_dir=str(tmp))


def run_codecarbon(step, steps: int, tmp: Path):
    timer = Timer()
    tracker = _codecarbon(tmp)
    tracker.start()
    timer.mark()
    for _ in range(steps):
        step()
    timer.mark()
    tracker.stop()
    timer.mark()
    return timer.parts()


def run_codecarbon_tasks(step, steps: int, tmp: Path):
    timer = Timer()
    tracker = _codecarbon(tmp)
    tracker.start()
    timer.mark()
    for i in range(steps):
        tracker.start_task(f"step{i}")
        step()
        tracker.stop_task()
    timer.mark()
    tracker.stop()
    timer.mark()
    return timer.parts()


def window_cost_s(pairs: int = 200_000) -> float:
    monitor = EnergyMonitor.detect(MonitorOptions())
    t0 = time.perf_counter()
    for _ in range(pairs):
        monitor.begin_window("w")
        monitor.end_window("w")
    elapsed = time.perf_counter() - t0
    monitor.close()
    return elapsed / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=300, help="step pairs for the step-interleaved comparison")
    parser.add_argument("--no-codecarbon", action="store_true", help="skip CodeCarbon (not installed)")
    parser.add_argument("--write-benchmarks", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    logging.getLogger("codecarbon").setLevel(logging.ERROR)

    modes = {"bare": run_bare, "greendiff": run_greendiff}
    if not args.no_codecarbon:
        modes |= {"codecarbon": run_codecarbon, "codecarbon-tasks": run_codecarbon_tasks}
    step = make_step()
    step_s = statistics.median(run_bare(step, 1, Path())[1] for _ in range(10))
    parts: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        order = list(modes)[r % len(modes):] + list(modes)[:r % len(modes)]  # rotate who goes first
        for mode in order:
            with tempfile.TemporaryDirectory() as tmp:
                parts[mode].append(modes[mode](step, args.steps, Path(tmp)))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} loop {parts[m][-1][1]:.3f}s" for m in modes), flush=True)
    loop_s = {m: [p[1] for p in parts[m]] for m in modes}
    loop_cpu_s = {m: [p[3] for p in parts[m]] for m in modes}

    def paired(series: dict[str, list[float]]) -> dict[str, float]:
        return {m: statistics.median((t - b) / b for t, b in zip(series[m], series["bare"])) for m in modes if m != "bare"}

    overhead, overhead_wall = paired(loop_cpu_s), paired(loop_s)
    fixed_s = {m: statistics.median(p[0] + p[2] for p in parts[m]) for m in modes}
    per_window_s = window_cost_s()
    with tempfile.TemporaryDirectory() as tmp:
        interleaved = step_interleaved(step, args.pairs, Path(tmp))
    result = {
        "date": today(), "machine": machine(), "rounds": args.rounds, "steps": args.steps,
        "step_s": step_s, "loop_s": loop_s, "loop_cpu_s": loop_cpu_s, "loop_overhead_frac": overhead,
        "loop_overhead_wall_frac": overhead_wall, "start_stop_s": fixed_s,
        "greendiff_window_cost_s": per_window_s, "greendiff_window_overhead_frac": per_window_s / step_s,
        "pairs": args.pairs, "step_interleaved_overhead_frac": interleaved,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("loop_s", "loop_cpu_s")}, indent=2))
    if args.write_benchmarks:
        write_section("tracker_overhead", render(result, " ".join(["python", *sys.argv])))


def render(r: dict, command: str) -> str:
    o = r["loop_overhead_frac"]
    si = r["step_interleaved_overhead_frac"]
    gd_bound = max(si["greendiff"], r["greendiff_window_overhead_frac"])
    lines = [
        "## Tracker overhead (`bench/tracker_overhead.py`)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {r['machine']}",
        f"- Date: {r['date']}",
        f"- Loop: {r['steps']} CPU-bound steps of {r['step_s'] * 1e3:.1f} ms, {r['rounds']} interleaved rounds "
        "(the mode that goes first rotates).",
        "",
        "| mode | median loop CPU time (s) | loop overhead, CPU time | loop overhead, wall time | start + stop (s, once per run) |",
        "|---|---:|---:|---:|---:|",
        f"| bare | {statistics.median(r['loop_cpu_s']['bare']):.3f} | — | — | — |",
    ]
    for mode, frac in o.items():
        lines.append(f"| {mode} | {statistics.median(r['loop_cpu_s'][mode]):.3f} | {frac:+.2%} | "
                     f"{r['loop_overhead_wall_frac'][mode]:+.2%} | {r['start_stop_s'][mode]:.3f} |")
    lines += [
        "",
        f"greendiff's window (begin + end, every meter read) costs **{r['greendiff_window_cost_s'] * 1e6:.1f} µs**, "
        f"i.e. **{r['greendiff_window_overhead_frac']:.3%}** of a {r['step_s'] * 1e3:.0f} ms step.",
        "",
        "Step-interleaved (the precise comparison): one run alternates tracked and bare steps "
        f"({r['pairs']} pairs), so machine drift cancels; median of (tracked − bare) / bare per pair, CPU time:",
        "",
        "| per-step tracking | overhead per step |",
        "|---|---:|",
        *(f"| {m} | {v:+.3%} |" for m, v in si.items()),
        "",
        f"- Target greendiff ≤ 0.5 % over bare: step-interleaved {si['greendiff']:+.3%}, per-window cost "
        f"{r['greendiff_window_overhead_frac']:.3%} → **{'met' if gd_bound <= 0.005 else 'NOT met'}**.",
    ]
    if "codecarbon-tasks" in si:
        cc = si["codecarbon-tasks"]
        ratio = cc / gd_bound if gd_bound > 0 else float("inf")
        lines.append(f"- Target ≥ 10x less overhead than CodeCarbon, per-step tracking against per-step tracking "
                     f"(CodeCarbon `start_task`/`stop_task`): {cc:+.2%} / {gd_bound:.3%} = **{ratio:.0f}x** → "
                     f"**{'met' if ratio >= 10 else 'NOT met'}**.")
        lines.append(f"- CodeCarbon tracking the whole loop only (no per-step figures) costs {o['codecarbon']:+.2%} in the "
                     f"loop, within noise, but {r['start_stop_s']['codecarbon']:.2f} s to start and stop against "
                     f"greendiff's {r['start_stop_s']['greendiff']:.2f} s.")
    lines += [
        "",
        "Overheads are medians over rounds of (mode - bare of the same round) / bare; process CPU time counts "
        "every thread of the process, so a tracker's background threads are included. "
        "Reading: the whole-loop figures swing by ±10 % between rounds on this shared 2-core VM (they can be "
        "negative) and cannot resolve a 0.5 % target; the step-interleaved and per-window figures can. Start + stop "
        "is paid once per run (greendiff: ledger open, meter detection, table look-ups, final summary); CodeCarbon's "
        "first start in a process also detects hardware (~1.5 s here), which the median over rounds hides.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
