"""When to run: the lowest-emission schedule for a job before a deadline, on an intensity series.

Pure functions over piecewise-constant intensity segments. A job draws constant power
``energy_kwh / duration_h`` while it runs. Three schedules are compared:

- **start now**: run straight through from the start;
- **best contiguous**: the best start time. The emissions of a window of fixed length are piecewise
  linear in its start, so the minimum is at a start or an end aligned with a segment boundary (or at
  the ends of the range): only those candidates are evaluated, which is exact;
- **best interruptible**: the best set of slots on the series' own grid (whole slots of the common
  step, one of them partly used when the job is not a whole number of slots), with an optional
  energy cost per pause (checkpoint + restart) charged at the intensity of the slot where the job
  resumes. Solved by dynamic programming over (slots used, partial slot used, running, started),
  checked against brute force in the tests; without a pause cost it is simply the cheapest slots.
  The DP keeps one byte per (slot, state) and is capped at ``MAX_SEARCH_CELLS`` (a note says so
  beyond it). Never worse than the best contiguous window, which is itself an interruptible schedule.

Related work: Wiesner et al., "Let's Wait Awhile", Middleware 2021 (5-9 % savings for jobs
deferrable to the next workday); Zeus/CarbonAware SDK for the idea of a deadline-bounded shift.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Literal

import numpy as np

from greendiff.carbon import IntensitySegment
from greendiff.display import duration_text, plain_number
from greendiff.errors import UserInputError

ScheduleKind = Literal["start now", "best contiguous", "best interruptible"]
# The DP with a pause cost keeps one byte per (slot, state), 8 states per slot of the job: at most 500 MB
# and some 20 s (an hourly year serves jobs up to ~7,000 h, a 30-minute year jobs up to ~1,800 h).
MAX_SEARCH_CELLS = 500_000_000
MIN_DURATION_S = 1.0  # times within a year-long window are seconds from its start, as floats


@dataclass(frozen=True)
class Job:
    """What to schedule.

    Args:
        energy_kwh: IT energy of the whole job (facility overhead is applied by the PUE).
        duration_h: Running time when uninterrupted.
        pause_cost_kwh: Extra energy of one pause (checkpoint written, process restarted).
    """

    energy_kwh: float
    duration_h: float
    pause_cost_kwh: float = 0.0

    @property
    def power_kw(self) -> float:
        return self.energy_kwh / self.duration_h


@dataclass(frozen=True)
class Schedule:
    """Running intervals of a job and their emissions (gCO2e, PUE included)."""

    kind: ScheduleKind
    intervals: tuple[tuple[datetime, datetime], ...]
    emissions_g: float
    pauses: int = 0

    @property
    def start(self) -> datetime:
        return self.intervals[0][0]

    @property
    def end(self) -> datetime:
        return self.intervals[-1][1]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "emissions_g": self.emissions_g, "pauses": self.pauses,
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "intervals": [[a.isoformat(), b.isoformat()] for a, b in self.intervals]}


@dataclass(frozen=True)
class WindowPlan:
    """The three schedules of one job on one series."""

    job: Job
    pue: float
    now: Schedule
    contiguous: Schedule
    interruptible: Schedule
    source: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def saving_frac(self, schedule: Schedule) -> float:
        """Fraction of the start-now emissions that ``schedule`` avoids."""
        return 1.0 - schedule.emissions_g / self.now.emissions_g if self.now.emissions_g > 0 else 0.0

    def to_dict(self) -> dict:
        return {"energy_kwh": self.job.energy_kwh, "duration_h": self.job.duration_h,
                "pause_cost_kwh": self.job.pause_cost_kwh, "pue": self.pue, "source": self.source,
                "notes": list(self.notes),
                "schedules": {s.kind: {**s.to_dict(), "saving_frac": self.saving_frac(s)}
                              for s in (self.now, self.contiguous, self.interruptible)}}


# -- the integral of a piecewise-constant series ------------------------------------------------------

class _Series:
    """Boundaries ``t_s`` (seconds from the first) and the running integral of intensity (g/kWh x s)."""

    def __init__(self, segments: list[IntensitySegment]) -> None:
        self.origin = segments[0].start
        self.bounds_s = [0.0] + [(s.end - self.origin).total_seconds() for s in segments]
        self.values = [s.intensity_g_per_kwh for s in segments]
        self.cumulative = [0.0, *accumulate(v * (b - a) for v, a, b in
                                             zip(self.values, self.bounds_s, self.bounds_s[1:]))]

    def integral(self, a_s: float, b_s: float) -> float:
        return self._at(b_s) - self._at(a_s)

    def _index(self, t_s: float) -> int:
        """The segment holding ``t_s`` (the first or last one outside the span)."""
        return min(max(bisect.bisect_right(self.bounds_s, t_s) - 1, 0), len(self.values) - 1)

    def _at(self, t_s: float) -> float:
        i = self._index(t_s)
        return self.cumulative[i] + self.values[i] * (t_s - self.bounds_s[i])

    def value_at(self, t_s: float) -> float:
        return self.values[self._index(t_s)]

    def moment(self, t_s: float) -> datetime:
        return self.origin + timedelta(seconds=t_s)


def best_contiguous_start_s(bounds_s: list[float], integral, duration_s: float) -> float:
    """Start (seconds from ``bounds_s[0]``) of the window of ``duration_s`` with the least integral.

    Exact for piecewise-constant intensity: candidates are the range's ends and every start or end
    aligned with a boundary. Ties go to the earliest start.
    """
    latest = bounds_s[-1] - duration_s
    candidates = {0.0, latest}
    for b in bounds_s:
        for s in (b, b - duration_s):
            if 0.0 <= s <= latest:
                candidates.add(s)
    return min(sorted(candidates), key=lambda s: integral(s, s + duration_s))


# -- the interruptible schedule on a slot grid --------------------------------------------------------

def _state(k: int, p: int, r: int, s: int) -> int:
    return ((k * 2 + p) * 2 + r) * 2 + s


def _transitions(n_full: int, has_partial: bool, joined: bool) -> tuple[np.ndarray, ...]:
    """Every move of the DP as arrays: source, target, slot weight, pause flag, action.

    State (k full slots used, p partial used, r running at the end of the previous slot, s started).
    Actions: 0 off, 1 full slot, 2 partial at the slot's start (continuing a run), 3 partial at its
    end (starting a run, or resuming after a pause inside the slot). Weight -1 stands for the fraction.
    ``joined``: the slot starts where the previous one ends; if not, no run continues into it.
    """
    rows = []
    for k in range(n_full + 1):
        for p in range(2):
            for r in range(2):
                for s in range(2):
                    if r and not s:
                        continue
                    src, running = _state(k, p, r, s), r and joined
                    rows.append((src, _state(k, p, 0, s), 0.0, 0, 0))
                    if k < n_full:
                        rows.append((src, _state(k + 1, p, 1, 1), 1.0, int(not running and s), 1))
                    if has_partial and not p:
                        if running:
                            rows.append((src, _state(k, 1, 0, 1), -1.0, 0, 2))
                        rows.append((src, _state(k, 1, 1, 1), -1.0, int(s), 3))
    src, dst, weight, pause, action = (np.array(c) for c in zip(*rows))
    return src, dst, weight, pause, action


def _incoming(dst: np.ndarray, n_states: int) -> np.ndarray:
    """``table[state, j]``: the j-th move into ``state``, in move order; padded with ``len(dst)`` (no move)."""
    order = np.argsort(dst, kind="stable")
    counts = np.bincount(dst, minlength=n_states)
    table = np.full((n_states, int(counts.max())), len(dst), dtype=np.int64)
    firsts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    table[dst[order], np.arange(len(dst)) - np.repeat(firsts, counts)] = order
    return table


def interruptible_slots(values: list[float], adjacent: list[bool], n_full: int, frac: float,
                        slot_cost_g: float, pause_cost_g: float) -> tuple[float, list[tuple[int, str]]] | None:
    """Least-emission use of slots: ``n_full`` whole slots and, if ``frac`` > 0, one slot a fraction used.

    Memory is one byte per (slot, state): the best incoming move of each state, for the walk back.

    Args:
        values: Intensity of each slot (g/kWh).
        adjacent: ``adjacent[i]``: slot ``i`` starts where slot ``i - 1`` ends (a run may continue).
        slot_cost_g: Emissions of one whole slot at 1 g/kWh (job energy per slot x PUE).
        pause_cost_g: Emissions of one pause at 1 g/kWh (pause energy x PUE), at the resume slot.

    Returns:
        ``(emissions_g, [(slot, "full" | "partial-start" | "partial-end"), ...])`` or ``None`` if infeasible.
    """
    has_partial = frac > 1e-12
    n_states = _state(n_full, 1, 1, 1) + 1
    moves = {}
    for joined in (True, False):
        src, dst, weight, pause, action = _transitions(n_full, has_partial, joined)
        unit_g = np.where(weight < 0, frac, weight) * slot_cost_g + pause * pause_cost_g  # per g/kWh of the slot
        moves[joined] = (src, unit_g, action, _incoming(dst, n_states))
    cost = np.full(n_states, math.inf)
    cost[_state(0, 0, 0, 0)] = 0.0
    choices = np.empty((len(values), n_states), dtype=np.uint8)
    every_state = np.arange(n_states)
    for i, (value, joined) in enumerate(zip(values, adjacent)):
        src, unit_g, _, incoming = moves[joined]
        options = np.append(cost[src] + value * unit_g, math.inf)[incoming]  # (state, incoming move)
        choices[i] = options.argmin(axis=1)  # the first of equals: the lowest move
        cost = options[every_state, choices[i]]
    ends = [_state(n_full, int(has_partial), r, 1) for r in range(2)] if (n_full or has_partial) else [_state(0, 0, 0, 0)]
    target = min(ends, key=lambda e: cost[e])
    best_g = float(cost[target])
    if not math.isfinite(best_g):
        return None
    used: list[tuple[int, str]] = []
    names = {1: "full", 2: "partial-start", 3: "partial-end"}
    for i in range(len(values) - 1, -1, -1):  # walk back along the recorded best moves
        src, _, action, incoming = moves[adjacent[i]]
        move = incoming[target, choices[i, target]]
        if action[move]:
            used.append((i, names[int(action[move])]))
        target = int(src[move])
    return best_g, sorted(used)


# -- the three schedules --------------------------------------------------------------------------------

def _merge(intervals: list[tuple[datetime, datetime]]) -> tuple[tuple[datetime, datetime], ...]:
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)


def plan_window(segments: list[IntensitySegment], job: Job, pue: float = 1.0, source: str = "",
                notes: tuple[str, ...] = ()) -> WindowPlan:
    """Start-now, best contiguous and best interruptible schedules of ``job`` within the segments' span.

    Args:
        segments: Contiguous intensity segments from the start to the deadline.
        job: Energy, duration and pause cost.
        pue: Facility overhead applied to all energy.
    """
    series = _series_checked(segments, job)
    duration_s = job.duration_h * 3600.0
    g_per_unit = job.power_kw / 3600.0 * pue  # grams per (g/kWh x s) of running

    def contiguous(kind: ScheduleKind, start_s: float) -> Schedule:
        return Schedule(kind, ((series.moment(start_s), series.moment(start_s + duration_s)),),
                        series.integral(start_s, start_s + duration_s) * g_per_unit)

    now = contiguous("start now", 0.0)
    best = contiguous("best contiguous", best_contiguous_start_s(series.bounds_s, series.integral, duration_s))
    split = _interruptible(segments, job, pue)
    notes = tuple(notes)
    if isinstance(split, str) or split.emissions_g >= best.emissions_g:
        why = split if isinstance(split, str) else "no split on the series' slot grid beats the best contiguous window"
        split = Schedule("best interruptible", best.intervals, best.emissions_g, 0)
        notes += (f"best interruptible = best contiguous: {why}",)
    return WindowPlan(job, pue, now, best, split, source, notes)


def _series_checked(segments: list[IntensitySegment], job: Job) -> _Series:
    if not segments:
        raise UserInputError("no intensity data for the window")
    for name, value in (("energy", job.energy_kwh), ("duration", job.duration_h)):
        if not math.isfinite(value) or value <= 0:
            raise UserInputError(f"the job's {name} must be a positive number, got {value}")
    if job.duration_h * 3600.0 < MIN_DURATION_S:  # shorter, a start plus the duration rounds back to the start
        raise UserInputError(f"the job's duration must be at least {plain_number(MIN_DURATION_S)} s, "
                             f"got {job.duration_h!r} h")
    if not math.isfinite(job.pause_cost_kwh) or job.pause_cost_kwh < 0:
        raise UserInputError(f"the pause cost must be >= 0 kWh, got {job.pause_cost_kwh}")
    series = _Series(segments)
    window_h = series.bounds_s[-1] / 3600.0
    if job.duration_h > window_h + 1e-9:
        raise UserInputError(f"the job needs {duration_text(job.duration_h * 3600.0)} but the window from {segments[0].start.isoformat()} "
                             f"to the deadline {segments[-1].end.isoformat()} is {duration_text(window_h * 3600.0)}; "
                             "move the deadline or shorten the job")
    return series


def cheapest_slots(values: list[float], adjacent: list[bool], n_full: int, frac: float,
                   slot_cost_g: float) -> tuple[float, list[tuple[int, str]]]:
    """Without a pause cost the best split is exact and needs no table: the ``n_full`` cheapest slots, and
    the next cheapest in part (it cannot be cheaper to use a dearer slot in full). Same result shape as
    :func:`interruptible_slots`; ``n_full + (frac > 0)`` must not exceed the slots."""
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    full = set(order[:n_full])
    used = [(i, "full") for i in full]
    emissions_g = sum(values[i] for i in full) * slot_cost_g
    if frac > 1e-12:
        p = order[n_full]
        joins_next = p + 1 < len(values) and adjacent[p + 1] and p + 1 in full
        used.append((p, "partial-end" if joins_next else "partial-start"))
        emissions_g += values[p] * frac * slot_cost_g
    return emissions_g, sorted(used)


def _interruptible(segments: list[IntensitySegment], job: Job, pue: float) -> Schedule | str:
    """The DP on the whole slots of the series' common step (partial edge segments left out), or why not."""
    step = max(s.end - s.start for s in segments)
    slots = [s for s in segments if s.end - s.start == step]
    step_s = step.total_seconds()
    n = job.duration_h * 3600.0 / step_s
    n_full = math.floor(n + 1e-9)
    frac = 0.0 if n - n_full < 1e-9 else n - n_full
    if n_full + (frac > 0) > len(slots):
        return "the job does not fit the whole slots of the window"
    adjacent = [i > 0 and slots[i].start == slots[i - 1].end for i in range(len(slots))]
    values = [s.intensity_g_per_kwh for s in slots]
    slot_cost_g = job.power_kw * step_s / 3600.0 * pue
    if job.pause_cost_kwh == 0:
        found = cheapest_slots(values, adjacent, n_full, frac, slot_cost_g)
    elif len(slots) * (_state(n_full, 1, 1, 1) + 1) > MAX_SEARCH_CELLS:
        return (f"the exact search with a pause cost is too large here ({len(slots):,} slots of {step} for a job of "
                f"{n:,.1f} slots); shorten the window, use an hourly series, or give --pause-cost-kwh 0")
    else:
        found = interruptible_slots(values, adjacent, n_full, frac, slot_cost_g, job.pause_cost_kwh * pue)
    if found is None:
        return "the job does not fit the whole slots of the window"
    emissions_g, used = found
    part = timedelta(seconds=frac * step_s)
    intervals = []
    for i, how in used:
        a, b = slots[i].start, slots[i].end
        intervals.append((a, b) if how == "full" else (a, a + part) if how == "partial-start" else (b - part, b))
    merged = _merge(intervals)
    return Schedule("best interruptible", merged, emissions_g, len(merged) - 1)


def schedule_emissions_g(segments: list[IntensitySegment], schedule_intervals, job: Job, pue: float) -> float:
    """Emissions of given running intervals (pauses charged at the resume moment), for checks and reports."""
    series = _Series(segments)
    g = sum(series.integral((a - series.origin).total_seconds(), (b - series.origin).total_seconds())
            for a, b in schedule_intervals) * job.power_kw / 3600.0 * pue
    resumes = [a for a, _ in _merge(list(schedule_intervals))][1:]
    return g + sum(series.value_at((a - series.origin).total_seconds()) for a in resumes) * job.pause_cost_kwh * pue
