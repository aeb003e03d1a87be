"""How a workflow reports while it runs: a :class:`Progress` the caller passes in (the CLI's draws rich
bars; the default, :class:`NullProgress`, shows nothing). Workflows never print."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Union

if TYPE_CHECKING:
    from greendiff.train import EvalEvent, LogEvent, PauseEvent, PauseStartEvent, PhaseProgress, StartEvent


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


#: What a bar is told: a segment's start, the trainer's progress every ``run.log_every`` steps, an in-training
#: evaluation's scores, a carbon-aware pause's start and end, the progress of long work inside the training loop
#: (an evaluation's sampling, a pause's waiting), a Taylor timestep, or any other bar's :class:`Advance`.
ProgressEvent = Union["SegmentStart", "LogEvent", "EvalEvent", "PauseStartEvent", "PauseEvent", "PhaseProgress",
                      "TimestepDone", "Advance", "WorkloadStep"]


class Progress(Protocol):
    """What a workflow tells its caller while it works.

    ``on_start(label, total)`` opens a bar of ``total`` units (training steps, Taylor timesteps);
    ``on_log(event)`` passes each typed event of that bar: :class:`SegmentStart` first, then the trainer's
    :class:`~greendiff.train.LogEvent` s, and (:class:`TrainerProgress`) its evaluations
    (:class:`~greendiff.train.EvalEvent`: show the scores), pauses (:class:`~greendiff.train.PauseStartEvent`:
    say why and until when; :class:`~greendiff.train.PauseEvent`) and :class:`~greendiff.train.PhaseProgress`
    (work inside a step's bar: an evaluation's sampling, a pause's waiting); or :class:`TimestepDone` of a Taylor
    pass; or :class:`Advance` of any other bar (sampling, evaluation, waiting); ``on_end()`` closes the bar.
    ``note(text, style)`` is one line for the user (``style``: ``"warning"`` or None).
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


class TrainerProgress:
    """A trainer callback that tells a :class:`Progress` what the training loop does besides its steps (main
    process only): every in-training evaluation (its FID, KID, ...) as it happens, a carbon-aware pause's start
    (why, until when) and end, and :class:`~greendiff.train.PhaseProgress` while an evaluation samples or a
    pause waits. The segment's bar itself (start and log records) is fed beside it.

    Example:
        >>> from greendiff.train import PhaseProgress
        >>> class Shown(NullProgress):
        ...     def on_log(self, event): print(event.phase, event.done, event.total)
        >>> class Main:
        ...     is_main = True
        >>> TrainerProgress(Shown()).on_phase_progress(Main(), PhaseProgress("eval", 8, 16))
        eval 8 16
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def _show(self, trainer, event) -> None:
        if trainer.is_main:
            self.progress.on_log(event)

    def on_evaluation(self, trainer, event: EvalEvent) -> None:
        self._show(trainer, event)

    def on_pause_start(self, trainer, event: PauseStartEvent) -> None:
        self._show(trainer, event)

    def on_pause(self, trainer, event: PauseEvent) -> None:
        self._show(trainer, event)

    def on_phase_progress(self, trainer, event: PhaseProgress) -> None:
        self._show(trainer, event)


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) outside the training loop: the tracker is closed as ``interrupted`` and the
    user was told how to resume. ``exit_code``: 128 + the signal (130 for INT, 143 for TERM)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"interrupted (exit code {exit_code})")
        self.exit_code = exit_code
