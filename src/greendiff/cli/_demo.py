"""``greendiff demo``: measure a short built-in CPU workload and show what it cost, and where."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from greendiff.carbon import Location, Pue, resolve_provider
from greendiff.cli._options import (
    DEMO_SECONDS, number_option,
    with_measurement,
)
from greendiff.cli._render import fmt_mass, render_summary
from greendiff.errors import UserInputError
from greendiff.workflows import MeasurementOptions, resolve_settings
from greendiff.tracking import summarize

#: Locations the demo prices the same energy at, to show how much the grid matters.
COMPARE = (("France (yearly)", Location(country="FRA")), ("Germany (yearly)", Location(country="DEU")),
           ("India (yearly)", Location(country="IND")), ("gcp:europe-north1 (2024)", Location(cloud="gcp:europe-north1")),
           ("California CISO (hourly 2022)", Location(grid="CISO")), ("world average", Location()))


def cpu_workload_step(size: int = 256) -> float:
    """One step of the built-in workload: a float32 matrix product chain on the CPU (torch)."""
    import torch

    a = torch.randn(size, size)
    for _ in range(8):
        a = torch.tanh(a @ a / size)
    return float(a.sum())


@with_measurement
def demo(
    seconds: Annotated[float, number_option("--seconds", bounds=DEMO_SECONDS, help="How long to run the workload.")] = 5.0,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Measure a short CPU workload (torch matmuls) and print its energy and CO2e."""
    if not 0 < seconds <= 3600:
        raise UserInputError(f"--seconds must be in (0, 3600], got {seconds}")
    settings = resolve_settings(measurement)
    console = Console()
    tracker = settings.tracker("demo-cpu-workload", "demo", f"greendiff demo --seconds {seconds:g}", sample_interval_s=1.0)
    with tracker:
        with Progress(TextColumn("workload"), BarColumn(), TextColumn("{task.completed:.0f} steps"),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task("steps", total=None)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                with tracker.window("step"):
                    cpu_workload_step()
                progress.advance(task)
    assert tracker.summary is not None and tracker.ledger is not None and tracker.run_id is not None
    render_summary(tracker.summary, console)
    compare = Table(title="the same energy elsewhere (PUE 1.0)", title_justify="left")
    compare.add_column("location")
    compare.add_column("gCO2e/kWh", justify="right")
    compare.add_column("CO2e", justify="right")
    record = tracker.ledger.get_run(tracker.run_id)
    samples, windows = tracker.ledger.samples(tracker.run_id), tracker.ledger.windows(tracker.run_id)
    for label, location in COMPARE:
        s = summarize(record, samples, windows, resolve_provider(location), Pue(1.0, "demo comparison"))
        compare.add_row(label, f"{s.intensity.mean_g_per_kwh:.0f}", fmt_mass(s.emissions_kg))
    console.print(compare)
    console.print(f"recorded as run {tracker.run_id} in {tracker.ledger.path}; "
                  f"see 'greendiff runs show {tracker.run_id}'", highlight=False)
