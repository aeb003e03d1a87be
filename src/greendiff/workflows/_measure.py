"""Measuring any command: run it with its process tree metered, in one ledger run closed whatever happens.

Example:
    >>> from greendiff.workflows import MeasureJob, MeasurementOptions, run_measure
    >>> outcome = run_measure(MeasureJob(["python", "-c", "pass"], measurement=MeasurementOptions(no_gpu=True)))  # doctest: +SKIP
    >>> outcome.exit_code, outcome.summary.status  # doctest: +SKIP
    (0, 'completed')
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from greendiff.errors import UserInputError
from greendiff.tracking import CommandError, RunSummary, check_command, run_command
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress, check_progress


@dataclass(frozen=True)
class MeasureJob:
    """A command to run and measure.

    Args:
        command: the program and its arguments (not a shell line).
        name: the ledger run's name (None: the program's name).
        sample_interval_s: seconds between ledger samples.
        measurement: where and how the command is measured, and its ledger.
    """

    command: Sequence[str]
    name: str | None = None
    sample_interval_s: float = 5.0
    measurement: MeasurementOptions = field(default_factory=MeasurementOptions)


@dataclass(frozen=True)
class MeasureOutcome:
    """How the command ended (``status``: completed, failed, interrupted) and its ``exit_code`` as a shell gives
    it (128 + N for signal N); the ledger run and its ``summary`` (None when it could not be priced: a note
    said why, and ``greendiff runs show`` prices it from its samples)."""

    exit_code: int
    status: str
    run_id: int
    summary: RunSummary | None


def run_measure(job: MeasureJob, progress: Progress | None = None) -> MeasureOutcome:
    """Run ``job.command`` under a tracker; a command that cannot start raises
    :class:`~greendiff.tracking.CommandError` (its ``exit_code`` 126/127) before any ledger run opens, and one
    whose exec fails closes its run ``failed`` first."""
    progress = check_progress(progress) if progress is not None else NullProgress()
    command = list(job.command)
    if not command:
        raise UserInputError("no command to measure: use 'greendiff measure [OPTIONS] -- COMMAND [ARGS...]'")
    check_command(command)  # before anything is recorded: a command that cannot start opens no row
    settings = resolve_settings(job.measurement)
    tracker = settings.tracker(job.name or os.path.basename(command[0]) or command[0], "measure", shlex.join(command),
                               sample_interval_s=job.sample_interval_s)
    tracker.start()
    try:
        with tracker.window("command"):
            result = run_command(command, lambda: tracker.sample(force=True), job.sample_interval_s)
    except CommandError as exc:  # exec itself failed (e.g. an unknown binary format): close the row as failed
        _close(tracker, "failed", exc.exit_code, progress)
        raise
    except BaseException as exc:  # Ctrl-C before the handlers were in place, or a bug: the row is still closed
        _close(tracker, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", None, progress)
        raise
    summary = _close(tracker, result.status, result.exit_code, progress)
    return MeasureOutcome(result.exit_code, result.status, tracker.run_id, summary)


def _close(tracker, status: str, exit_code: int | None, progress: Progress) -> RunSummary | None:
    """Stop the tracker (closing the ledger row); a failure to summarise is a warning, never the exit code."""
    try:
        return tracker.stop(status, exit_code)
    except (Exception, KeyboardInterrupt) as exc:  # a Ctrl-C here must not hide the command's exit code
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        progress.note(f"could not summarise ledger run {tracker.run_id} ({why}); "
                      "'greendiff runs show' prices it from its samples", "warning")
        return None
