"""``greendiff measure -- CMD ...``: run any command and record its energy and CO2e."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

from greendiff.cli._options import SAMPLE_INTERVAL, check_output, name_option, number_option, with_measurement
from greendiff.cli._render import render_summary
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import display_path
from greendiff.tracking import CommandError, RunSummary, public_json
from greendiff.workflows import MeasureJob, MeasurementOptions, NullProgress, run_measure

STDOUT = "-"  #: ``--json -``: the summary on stdout, the command's own stdout moved to stderr


@with_measurement
def measure(
    command: Annotated[Optional[list[str]], typer.Argument(metavar="COMMAND", help="The command to run, after --.", show_default=False)] = None,
    name: Annotated[Optional[str], name_option("--name", path=False, help="Run name (default: the program name).")] = None,
    measurement: MeasurementOptions = MeasurementOptions(),
    sample_interval_s: Annotated[float, number_option("--sample-interval", bounds=SAMPLE_INTERVAL, help="Seconds between ledger samples.")] = 5.0,
    json_to: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the summary as JSON to FILE (.json); - : to stdout, the command's own stdout then to stderr.")] = None,
) -> None:
    """Run a command, measure its process tree's energy, record it in the ledger.

    Exits with the command's exit code (128 + N if signal N ended it), like a shell; 126/127 if it
    cannot be started. The ledger row is always closed, and a problem pricing it is a warning.
    """
    target = json_target(json_to)
    job = MeasureJob(command or [], name, sample_interval_s, measurement)
    try:
        with _stdout_to_stderr() if target == STDOUT else contextlib.nullcontext():
            outcome = run_measure(job, _Warnings())
    except CommandError as exc:
        _fail(exc)
    if outcome.summary is not None:
        if target == STDOUT:
            typer.echo(public_json(outcome.summary))
        else:
            console = Console(stderr=True)
            render_summary(outcome.summary, console)
            if target is not None:
                _write_json(outcome.summary, target, outcome.run_id, console)
    raise typer.Exit(outcome.exit_code)


def json_target(value: str | None) -> Path | str | None:
    """Where ``--json`` sends the summary: None (nowhere), :data:`STDOUT`, or a file checked now, before the
    command runs (one-line error). ``--json -- CMD`` (the old switch: the parser took ``--`` as its value)
    means stdout. FILE must end in .json, so that ``--json python train.py`` (a command without ``--``) is
    refused rather than overwriting a file named ``python``."""
    if value is None:
        return None
    if value in (STDOUT, "--"):
        return STDOUT
    path = Path(value)
    if value.startswith("-") or path.suffix.lower() != ".json":  # not the command's first word, read as FILE
        raise UserInputError(f"--json takes a FILE ending in .json (or - for stdout), got {value!r}: "
                             "greendiff measure --json out.json -- COMMAND")
    check_output(path, flag="--json")
    return path


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While the command runs, file descriptor 1 (which it inherits) is stderr, so that stdout carries the
    JSON summary alone (``greendiff measure --json - -- CMD > out.json``); the command's output stays on
    the terminal."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _write_json(summary: RunSummary, path: Path, run_id: int, console: Console) -> None:
    """The summary (:func:`greendiff.tracking.public_json`, as ``runs show --json`` prints it) written whole to
    ``path`` (a line says where); a failure to write is a warning: the run is in the ledger."""
    try:
        atomic_write_text(path, public_json(summary) + "\n")
    except OSError as exc:
        typer.echo(f"greendiff: warning: could not write --json {display_path(path)} ({exc.strerror}); it is "
                   f"ledger run {run_id}", err=True)
        return
    console.print(f"JSON summary → {display_path(path)}", highlight=False, markup=False)


class _Warnings(NullProgress):
    """The workflow's notes (a run it could not price) as ``greendiff: warning:`` lines on stderr."""

    def note(self, text: str, style: str | None = None) -> None:
        typer.echo(f"greendiff: warning: {text}", err=True)


def _fail(exc: CommandError) -> NoReturn:
    typer.echo(f"greendiff: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)
