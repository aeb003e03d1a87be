"""The learning-rate schedule, with a horizon an energy budget can move.

The same curves as diffusers' ``get_scheduler`` (linear warm-up, then cosine to 0, linear to 0, or
constant), but the step at which they reach 0 (``horizon_steps``) is an attribute: a run stopped by
an energy budget sets it to the step where the budget is forecast to run out, so the learning rate
has decayed when the budget stops the run instead of being cut off at its peak. As a callable
object its fields are saved with the scheduler's ``state_dict`` (``LambdaLR`` keeps the ``__dict__``
of callable objects), so a resumed run keeps its horizon.
"""

from __future__ import annotations

import math

import torch


class LRSchedule:
    """Multiplier of the peak learning rate at optimizer step ``step``.

    Args:
        kind: ``cosine``, ``linear`` or ``constant``.
        warmup_steps: Steps of linear warm-up from 0.
        horizon_steps: The step at which ``cosine`` and ``linear`` reach 0.

    Example:
        >>> s = LRSchedule("cosine", warmup_steps=10, horizon_steps=110)
        >>> s(5), s(10), s(60), s(110)
        (0.5, 1.0, 0.5, 0.0)
    """

    def __init__(self, kind: str, warmup_steps: int, horizon_steps: int) -> None:
        if kind not in ("cosine", "linear", "constant"):
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind, self.warmup_steps, self.horizon_steps = kind, warmup_steps, horizon_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.horizon_steps - self.warmup_steps)
        if self.kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def make_lr_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int,
                      horizon_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` driven by an :class:`LRSchedule` (reach it as ``scheduler.lr_lambdas[0]``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(kind, warmup_steps, horizon_steps))
