"""When a run has diverged: steps whose loss or gradient was not finite, counted in a row and in all.

A step with a non-finite loss or gradient skips its update, so a run can alternate between finite and
non-finite steps for ever without ever having many in a row; its result is still garbage. So both
counts decide, and they travel with the checkpoints, so a resumed run is judged on all its steps.
"""

from __future__ import annotations

from dataclasses import dataclass

#: More than this share of a run's steps non-finite is divergence (see :class:`DivergenceGuard`).
MAX_BAD_SHARE = 0.25


@dataclass
class DivergenceGuard:
    """Counts the steps whose loss or gradient was not finite and says when the run has diverged.

    A run has diverged when ``max_in_row`` steps in a row were non-finite, or when more than a quarter
    (:data:`MAX_BAD_SHARE`) of its steps so far were, once ``max_in_row`` of them were or the run has
    reached ``max_steps``.

    Args:
        max_in_row: ``run.max_bad_steps``.
        max_steps: The run's last step (``run.max_steps``).

    Example:
        >>> guard = DivergenceGuard(max_in_row=3, max_steps=100)
        >>> [guard.after_step(step, finite=step % 2 == 1) for step in range(1, 7)]
        [None, None, None, None, None, '3 of the first 6 steps had a non-finite loss or gradient (more than a quarter)']
    """

    max_in_row: int
    max_steps: int
    bad_steps: int = 0
    bad_in_row: int = 0

    def after_step(self, steps_done: int, finite: bool) -> str | None:
        """Count a step (``steps_done`` steps taken so far, this one included); the reason if the run diverged."""
        self.bad_in_row = 0 if finite else self.bad_in_row + 1
        self.bad_steps += 0 if finite else 1
        if self.bad_in_row >= self.max_in_row:
            return f"{self.bad_in_row} steps in a row had a non-finite loss or gradient"
        if (self.bad_steps > MAX_BAD_SHARE * steps_done
                and (self.bad_steps >= self.max_in_row or steps_done >= self.max_steps)):
            return (f"{self.bad_steps} of the first {steps_done} steps had a non-finite loss or gradient "
                    "(more than a quarter)")
        return None

    def state_dict(self) -> dict:
        return {"bad_steps": self.bad_steps, "bad_in_row": self.bad_in_row}

    def load_state_dict(self, state: dict) -> None:
        self.bad_steps, self.bad_in_row = int(state["bad_steps"]), int(state["bad_in_row"])
