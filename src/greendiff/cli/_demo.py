"""``greendiff demo``: parse, call :func:`greendiff.workflows.run_demo`, render what the workload cost, and where."""

from __future__ import annotations

from typing import Annotated

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from greendiff.cli._options import DEMO_SECONDS, number_option, with_measurement
from greendiff.cli._render import fmt_mass, render_summary
from greendiff.workflows import DemoJob, MeasurementOptions, run_demo


class _WorkloadBar:
    """The demo's :class:`~greendiff.workflows.Progress`: a transient bar counting workload steps."""

    def __init__(self, console: Console) -> None:
        self._bar = Progress(TextColumn("workload"), BarColumn(), TextColumn("{task.completed:.0f} steps"),
                             TimeRemainingColumn(), console=console, transient=True)
        self._task = None

    def on_start(self, label: str, total: int) -> None:
        self._task = self._bar.add_task("steps", total=total or None)
        self._bar.start()

    def on_log(self, event) -> None:
        self._bar.update(self._task, completed=event.step)

    def on_end(self) -> None:
        self._bar.stop()

    def note(self, text: str, style: str | None = None) -> None:
        self._bar.console.print(text, highlight=False)


@with_measurement
def demo(
    seconds: Annotated[float, number_option("--seconds", bounds=DEMO_SECONDS, help="How long to run the workload.")] = 5.0,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Measure a short CPU workload (torch matmuls) and print its energy and CO2e."""
    console = Console()
    outcome = run_demo(DemoJob(seconds, measurement), _WorkloadBar(console))
    render_summary(outcome.summary, console)
    compare = Table(title="the same energy elsewhere (PUE 1.0)", title_justify="left")
    compare.add_column("location")
    compare.add_column("gCO2e/kWh", justify="right")
    compare.add_column("CO2e", justify="right")
    for row in outcome.comparison:
        compare.add_row(row.label, f"{row.intensity_g_per_kwh:.0f}", fmt_mass(row.emissions_kg))
    console.print(compare)
    console.print(f"recorded as run {outcome.run_id} in {outcome.ledger_path}; "
                  f"see 'greendiff runs show {outcome.run_id}'", highlight=False)
