"""``greendiff measure -- CMD ...``: run any command and record its energy and CO2e."""

from __future__ import annotations

import json
import os
import shlex
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

from greendiff.cli._options import (
    SAMPLE_INTERVAL, name_option, number_option,
    with_measurement,
)
from greendiff.cli._render import render_summary
from greendiff.errors import UserInputError
from greendiff.workflows import MeasurementOptions, resolve_settings
from greendiff.tracking import CommandError, RunSummary, check_command, run_command


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
    if not command:
        raise UserInputError("no command to measure: use 'greendiff measure [OPTIONS] -- COMMAND [ARGS...]'")
    try:
        check_command(command)  # before anything is recorded: a command that cannot start opens no row
    except CommandError as exc:
        _fail(exc)
    settings = resolve_settings(measurement)
    tracker = settings.tracker(name or os.path.basename(command[0]) or command[0], "measure", shlex.join(command),
                               sample_interval_s=sample_interval_s)
    tracker.start()
    try:
        with tracker.window("command"):
            result = run_command(command, lambda: tracker.sample(force=True), sample_interval_s)
    except CommandError as exc:  # exec itself failed (e.g. an unknown binary format): close the row as failed
        _close(tracker, "failed", exc.exit_code)
        _fail(exc)
    except BaseException as exc:  # Ctrl-C before the handlers were in place, or a bug: the row is still closed
        _close(tracker, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", None)
        raise
    summary = _close(tracker, result.status, result.exit_code)
    if summary is not None:
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
        else:
            render_summary(summary, Console(stderr=True))
    raise typer.Exit(result.exit_code)


def _close(tracker, status: str, exit_code: int | None) -> RunSummary | None:
    """Stop the tracker (closing the ledger row); a failure to summarise is a warning, never the exit code."""
    try:
        return tracker.stop(status, exit_code)
    except (Exception, KeyboardInterrupt) as exc:  # a Ctrl-C here must not hide the command's exit code
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        typer.echo(f"greendiff: warning: could not summarise ledger run {tracker.run_id} ({why}); "
                   "'greendiff runs show' prices it from its samples", err=True)
        return None


def _fail(exc: CommandError) -> NoReturn:
    typer.echo(f"greendiff: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)
