"""What waiting for a cleaner grid saves: a 6 h job with 24 h and 72 h of flexibility, on the 9 bundled 2022 grids.

For every start day of 2022 whose window ends inside 2022 (the job is submitted at ``--start-hour``
UTC; with ``--every-hours K`` also at every K-th hour), ``greendiff.plan.plan_window`` computes the
start-now, best contiguous and best interruptible (no pause cost, and ``--pause-cost-frac`` of one
hour's energy per pause) schedules. Savings are averaged over the start days (mean of each day's
saving, and the saving of the summed emissions). Compare with Wiesner et al., "Let's Wait Awhile"
(Middleware 2021): 5-9 % for jobs deferrable to the next workday, on German, British, French and
Californian 2020 data.

    python bench/carbon_windows.py [--every-hours 4] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.carbon import BUNDLED_GRIDS, TraceProvider, bundled_trace  # noqa: E402
from greendiff.plan import Job, plan_window  # noqa: E402

HERE = Path(__file__).resolve().parent


def savings(grid: str, flex_h: int, job_h: float, starts: list[datetime], pause_frac: float) -> dict:
    provider = TraceProvider(bundled_trace(grid))
    rows = []
    for t0 in starts:
        segments = list(provider.intensity(t0, t0 + timedelta(hours=flex_h)).segments)
        plain = plan_window(segments, Job(job_h, job_h))  # 1 kW for job_h hours
        paused = plan_window(segments, Job(job_h, job_h, pause_cost_kwh=pause_frac)) if pause_frac else plain
        rows.append((plain.now.emissions_g, plain.contiguous.emissions_g, plain.interruptible.emissions_g,
                     paused.interruptible.emissions_g, plain.interruptible.pauses))
    now, cont, inter, inter_p, pauses = (list(c) for c in zip(*rows))

    def mean_saving(xs):
        return statistics.fmean(1 - x / n for x, n in zip(xs, now))

    return {"grid": grid, "flex_h": flex_h, "starts": len(starts), "mean_now_g_per_kwh": statistics.fmean(now) / job_h,
            "contiguous": mean_saving(cont), "interruptible": mean_saving(inter), "interruptible_pause_cost": mean_saving(inter_p),
            "contiguous_of_totals": 1 - sum(cont) / sum(now), "interruptible_of_totals": 1 - sum(inter) / sum(now),
            "mean_pauses": statistics.fmean(pauses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-hours", type=float, default=6.0)
    parser.add_argument("--flex", default="24,72", help="Comma-separated flexibilities in hours.")
    parser.add_argument("--start-hour", type=int, default=0, help="UTC hour of the daily submission.")
    parser.add_argument("--every-hours", type=int, default=0, help="Also submit every K hours (0: daily only).")
    parser.add_argument("--pause-cost-frac", type=float, default=0.05,
                        help="Pause cost as a fraction of one hour's job energy (0.05: a 3-minute checkpoint + restart).")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    flexes = [int(f) for f in args.flex.split(",")]
    year0, year1 = datetime(2022, 1, 1, tzinfo=timezone.utc), datetime(2023, 1, 1, tzinfo=timezone.utc)
    results, t_start = [], time.perf_counter()
    for flex in flexes:
        step = timedelta(hours=args.every_hours or 24)
        first = year0 + timedelta(hours=args.start_hour if not args.every_hours else 0)
        starts = [first + k * step for k in range(int((year1 - first) / step) + 1) if first + k * step + timedelta(hours=flex) <= year1]
        for grid in BUNDLED_GRIDS:
            results.append(savings(grid, flex, args.job_hours, starts, args.pause_cost_frac))
            r = results[-1]
            print(f"{grid:5s} {flex:3d} h: contiguous {r['contiguous']:6.1%}  interruptible {r['interruptible']:6.1%} "
                  f"(with pause cost {r['interruptible_pause_cost']:6.1%})  over {r['starts']} starts", flush=True)
    elapsed = time.perf_counter() - t_start
    tag = f"every{args.every_hours}h" if args.every_hours else f"daily{args.start_hour:02d}utc"
    out = HERE / "results" / f"carbon-windows-{tag}.json"
    out.write_text(json.dumps({"args": vars(args), "elapsed_s": elapsed, "results": results}, indent=2))
    print(f"{elapsed:.0f} s; wrote {out.relative_to(HERE.parent)}")
    if args.write_benchmarks:
        write_section(f"carbon-windows-{tag}", report(results, args, elapsed, flexes, tag))


def report(results: list[dict], args, elapsed: float, flexes: list[int], tag: str) -> str:
    when = (f"submitted every {args.every_hours} h of 2022" if args.every_hours
            else f"submitted at {args.start_hour:02d}:00 UTC on every day of 2022")
    lines = [f"## Carbon-aware scheduling: a {args.job_hours:g} h job, {when} ({tag})", "",
             f"`python bench/carbon_windows.py{' --every-hours ' + str(args.every_hours) if args.every_hours else ''}"
             f"{' --start-hour ' + str(args.start_hour) if args.start_hour else ''} --write-benchmarks` · {today()} · "
             f"{machine()} · {elapsed:.0f} s", "",
             "Bundled EIA-930 2022 hourly average intensity. Saving = 1 − emissions / start-now emissions, the mean "
             f"over the {'start times' if args.every_hours else 'start days'} whose window ends in 2022. Interruptible: best set of hours with no pause cost, and with "
             f"a pause cost of {args.pause_cost_frac:g} × one hour's job energy, charged at the resume hour.", ""]
    for flex in flexes:
        lines += [f"**{flex} h flexibility** (deadline = start + {flex} h)", "",
                  "| grid | mean start-now intensity (g/kWh) | best contiguous | best interruptible | interruptible, pause cost | mean pauses |",
                  "|---|---:|---:|---:|---:|---:|"]
        rows = [r for r in results if r["flex_h"] == flex]
        for r in rows:
            lines.append(f"| {r['grid']} | {r['mean_now_g_per_kwh']:.0f} | {r['contiguous']:.1%} | {r['interruptible']:.1%} | "
                         f"{r['interruptible_pause_cost']:.1%} | {r['mean_pauses']:.1f} |")
        lines.append(f"| **mean of 9** | | **{statistics.fmean(r['contiguous'] for r in rows):.1%}** | "
                     f"**{statistics.fmean(r['interruptible'] for r in rows):.1%}** | "
                     f"{statistics.fmean(r['interruptible_pause_cost'] for r in rows):.1%} | |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
