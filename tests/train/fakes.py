"""Callbacks the trainer's tests plug in where a caller would (Ctrl-C, a tuner's pruner, a progress bar)."""

from __future__ import annotations

from greendiff.train import Stop, TrainerCallback


class InterruptAfter(TrainerCallback):
    """Ctrl-C as the trainer sees it: ``should_interrupt`` answers ``False`` to the first ``polls`` polls
    (one before every step), ``True`` from then on, so the run ends ``interrupted`` at step ``polls``."""

    def __init__(self, polls: int) -> None:
        self.polls, self.asked = polls, 0

    def should_interrupt(self) -> bool:
        self.asked += 1
        return self.asked > self.polls


class EvalRecorder(TrainerCallback):
    """A tuner's pruner: records each evaluation as ``(step, fid, final)`` and stops the run with ``reason``
    once an FID is above ``prune_above`` (``None``: never)."""

    def __init__(self, prune_above: float | None = None, reason: str = "pruned") -> None:
        self.prune_above, self.reason, self.told = prune_above, reason, []

    def on_evaluation(self, trainer, event) -> Stop | None:
        self.told.append((event.step, event.scores["fid"], event.final))
        return Stop(self.reason) if self.prune_above is not None and event.scores["fid"] > self.prune_above else None
