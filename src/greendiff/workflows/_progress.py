"""How a workflow reports while it runs: a :class:`Progress` the caller passes in (the CLI's draws rich
bars; the default, :class:`NullProgress`, shows nothing). Workflows never print."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Union

if TYPE_CHECKING:
    from greendiff.train import LogEvent, StartEvent


@dataclass(frozen=True)
class SegmentStart:
    """A training segment starts: the trainer's :class:`~greendiff.train.StartEvent` (model size, precision,
    device, data), with the config's ``preset`` and per-process ``batch_size``, which the trainer leaves out."""

    event: StartEvent
    preset: str
    batch_size: int


@dataclass(frozen=True)
class TimestepDone:
    """A Taylor pruning pass scored timestep ``t``."""

    t: int


@dataclass(frozen=True)
class Advance:
    """The open bar's work moved on by ``units`` (its own unit: images sampled, seconds waited, ...);
    ``info``: the text shown beside the bar now (empty: keep the last)."""

    units: int = 1
    info: str = ""


#: What a bar is told: a segment's start, the trainer's progress every ``run.log_every`` steps, or a Taylor timestep.
ProgressEvent = Union["SegmentStart", "LogEvent", "TimestepDone", "Advance", "WorkloadStep"]


class Progress(Protocol):
    """What a workflow tells its caller while it works.

    ``on_start(label, total)`` opens a bar of ``total`` units (training steps, Taylor timesteps);
    ``on_log(event)`` passes each typed event of that bar: :class:`SegmentStart` first, then the trainer's
    :class:`~greendiff.train.LogEvent` s; or :class:`TimestepDone` of a Taylor pass; or :class:`Advance` of any other bar (sampling, evaluation, waiting); ``on_end()`` closes the
    bar. ``note(text, style)`` is one line for the user (``style``: ``"warning"`` or None).
    """

    def on_start(self, label: str, total: int) -> None: ...

    def on_log(self, event: ProgressEvent) -> None: ...

    def on_end(self) -> None: ...

    def note(self, text: str, style: str | None = None) -> None: ...


def check_progress(progress: object) -> Progress:
    """``progress`` if it has the :class:`Progress` methods, else a ``TypeError`` naming those it lacks
    (checked before a workflow creates anything)."""
    missing = [name for name in ("on_start", "on_log", "on_end", "note") if not callable(getattr(progress, name, None))]
    if missing:
        raise TypeError(f"progress must be a Progress (on_start, on_log, on_end, note); {type(progress).__name__} "
                        f"has no {', '.join(missing)}")
    return progress


class NullProgress:
    """A :class:`Progress` that shows nothing (library use, tests)."""

    def on_start(self, label: str, total: int) -> None:
        pass

    def on_log(self, event: ProgressEvent) -> None:
        pass

    def on_end(self) -> None:
        pass

    def note(self, text: str, style: str | None = None) -> None:
        pass


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) outside the training loop: the tracker is closed as ``interrupted`` and the
    user was told how to resume. ``exit_code``: 128 + the signal (130 for INT, 143 for TERM)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"interrupted (exit code {exit_code})")
        self.exit_code = exit_code
