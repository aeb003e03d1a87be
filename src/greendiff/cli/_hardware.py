"""``greendiff hardware``: parse, call :func:`greendiff.workflows.run_hardware`, render its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from greendiff.cli._options import (
    COUNT0, HARDWARE_STEPS, SLOWDOWN, number_option, parse_sets, renamed, with_default, with_measurement,
)
from greendiff.cli._plan import warmup_line
from greendiff.cli._progress import RichProgress
from greendiff.display import fixed_point
from greendiff.plan import WARMUP_COST
from greendiff.units import kwh_to_joules
from greendiff.workflows import HardwareJob, HardwareOutcome, MeasurementOptions, job_default, run_hardware

Opt = typer.Option


@with_measurement
def hardware_command(
    config_file: Annotated[Optional[Path], Opt("--config", metavar="FILE", help="Training config (TOML) to measure (default: the green recipe's default job).")] = None,
    sets: Annotated[list[str], Opt("--set", metavar="KEY=VAL", help="Any config key, e.g. --set data.resolution=32 (repeatable).")] = [],
    devices: Annotated[Optional[str], Opt("--devices", metavar="DEVICES", help="Comma-separated: cpu, cuda:0, ... (default: all here).")] = None,
    train_steps: Annotated[Optional[int], number_option("--train-steps", bounds=HARDWARE_STEPS, help=with_default("Measured training steps per device and power limit.", job_default(HardwareJob, "steps")))] = None,
    steps: Annotated[Optional[int], number_option("--steps", bounds=HARDWARE_STEPS, hidden=True, help="Old name of --train-steps.")] = None,
    unmetered_steps: Annotated[Optional[int], number_option("--unmetered-steps", bounds=COUNT0, help=with_default(f"Unmeasured steps first: warm-up ({WARMUP_COST}).", job_default(HardwareJob, "warmup")))] = None,
    warmup: Annotated[Optional[int], number_option("--warmup", bounds=COUNT0, hidden=True, help="Old name of --unmetered-steps.")] = None,
    limits: Annotated[Optional[str], Opt("--limits", metavar="WATTS", help="GPU power limits to sweep in W (e.g. 700,600,500,400,300), auto (max to min in 100 W steps) or none.")] = job_default(HardwareJob, "limits"),
    max_slowdown: Annotated[float, number_option("--max-slowdown", bounds=SLOWDOWN, help="Allowed slowdown for the chosen power limit (0.1 = 10 %).")] = job_default(HardwareJob, "max_slowdown"),
    measurement: MeasurementOptions = MeasurementOptions(),
    output: Annotated[Optional[Path], Opt("--output", "-o", metavar="FILE", help="Also write the results as JSON here (a file there is replaced).")] = None,
    as_json: Annotated[bool, Opt("--json", metavar="", help="Print JSON for scripts.")] = False,
) -> None:
    """Energy and time per training sample on each device (CPU, each CUDA GPU); a power-limit sweep on NVIDIA
    GPUs where permitted, with the limit that saves most energy within --max-slowdown; estimates for other GPUs."""
    err = Console(stderr=True)
    outcome = run_hardware(HardwareJob(config_file=config_file, overrides=parse_sets(sets), devices=devices,
                                       steps=renamed(("--train-steps", train_steps), ("--steps", steps), job_default(HardwareJob, "steps")),
                                       warmup=renamed(("--unmetered-steps", unmetered_steps), ("--warmup", warmup),
                                                      job_default(HardwareJob, "warmup")),
                                       limits=limits, max_slowdown=max_slowdown, output=output,
                                       measurement=measurement), RichProgress(err))
    if output is not None:
        err.print(f"wrote {output}" + (" (replaced the file that was there)" if outcome.replaced else ""), highlight=False)
    if as_json:
        typer.echo(json.dumps(outcome.to_dict(), indent=2))
        return
    render_hardware(outcome, Console())


#: Below this width the measured table leaves out the method column and lists each device's method under it.
WIDE_HARDWARE = 120


def render_hardware(outcome: HardwareOutcome, console: Console) -> None:
    """The measured table (nothing cut at 80 columns), what the figures include, each sweep's best limit, and
    the labelled estimates for other GPUs."""
    wide = console.width >= WIDE_HARDWARE
    table = Table(title=f"measured · {outcome.config} · batch {outcome.batch_size} · {outcome.resolution} px",
                  title_justify="left")
    for col in ("device", "name", "limit", "mJ/sample", "ms/sample", "W", *(["method"] if wide else [])):
        table.add_column(col, justify="right" if col in ("limit", "mJ/sample", "ms/sample", "W") else "left",
                         no_wrap=col != "name" and col != "method", overflow="fold")
    rows = [c for s in outcome.sweeps for c in s.sweep.costs]
    swept = {s.sweep.device for s in outcome.sweeps}
    rows += [d for d in outcome.devices if d.device not in swept]
    for c in rows:
        table.add_row(c.device, c.name, "" if c.limit_w is None else f"{c.limit_w:.0f} W",
                      fixed_point(kwh_to_joules(c.energy_per_sample_kwh) * 1e3), fixed_point(c.s_per_sample * 1e3),
                      fixed_point(c.power_w),
                      *([c.method] if wide else []))
    console.print(table)
    if not wide:
        for device, method in dict.fromkeys((c.device, c.method) for c in rows):
            console.print(f"{device} method: {method}", style="dim", highlight=False)
    console.print(warmup_line(outcome.unmetered_steps, outcome.train_steps, "sample"), highlight=False)
    for s in outcome.sweeps:
        sweep = s.sweep
        console.print(f"{sweep.device} ({sweep.name}): best limit within {outcome.max_slowdown:.0%} slowdown: "
                      f"{s.best.limit_w or sweep.default_w:.0f} W, {s.saving_frac:.1%} less energy per sample than at "
                      f"{s.top.limit_w or sweep.default_w:.0f} W" if sweep.permitted else
                      f"{sweep.device} ({sweep.name}): {sweep.note}", highlight=False)
    est = Table(title="estimated (not measured) · least energy first", title_justify="left")
    for col in ("GPU", "µJ/sample", "µs/sample"):
        est.add_column(col, justify="left" if col == "GPU" else "right")
    for e in outcome.estimates[:10]:
        est.add_row(e.name, fixed_point(kwh_to_joules(e.energy_per_sample_kwh) * 1e6), fixed_point(e.s_per_sample * 1e6))
    console.print(est)
    if outcome.estimates:
        console.print(outcome.estimates[0].method.split("; ", 1)[-1], style="dim", highlight=False)
    for note in outcome.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
