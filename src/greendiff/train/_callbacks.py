"""The trainer's one callback interface, and the small callbacks the trainer itself is made of.

A callback is any object with some of :class:`TrainerCallback`'s methods (missing ones are skipped, so a
collaborator from a higher layer, e.g. :class:`greendiff.plan.CarbonAwareController`, implements the
interface without importing this module). Hooks that may end the run return a :class:`Stop`; every other
return value is ignored. A callback with a ``state_key`` and ``state_dict()``/``load_state_dict()``
travels in the checkpoints under that key (``train_state.json``), so a resumed run continues its books.

Order matters where one answer ends the dispatch (``on_step_end``, ``judge_end``): the trainer lists its
divergence guard first and its stopping rules last, with the caller's callbacks between them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.train._events import (
    EndEvent, ForecastEvent, LogEvent, PauseEvent, PauseStartEvent, PhaseProgress, RanksInSyncEvent, StartEvent,
    StoppedEvent,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stop:
    """A callback's answer that ends the run: why, and as what (``stopped`` finishes it: final checkpoint,
    samples and pipeline; ``diverged`` saves nothing more; ``interrupted`` checkpoints for a resume)."""

    reason: str
    status: Literal["stopped", "diverged", "interrupted"] = "stopped"


@dataclass(frozen=True)
class StepOutcome:
    """What one optimizer step did: its number (steps done so far), loss, whether the update was applied
    (``False``: the loss or gradient was not finite and nothing changed) and its batch size."""

    step: int
    loss: float
    updated: bool
    samples: int


class TrainerCallback:
    """Base class (optional) of the trainer's callbacks: every hook does nothing.

    The ``trainer`` argument is the running :class:`~greendiff.train.Trainer`: ``step``, ``tracker``,
    ``is_main``, ``energy_so_far_j()``, ``emissions_so_far_kg()``, ``evaluate(seeds)``, ``emit(event)``,
    ``save_checkpoint(step, name)``, ``pause(until, wait, reason, now)``, ``report_progress(phase, done, total, info)``,
    ``set_lr_horizon(steps)``.

    Example:
        >>> class PrintLoss(TrainerCallback):
        ...     def on_log(self, trainer, event):
        ...         print(event.step, round(event.loss, 3))
    """

    state_key: str | None = None  # set, with state_dict/load_state_dict, to travel in checkpoints

    def on_event(self, trainer, event) -> None:
        """Every event, before its own hook (the metrics writer, experiment loggers)."""

    def on_train_start(self, trainer, event: StartEvent) -> None:
        """The run (or a resumed segment) starts; the model and the books are loaded."""

    def on_step_begin(self, trainer) -> None:
        """Before step ``trainer.step`` (0-based) is drawn; may pause (``trainer.pause``)."""

    def should_interrupt(self) -> bool:
        """Polled before every step and during pauses: ``True`` checkpoints and ends ``interrupted``."""
        return False

    def on_step_end(self, trainer, outcome: StepOutcome) -> Stop | None:
        """After every step, skipped ones included (``outcome.updated`` is ``False``)."""
        return None

    def on_log(self, trainer, event: LogEvent) -> None:
        """Progress every ``run.log_every`` steps."""

    def on_evaluation(self, trainer, event) -> Stop | None:
        """An evaluation's scores; a :class:`Stop` ends the run (a tuner's pruner). Every callback is told."""
        return None

    def on_forecast(self, trainer, event: ForecastEvent) -> None:
        """A budget's forecast of where the run will end (with an energy or carbon budget)."""

    def on_pause_start(self, trainer, event: PauseStartEvent) -> None:
        """A carbon-aware pause begins (checkpointed): until when it is planned, and why."""

    def on_pause(self, trainer, event: PauseEvent) -> None:
        """A carbon-aware pause ended (or was interrupted); ``event`` says from when until when."""

    def on_phase_progress(self, trainer, event: PhaseProgress) -> None:
        """Long work inside the loop moved on (an evaluation's sampling, a pause's waiting); main process only."""

    def on_stopped(self, trainer, event: StoppedEvent) -> None:
        """A callback's :class:`Stop` ended the run (``event.reason``)."""

    def on_ranks_in_sync(self, trainer, event: RanksInSyncEvent) -> None:
        """A job of several processes checked its replicas' weights agree (``event.equal``)."""

    def on_checkpoint(self, trainer, step: int, path: Path) -> None:
        """A checkpoint was written (``path``: its folder)."""

    def judge_end(self, trainer, status: str) -> Stop | None:
        """However the run ended, before anything is saved from it: a ``diverged`` :class:`Stop` vetoes."""
        return None

    def on_final(self, trainer, status: str) -> None:
        """The run completed or stopped: last work before the final checkpoint (the closing evaluation)."""

    def on_train_end(self, trainer, event: EndEvent) -> None:
        """The run ended with ``event.status``; its files are written."""


