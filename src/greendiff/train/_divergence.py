"""When a run has diverged: steps whose loss or gradient was not finite, and weights that are not.

A step with a non-finite loss or gradient skips its update, so a run can alternate between finite and
non-finite steps for ever without ever having many in a row; its result is still garbage. So both
counts decide, and they travel with the checkpoints, so a resumed run is judged on all its steps. The
share of bad steps is judged again at every end of a run (its last step, a stopping rule, an
interruption), before anything is saved from it.

A huge but finite update (``--lr 1e30``) can also leave finite losses and non-finite weights, so the
weights themselves are checked (:func:`weights_finite`) before they are saved: a checkpoint or a
pipeline of non-finite weights is never written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch

from greendiff.train._callbacks import Stop, StepOutcome

logger = logging.getLogger(__name__)

#: More than this share of a run's steps non-finite is divergence (see :class:`DivergenceGuard`).
MAX_BAD_SHARE = 0.25


class Diverged(Exception):
    """The run has diverged (``str``: why); raised where a save finds non-finite weights."""


def weights_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Every value of the floating-point ``tensors`` is finite: one fused max-norm over them all (a NaN or
    an inf anywhere makes its tensor's max-norm non-finite; a huge finite value does not)."""
    floats = [t.detach() for t in tensors if t.is_floating_point() and t.numel()]
    if not floats:
        return True
    return bool(torch.stack(torch._foreach_norm(floats, math.inf)).isfinite().all())


@dataclass
class DivergenceGuard:
    """Counts the steps whose loss or gradient was not finite and says when the run has diverged; the
    trainer's first callback.

    A run has diverged when ``max_in_row`` steps in a row were non-finite, or when more than a quarter
    (:data:`MAX_BAD_SHARE`) of its steps so far were, once ``max_in_row`` of them were (:meth:`after_step`)
    or whenever the run ends (:meth:`at_end`).

    Args:
        max_in_row: ``run.max_bad_steps``.
        max_steps: The run's last step (``run.max_steps``).

    Example:
        >>> guard = DivergenceGuard(max_in_row=3, max_steps=100)
        >>> [guard.after_step(step, finite=step % 2 == 1) for step in range(1, 7)]
        [None, None, None, None, None, '3 of the first 6 steps had a non-finite loss or gradient (more than a quarter)']
        >>> guard = DivergenceGuard(max_in_row=20, max_steps=100)
        >>> [guard.after_step(step, finite=step % 3 != 0) for step in range(1, 10)].count(None)
        9
        >>> guard.at_end(9)
        '3 of the first 9 steps had a non-finite loss or gradient (more than a quarter)'
    """

    state_key: ClassVar[str] = "divergence"  # the trainer's callback; its counts travel in checkpoints
    max_in_row: int
    max_steps: int
    bad_steps: int = 0
    bad_in_row: int = 0

    def on_step_end(self, trainer, outcome: StepOutcome) -> Stop | None:
        """Count the step; a skipped update is logged. The trainer asks this callback first."""
        reason = self.after_step(outcome.step, outcome.updated)
        if not outcome.updated:
            logger.warning("step %d: loss %s or its gradient is not finite; update skipped (%d in a row, %d in all)",
                           outcome.step - 1, outcome.loss, self.bad_in_row, self.bad_steps)
        return Stop(reason, "diverged") if reason else None

    def judge_end(self, trainer, status: str) -> Stop | None:
        """The share rule, however the run ended (before anything is saved from it)."""
        reason = self.at_end(trainer.step)
        return Stop(reason, "diverged") if reason else None

    def after_step(self, steps_done: int, finite: bool) -> str | None:
        """Count a step (``steps_done`` steps taken so far, this one included); the reason if the run diverged."""
        self.bad_in_row = 0 if finite else self.bad_in_row + 1
        self.bad_steps += 0 if finite else 1
        if self.bad_in_row >= self.max_in_row:
            return f"{self.bad_in_row} steps in a row had a non-finite loss or gradient"
        if self.bad_steps >= self.max_in_row or steps_done >= self.max_steps:
            return self.at_end(steps_done)
        return None

    def at_end(self, steps_done: int) -> str | None:
        """The share rule, judged however the run ended (``steps_done`` steps in all, resumed ones included)."""
        if steps_done > 0 and self.bad_steps > MAX_BAD_SHARE * steps_done:
            return (f"{self.bad_steps} of the first {steps_done} steps had a non-finite loss or gradient "
                    "(more than a quarter)")
        return None

    def state_dict(self) -> dict:
        return {"bad_steps": self.bad_steps, "bad_in_row": self.bad_in_row}

    def load_state_dict(self, state: dict) -> None:
        """Counts from a checkpoint; ``ValueError`` unless they are whole numbers, 0 <= in a row <= in all."""
        bad_steps, bad_in_row = state["bad_steps"], state["bad_in_row"]
        if not all(type(v) is int for v in (bad_steps, bad_in_row)) or not 0 <= bad_in_row <= bad_steps:
            raise ValueError(f"non-finite step counts should be whole numbers with 0 <= in a row <= in all, "
                             f"got {bad_steps!r:.20} and {bad_in_row!r:.20}")
        self.bad_steps, self.bad_in_row = bad_steps, bad_in_row
