"""``greendiff hardware``: parse, call :func:`greendiff.workflows.run_hardware`, render its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from greendiff.cli._options import COUNT0, HARDWARE_STEPS, SLOWDOWN, CpuWatts, number_option, parse_sets
from greendiff.cli._progress import RichProgress
from greendiff.workflows import HardwareJob, run_hardware

Opt = typer.Option


def hardware_command(
    config_file: Annotated[Optional[Path], Opt("--config", help="Training config (TOML) to measure.")] = None,
    sets: Annotated[list[str], Opt("--set", help="Any config key, e.g. --set data.resolution=32 (repeatable).")] = [],
    devices: Annotated[Optional[str], Opt("--devices", help="Comma-separated: cpu, cuda:0, ... (default: all here).")] = None,
    steps: Annotated[int, number_option("--steps", bounds=HARDWARE_STEPS, help="Measured training steps per device and per power limit.")] = 20,
    warmup: Annotated[int, number_option("--warmup", bounds=COUNT0, help="Unmeasured steps first (allocator, kernel selection).")] = 5,
    limits: Annotated[Optional[str], Opt("--limits", help="GPU power limits to sweep in W (e.g. 700,600,500,400,300), auto (max to min in 100 W steps) or none.")] = "auto",
    max_slowdown: Annotated[float, number_option("--max-slowdown", bounds=SLOWDOWN, help="Allowed slowdown for the chosen power limit (0.1 = 10 %).")] = 0.1,
    cpu_watts: CpuWatts = None,
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Also write the results as JSON here.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Energy and time per training sample on each device (CPU, each CUDA GPU); a power-limit sweep on NVIDIA
    GPUs where permitted, with the limit that saves most energy within --max-slowdown; estimates for other GPUs."""
    report = run_hardware(HardwareJob(config_file=config_file, overrides=parse_sets(sets), devices=devices, steps=steps,
                                      warmup=warmup, limits=limits, max_slowdown=max_slowdown, cpu_watts=cpu_watts,
                                      output=output), RichProgress(Console(stderr=True)))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    render_hardware(report, max_slowdown, Console())


def render_hardware(report: dict, max_slowdown: float, console: Console) -> None:
    table = Table(title=f"measured · {report['config']} · batch {report['batch_size']} · {report['resolution']} px",
                  title_justify="left")
    for col in ("device", "name", "limit", "mJ/sample", "ms/sample", "W", "method"):
        table.add_column(col, justify="right" if col in ("limit", "mJ/sample", "ms/sample", "W") else "left")
    rows = [c for s in report["sweeps"] for c in s["costs"]] or []
    swept = {s["device"] for s in report["sweeps"]}
    rows += [d for d in report["devices"] if d["device"] not in swept]
    for c in rows:
        table.add_row(c["device"], c["name"], "" if c["limit_w"] is None else f"{c['limit_w']:.0f} W",
                      f"{c['energy_j_per_sample'] * 1e3:.3g}", f"{c['s_per_sample'] * 1e3:.3g}", f"{c['power_w']:.0f}",
                      c["method"])
    console.print(table)
    for s in report["sweeps"]:
        best = s["best"]
        top = max(s["costs"], key=lambda c: c["limit_w"] or 0)
        saving = 1 - best["energy_j_per_sample"] / top["energy_j_per_sample"] if top["energy_j_per_sample"] else 0.0
        console.print(f"{s['device']} ({s['name']}): best limit within {max_slowdown:.0%} slowdown: "
                      f"{best['limit_w'] or s['default_w']:.0f} W, {saving:.1%} less energy per sample than at "
                      f"{top['limit_w'] or s['default_w']:.0f} W" if s["permitted"] else
                      f"{s['device']} ({s['name']}): {s['note']}", highlight=False)
    est = Table(title="estimated (not measured) · least energy first", title_justify="left")
    for col in ("GPU", "µJ/sample", "µs/sample"):
        est.add_column(col, justify="left" if col == "GPU" else "right")
    for e in report["estimates"][:10]:
        est.add_row(e["name"], f"{e['energy_j_per_sample'] * 1e6:.3g}", f"{e['s_per_sample'] * 1e6:.3g}")
    console.print(est)
    if report["estimates"]:
        console.print(report["estimates"][0]["method"].split("; ", 1)[-1], style="dim", highlight=False)
    for note in report["notes"]:
        console.print(f"note: {note}", style="dim", highlight=False)
