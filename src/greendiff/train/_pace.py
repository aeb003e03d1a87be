"""The energy of a training step, as measured so far in a segment: one measure for the budgets, the forecast and
the projection a progress bar shows.

A segment's own steps only: the baseline is read just before its first step, so what comes before it (the
evaluator's reference features, loading, a pause before the first step) is no step's; and once a second step
is measured the first is left out: it holds the warm-up (allocation, kernel selection, caches;
:data:`greendiff.plan.WARMUP_COST`). Evaluations between steps stay in: they recur.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Pace:
    """The energy of one step (kWh); ``with_warmup``: only the segment's first step is measured yet, so the
    figure holds its warm-up and overstates a later step."""

    kwh_per_step: float
    with_warmup: bool


class StepEnergy:
    """Energy per step of a training segment, from its steps alone.

    Example:
        >>> pace = StepEnergy()
        >>> pace.begin(0, 6.0)  # 6 kWh of setup before the first step
        >>> pace.record(1, 9.0)  # the first step: 3 kWh, warm-up included
        >>> pace.at(1, 9.0)
        Pace(kwh_per_step=3.0, with_warmup=True)
        >>> pace.at(5, 13.0), pace.projected_kwh(5, 13.0, max_steps=10)
        (Pace(kwh_per_step=1.0, with_warmup=False), (18.0, False))
    """

    def __init__(self) -> None:
        self.start: tuple[int, float] | None = None  # (steps done, kWh so far) just before the segment's first step
        self.first: tuple[int, float] | None = None  # (step, kWh) after the segment's first measured step

    @property
    def begun(self) -> bool:
        return self.start is not None

    def begin(self, step: int, energy_kwh: float) -> None:
        """The segment's first step is ``step + 1``; ``energy_kwh`` used so far (a resumed run: its earlier segments)."""
        self.start, self.first = (step, energy_kwh), None

    def record(self, step: int, energy_kwh: float) -> None:
        """After a step: the first one after :meth:`begin` is kept (later calls do nothing)."""
        if self.first is None and self.start is not None and step > self.start[0]:
            self.first = (step, energy_kwh)

    @property
    def wants_record(self) -> bool:
        """Whether :meth:`record` would keep something (the first step is not measured yet)."""
        return self.start is not None and self.first is None

    def at(self, step: int, energy_kwh: float) -> Pace | None:
        """The energy of a step as measured at ``step`` with ``energy_kwh`` used: up to the first step, that step's
        own (``with_warmup``); later the mean per step since it. ``None`` before the first step."""
        if self.start is None or step <= self.start[0]:
            return None
        if self.first is None or step <= self.first[0]:
            return Pace((energy_kwh - self.start[1]) / (step - self.start[0]), True)
        return Pace((energy_kwh - self.first[1]) / (step - self.first[0]), False)

    def projected_kwh(self, step: int, energy_kwh: float, max_steps: int) -> tuple[float, bool] | None:
        """The run's energy at ``max_steps`` (kWh) if the measured pace holds, and whether it is projected from
        the first step alone (warm-up included); ``None`` before the first step."""
        pace = self.at(step, energy_kwh)
        if pace is None:
            return None
        return energy_kwh + pace.kwh_per_step * max(max_steps - step, 0), pace.with_warmup
