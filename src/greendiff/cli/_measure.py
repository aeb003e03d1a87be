"""``greendiff measure -- CMD ...``: run any command and record its energy and CO2e."""

from __future__ import annotations

import json
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

from greendiff.cli._options import (
    SAMPLE_INTERVAL, name_option, number_option,
    with_measurement,
)
from greendiff.cli._render import render_summary
from greendiff.tracking import CommandError
from greendiff.workflows import MeasureJob, MeasurementOptions, NullProgress, run_measure


@with_measurement
def measure(
    command: Annotated[Optional[list[str]], typer.Argument(help="The command to run, after --.", show_default=False)] = None,
    name: Annotated[Optional[str], name_option("--name", path=False, help="Run name (default: the program name).")] = None,
    measurement: MeasurementOptions = MeasurementOptions(),
    sample_interval_s: Annotated[float, number_option("--sample-interval", bounds=SAMPLE_INTERVAL, help="Seconds between ledger samples.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a command, measure its process tree's energy, record it in the ledger.

    Exits with the command's exit code (128 + N if signal N ended it), like a shell; 126/127 if it
    cannot be started. The ledger row is always closed, and a problem pricing it is a warning.
    """
    try:
        outcome = run_measure(MeasureJob(command or [], name, sample_interval_s, measurement), _Warnings())
    except CommandError as exc:
        _fail(exc)
    if outcome.summary is not None:
        if as_json:
            typer.echo(json.dumps(outcome.summary.to_dict(), indent=2))
        else:
            render_summary(outcome.summary, Console(stderr=True))
    raise typer.Exit(outcome.exit_code)


class _Warnings(NullProgress):
    """The workflow's notes (a run it could not price) as ``greendiff: warning:`` lines on stderr."""

    def note(self, text: str, style: str | None = None) -> None:
        typer.echo(f"greendiff: warning: {text}", err=True)


def _fail(exc: CommandError) -> NoReturn:
    typer.echo(f"greendiff: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)