class CallbackList:
    """Dispatches hooks to callbacks in order; hooks a callback lacks are skipped."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks = [cb for cb in callbacks if cb is not None]

    def call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            if (method := getattr(cb, hook, None)) is not None:
                method(*args)

    def first_stop(self, hook: str, *args) -> Stop | None:
        """Ask in order until one answers with a :class:`Stop`."""
        for cb in self.callbacks:
            if (method := getattr(cb, hook, None)) is not None and (answer := method(*args)) is not None:
                return answer
        return None

    def emit(self, trainer, event) -> Stop | None:
        """``on_event`` then the event's own hook on every callback; the first :class:`Stop` answered."""
        stop = None
        for cb in self.callbacks:
            if (method := getattr(cb, "on_event", None)) is not None:
                method(trainer, event)
            if (method := getattr(cb, event.hook, None)) is not None:
                answer = method(trainer, event)
                stop = stop or (answer if isinstance(answer, Stop) else None)
        return stop

    def interrupt_requested(self) -> bool:
        return any(getattr(cb, "should_interrupt", lambda: False)() for cb in self.callbacks)

    def stateful(self) -> dict[str, Any]:
        """The callbacks that travel in checkpoints, by their key."""
        return {cb.state_key: cb for cb in self.callbacks if getattr(cb, "state_key", None)}


# -- the trainer's own callbacks ----------------------------------------------------------------------------------------

class MetricsWriter(TrainerCallback):
    """``metrics.jsonl``: one JSON record per recorded event (:meth:`to_dict`; not progress ticks), written by the
    main process only.

    Opened at the start event, for appending and never through a symbolic link (``O_NOFOLLOW``: one
    planted in a copied run directory must not have greendiff append to a file elsewhere).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def on_train_start(self, trainer, event: StartEvent) -> None:
        self._file = _open_append(self.path) if trainer.is_main else open(os.devnull, "w")

    def on_event(self, trainer, event) -> None:
        if not getattr(event, "recorded", True):
            return
        if self._file is None:
            self.on_train_start(trainer, event)
        self._file.write(json.dumps(event.to_dict()) + "\n")
        self._file.flush()

    def on_train_end(self, trainer, event: EndEvent) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open_append(path: Path):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(path)}: "
                             + ("it is a symbolic link" if path.is_symlink() else (exc.strerror or str(exc)))) from None
    return os.fdopen(fd, "a")


class LogSchedule(TrainerCallback):
    """Raises a :class:`LogEvent` every ``log_every`` applied steps and at ``max_steps``, with the
    throughput since the previous one (the first of a segment marked ``warmup``: it holds the first step);
    in a job it also syncs the ledger (every rank's readings)."""

    def __init__(self, log_every: int, max_steps: int) -> None:
        self.log_every, self.max_steps = log_every, max_steps
        self._since_s, self._samples = time.perf_counter(), 0
        self._warm = False  # a record of this segment was raised: later intervals are past the first step

    def on_step_begin(self, trainer) -> None:
        if not self._warm and self._samples == 0:  # time from the first step, not from the trainer's setup
            self._since_s = time.perf_counter()

    def on_step_end(self, trainer, outcome: StepOutcome) -> Stop | None:
        if not outcome.updated:
            return None
        self._samples += outcome.samples
        if outcome.step % self.log_every == 0 or outcome.step == self.max_steps:
            now = time.perf_counter()
            trainer.emit(trainer.log_event(outcome.step, self._samples / max(now - self._since_s, 1e-9), not self._warm))
            self._since_s, self._samples, self._warm = now, 0, True
            if trainer.dist.distributed:
                trainer.tracker.sync()  # every rank's readings to rank 0's ledger
        return None


class CoreRebalance(TrainerCallback):
    """Rebalances a :class:`greendiff.parallel.CoreShare` before every step (it looks for other runs every
    few seconds)."""

    def __init__(self, cores) -> None:
        self.cores = cores

    def on_step_begin(self, trainer) -> None:
        self.cores.rebalance()
