"""Carbon-aware training: pause while the grid is dirty, resume when it is clean, never miss the deadline.

The controller is one of the trainer's callbacks (``callbacks=[controller]``): before every step it asks
:meth:`CarbonAwareController.before_step` whether to run; when told to wait the trainer checkpoints,
waits (metered, in a ``wait`` window), and carries on. Two policies:

- **threshold** (``max_intensity``): run while the grid is at or below the threshold, otherwise wait
  for the next hour that is;
- **schedule** (``deadline`` only): the best interruptible schedule of the remaining work before the
  deadline (:func:`greendiff.plan.plan_window`), re-planned every ``recheck_s``; run when it says run.

With a deadline, both policies run unconditionally once the remaining work (forecast from the
measured time per step, plus ``margin``) no longer fits before it. The controller also keeps the
books: emissions as run (waits and the pauses' checkpoints included; with the wall clock, the ledger's
own accounting of the run) against the same work run straight through from the first step.

Nothing long is silent: every pause is raised to the trainer's callbacks before it starts (a
:class:`~greendiff.train.PauseStartEvent` with the reason: the intensity against the threshold, or the
schedule's plan, and the expected resume time), its waiting as progress ticks, and its end (a
:class:`~greendiff.train.PauseEvent`); a Ctrl-C during a wait ends the run interrupted with the pause and
the time it waited in the books.

The clock is a collaborator: :class:`WallClock` in real runs, :class:`SimulatedClock` in tests and
demos (each step advances it a fixed time; a wait jumps it forward), so a three-day schedule on an
hourly trace runs in seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING

from greendiff.carbon import Intensity, IntensityProvider
from greendiff.display import duration_text, plain_number
from greendiff.errors import UserInputError
from greendiff.plan._window import Job, plan_window
from greendiff.units import G_PER_KG, joules_to_kwh

if TYPE_CHECKING:
    from greendiff.train import Waited

logger = logging.getLogger(__name__)

_NOISE = 1e-9  # a saving within this fraction of the emissions is float rounding, not a saving


class WallClock:
    """Real time; waits sleep in chunks so Ctrl-C and the ledger's samples keep working."""

    chunk_s = 10.0
    simulated = False

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def after_step(self) -> None:
        pass


class SimulatedClock:
    """A clock that advances ``step_s`` per training step and jumps over waits.

    Example:
        >>> clock = SimulatedClock(datetime(2022, 6, 1, tzinfo=timezone.utc), step_s=600)
        >>> clock.after_step(); clock.sleep(3600); clock.now().isoformat()
        '2022-06-01T01:10:00+00:00'
    """

    chunk_s = float("inf")  # a simulated wait is one jump
    simulated = True  # its times are not the ones the ledger prices

    def __init__(self, start: datetime, step_s: float) -> None:
        self.t = start
        self.step_s = step_s

    def now(self) -> datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)

    def after_step(self) -> None:
        self.t += timedelta(seconds=self.step_s)


class CarbonAwareController:
    """Decides when the loop runs, and accounts the emissions saved.

    Args:
        provider: Hourly (trace) or live intensity at the run's location.
        clock: :class:`WallClock` or :class:`SimulatedClock`.
        total_steps: The run's planned optimizer steps.
        pue: Facility overhead applied to all energy.
        max_intensity_g_per_kwh: Threshold policy; ``None`` uses the schedule policy (needs a deadline).
        deadline: Latest end of training (UTC-aware), or ``None``.
        margin_frac: Safety margin on the forecast remaining time.
        min_pause_s: Waits shorter than this are not worth a pause.
        pause_cost_kwh: Energy of one pause (checkpoint + restart), for the schedule policy.
        recheck_s: Clock seconds between two decisions (each may query a live API).
        min_rate_steps: Steps measured before the first pause (the time per step must be known).
    """

    def __init__(self, provider: IntensityProvider, clock, total_steps: int, pue: float = 1.0,
                 max_intensity_g_per_kwh: float | None = None, deadline: datetime | None = None,
                 margin_frac: float = 0.1, min_pause_s: float = 900.0, pause_cost_kwh: float = 0.0,
                 recheck_s: float = 300.0, min_rate_steps: int = 3, horizon_h: float = 168.0) -> None:
        if max_intensity_g_per_kwh is None and deadline is None:
            raise UserInputError("carbon-aware training needs --max-intensity G or --deadline T (or both)")
        self.provider, self.clock, self.total_steps, self.pue = provider, clock, total_steps, pue
        self.max_intensity = max_intensity_g_per_kwh
        self.deadline = deadline
        self.margin_frac, self.min_pause_s, self.pause_cost_kwh = margin_frac, min_pause_s, pause_cost_kwh
        self.recheck_s, self.min_rate_steps, self.horizon_h = recheck_s, min_rate_steps, horizon_h
        self.state = {"start": None, "active_s": 0.0, "steps_timed": 0, "step_energy_j": 0.0, "aware_g": 0.0,
                      "straight_g": 0.0, "waited_s": 0.0, "pauses": 0, "forced": False, "clock": None,
                      "beyond_series": False}
        self._last_t: datetime | None = None
        self._last_j = 0.0
        self._last_g: float | None = None  # the ledger's emissions at the last step (real-time clocks)
        self._next_check: datetime | None = None
        self._cached_wait_until: datetime | None = None
        self._cache: dict[datetime, float] = {}
        self._said_no_window = False  # "the grid stays above ..." said, and no cleaner hour seen since
        self.log: list[dict] = []  # one entry per step: step, time, intensity (for tests and reports)

    # -- the books ----------------------------------------------------------------------------------

    def _clamp(self, moment: datetime) -> datetime:
        """Inside the provider's coverage: past a short trace's end its last hour stands in (noted once)."""
        first, last = self.provider.coverage()
        if last is not None and moment >= last:
            if not self.state.get("beyond_series"):
                logger.warning("carbon-aware: the intensity series ends at %s; its last value is used after it", last)
                self.state["beyond_series"] = True
            return last - timedelta(seconds=1)
        if first is not None and moment < first:
            return first
        return moment

    def _intensity_at(self, moment: datetime) -> float:
        """Intensity at a moment, cached per 5 minutes (series change on the hour or half-hour), so a
        step costs no provider call, and a live API is asked at most once per 5 minutes."""
        moment = self._clamp(moment)
        key = max(moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0),
                  self.provider.coverage()[0] or moment.min.replace(tzinfo=moment.tzinfo))
        if key not in self._cache:
            self._cache[key] = self.provider.intensity(key, key + timedelta(seconds=1)).segments[0].intensity_g_per_kwh
        return self._cache[key]

    def _covered(self, start: datetime, end: datetime) -> Intensity:
        """Intensity over ``[start, end)`` cut to the provider's coverage (at least one second)."""
        start = self._clamp(start)
        _, last = self.provider.coverage()
        end = max(min(end, last) if last is not None else end, start + timedelta(seconds=1))
        return self.provider.intensity(start, end)

    def begin(self, energy_j: float) -> None:
        """Before the first step of this process (a resumed run continues the books)."""
        now = self.clock.now()
        if self.state["start"] is None:
            self.state["start"] = now.isoformat()
        self._last_t, self._last_j = now, energy_j

    def after_step(self, step: int, energy_j: float, emissions_g: float | None = None) -> None:
        """After each optimizer step: time and energy since the last step, priced both ways.

        ``emissions_g``: the run's emissions so far as the ledger accounts them (a real-time clock: the
        trainer's figure); the carbon-aware side is then charged their increase. ``None`` (a simulated
        clock, whose times the ledger never sees) prices the step at the intensity of its simulated time."""
        self.clock.after_step()
        now = self.clock.now()
        duration_s = (now - self._last_t).total_seconds()
        used_j = energy_j - self._last_j
        mid = self._last_t + (now - self._last_t) / 2
        intensity = self._intensity_at(mid)
        start = datetime.fromisoformat(self.state["start"])
        straight_at = start + timedelta(seconds=self.state["active_s"] + duration_s / 2)
        self.state["aware_g"] += self._charged(used_j, intensity, emissions_g)
        self.state["straight_g"] += joules_to_kwh(used_j) * self.pue * self._intensity_at(straight_at)
        self.state["active_s"] += duration_s
        self.state["steps_timed"] += 1
        self.state["step_energy_j"] += used_j
        self.state["clock"] = now.isoformat()
        self._last_t, self._last_j = now, energy_j
        self.log.append({"step": step, "time": now.isoformat(), "intensity_g_per_kwh": intensity})

    def after_wait(self, energy_j: float, waited_from: datetime, emissions_g: float | None = None) -> None:
        """After a pause: its energy (checkpoint and idle) is charged to the carbon-aware side only."""
        now = self.clock.now()
        used_j = energy_j - self._last_j
        self.state["aware_g"] += self._charged(used_j, self._covered(waited_from, now).mean_g_per_kwh(), emissions_g)
        self.state["waited_s"] += (now - waited_from).total_seconds()
        self.state["pauses"] += 1
        self.state["clock"] = now.isoformat()
        self._last_t, self._last_j = now, energy_j

    def _charged(self, used_j: float, intensity_g_per_kwh: float, emissions_g: float | None) -> float:
        """Grams charged to the carbon-aware side: the ledger's increase when given, else priced here."""
        if emissions_g is None:
            return joules_to_kwh(used_j) * self.pue * intensity_g_per_kwh
        charged = emissions_g - self._last_g if self._last_g is not None else joules_to_kwh(used_j) * self.pue * intensity_g_per_kwh
        self._last_g = emissions_g
        return charged

    # -- the trainer's callback (greendiff.train.TrainerCallback) ------------------------------------------

    state_key = "carbon_aware"

    @property
    def real_time(self) -> bool:
        """The clock is the wall clock: the ledger's accounting prices the same moments as these books."""
        return not getattr(self.clock, "simulated", False)

    def _ledger_g(self, trainer) -> float | None:
        return trainer.emissions_so_far_kg() * G_PER_KG if self.real_time else None

    def on_step_begin(self, trainer) -> None:
        """Before each step: start the books (the first step of this process), then pause if told to: the
        trainer checkpoints, raises the pause's start (why, until when), waits (progress ticks) and its end.
        The pause is booked however it ends; a Ctrl-C the wait caught is raised again once it is, so the loop
        ends the run interrupted (a stop request ends it by itself)."""
        if self._last_t is None:
            self.begin(trainer.energy_so_far_j())
            self._last_g = self._ledger_g(trainer)
        until = self.before_step(trainer.step)
        if until is None:
            return
        now = self.clock.now()
        wait = partial(self.wait, until, trainer.interrupt_requested, _WaitTicks(trainer, until))
        waited = trainer.pause(until, wait, self.why(now, until), now)
        self.after_wait(trainer.energy_so_far_j(), waited.began, self._ledger_g(trainer))
        if waited.interrupted and not trainer.interrupt_requested():
            raise KeyboardInterrupt

    def why(self, now: datetime, until: datetime) -> str:
        """Why the run pauses from ``now`` until ``until``: the intensity against the threshold, or the
        schedule's plan (one line for the user)."""
        intensity = self._intensity_at(now)
        if self.state["forced"] and self.deadline is not None:
            return (f"the grid is at {intensity:.0f} g/kWh; waiting as long as the deadline "
                    f"{self.deadline:%Y-%m-%d %H:%M} UTC allows, then running to the end")
        if self.max_intensity is not None:
            return f"the grid is at {intensity:.0f} g/kWh, above the threshold {plain_number(self.max_intensity)} g/kWh"
        return (f"the grid is at {intensity:.0f} g/kWh; the schedule runs the remaining steps in cleaner hours "
                f"before the deadline {self.deadline:%Y-%m-%d %H:%M} UTC")

    def on_step_end(self, trainer, outcome) -> None:
        if outcome.updated:
            self.after_step(outcome.step, trainer.energy_so_far_j(), self._ledger_g(trainer))

    # -- the decision ---------------------------------------------------------------------------------

    def _remaining_s(self, step: int) -> float | None:
        if self.state["steps_timed"] < self.min_rate_steps:
            return None
        per_step_s = self.state["active_s"] / self.state["steps_timed"]
        return (self.total_steps - step) * per_step_s * (1 + self.margin_frac)

    def before_step(self, step: int) -> datetime | None:
        """``None``: run this step. A time: checkpoint and wait until then."""
        now = self.clock.now()
        remaining_s = self._remaining_s(step)
        if remaining_s is None or step >= self.total_steps or self.state["forced"]:
            return None  # once the deadline forces running, it runs to the end (the margin would creep otherwise)
        latest_start = self.deadline - timedelta(seconds=remaining_s) if self.deadline else None
        if latest_start is not None and now >= latest_start - timedelta(seconds=1):  # (a simulated wait lands µs early)
            self._force("now", step)
            return None
        if self._next_check is not None and now < self._next_check:
            return self._cached_wait_until if self._cached_wait_until and self._cached_wait_until > now else None
        self._next_check = now + timedelta(seconds=self.recheck_s)
        until = self._threshold_wait(now, latest_start) if self.max_intensity is not None else \
            self._schedule_wait(now, step, remaining_s)
        if until is not None and latest_start is not None and until >= latest_start:
            until = latest_start  # wait as long as the deadline allows, then run to the end
            self._force("after waiting until the latest start", step)
        if until is None or (until - now).total_seconds() < self.min_pause_s:
            until = None
        self._cached_wait_until = until
        return until

    def _force(self, when: str, step: int) -> None:
        """From here on the run goes straight to the end: the remaining work only just fits the deadline."""
        if not self.state["forced"]:
            logger.warning("carbon-aware: running without pauses %s (step %d) to meet the deadline %s",
                           when, step, self.deadline.isoformat())
            self.state["forced"] = True

    def _threshold_wait(self, now: datetime, latest_start: datetime | None) -> datetime | None:
        """The next hour at or below the threshold (``None``: run now). With no such hour in the horizon the run
        goes on, said once until a clean hour is seen again (the recheck every ``recheck_s`` would repeat it)."""
        if self._intensity_at(now) <= self.max_intensity:
            self._said_no_window = False
            return None
        horizon = now + timedelta(hours=self.horizon_h)
        if latest_start is not None:
            horizon = min(horizon, latest_start)
        if horizon <= now:
            return None
        for seg in self._covered(now, horizon).segments:
            if seg.intensity_g_per_kwh <= self.max_intensity:
                self._said_no_window = False
                return max(seg.start, now)
        if latest_start is not None:
            return latest_start  # never clean enough before the deadline: wait as long as allowed
        if not self._said_no_window:
            logger.warning("carbon-aware: the grid stays above %s g/kWh for the next %s; running anyway",
                           plain_number(self.max_intensity), duration_text(self.horizon_h * 3600))
            self._said_no_window = True
        return None

    def _schedule_wait(self, now: datetime, step: int, remaining_s: float) -> datetime | None:
        window_h = (self.deadline - now).total_seconds() / 3600
        remaining_h = remaining_s / 3600
        if remaining_h >= window_h:
            return None
        per_step_j = self.state["step_energy_j"] / max(self.state["steps_timed"], 1)
        energy_kwh = max(joules_to_kwh((self.total_steps - step) * per_step_j), 1e-12)
        segments = list(self._covered(now, self.deadline).segments)
        if segments[-1].end < self.deadline:  # the series ends first: plan on what it covers, if the work fits
            if (segments[-1].end - segments[0].start).total_seconds() < remaining_s:
                return None
        plan = plan_window(segments, Job(energy_kwh, remaining_h, self.pause_cost_kwh), self.pue)
        chosen = plan.interruptible.intervals
        # run now if this hour is as clean as the dirtiest hour the plan uses (the plan works on whole
        # hours of the series, so the part of the current hour that is left counts as extra room)
        worst = max(g.intensity_g_per_kwh for g in segments for a, b in chosen if g.start < b and a < g.end)
        if self._intensity_at(now) <= worst or chosen[0][0] <= now:
            return None
        return chosen[0][0]

    def wait(self, until: datetime, stop_requested: Callable[[], bool] = lambda: False,
             tick: Callable[[float, float], None] = lambda done_s, total_s: None) -> Waited:
        """Sleep until ``until`` in the clock's chunks, polling ``stop_requested`` and calling
        ``tick(seconds waited, seconds planned)`` at the start and after every chunk. A Ctrl-C
        (``KeyboardInterrupt``) ends the wait, as a stop request does: the :class:`Waited` says
        ``interrupted`` (:meth:`on_step_begin` raises the Ctrl-C again once the pause is booked)."""
        from greendiff.train import Waited

        start = self.clock.now()
        total_s = max((until - start).total_seconds(), 0.0)
        logger.info("carbon-aware: pausing from %s until %s", start.isoformat(), until.isoformat())
        interrupted = False
        try:
            tick(0.0, total_s)
            while self.clock.now() < until and not (interrupted := stop_requested()):
                self.clock.sleep(min(self.clock.chunk_s, (until - self.clock.now()).total_seconds()))
                tick(min((self.clock.now() - start).total_seconds(), total_s), total_s)
        except KeyboardInterrupt:
            interrupted = True
        return Waited(start, self.clock.now(), interrupted)

    # -- results and resume ------------------------------------------------------------------------------

    def summary(self) -> dict:
        s = self.state
        end = datetime.fromisoformat(s["clock"]) if s["clock"] else None
        return {"policy": "threshold" if self.max_intensity is not None else "schedule",
                "max_intensity_g_per_kwh": self.max_intensity,
                "deadline": self.deadline.isoformat() if self.deadline else None,
                "started": s["start"], "ended": s["clock"],
                "met_deadline": None if self.deadline is None or end is None else end <= self.deadline,
                "pauses": s["pauses"], "waited_h": s["waited_s"] / 3600, "active_h": s["active_s"] / 3600,
                "emissions_g": s["aware_g"], **self._saving(),
                "forced_to_meet_deadline": s["forced"], "intensity_source": self.provider.describe(),
                "method": "each step's energy priced at the intensity of its time; straight-through: the same steps "
                          "back to back from the first step; pauses' checkpoint and idle energy counted as run"}

    def _saving(self) -> dict:
        """Straight-through emissions and the saving against them (g and fraction). A run that never paused ran
        straight through: its own emissions, a saving of exactly 0 (the two pricings' rounding, or the ledger's
        figure against the series', is no saving); a saving within float noise of 0 is 0."""
        aware_g, straight_g = self.state["aware_g"], self.state["straight_g"]
        if self.state["pauses"] == 0 and self.state["waited_s"] == 0:
            return {"straight_through_g": aware_g, "saved_g": 0.0, "saved_frac": 0.0}
        saved_g = straight_g - aware_g
        if abs(saved_g) <= _NOISE * max(abs(straight_g), abs(aware_g)):
            saved_g = 0.0
        return {"straight_through_g": straight_g, "saved_g": saved_g,
                "saved_frac": saved_g / straight_g if straight_g > 0 else 0.0}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state.update(state)
        if state.get("clock") and isinstance(self.clock, SimulatedClock):
            self.clock.t = datetime.fromisoformat(state["clock"])


class _WaitTicks:
    """A wait's ticks: a ledger sample (a long wait keeps the ledger's samples going) and the trainer's progress
    event (``wait``: seconds waited of those planned)."""

    def __init__(self, trainer, until: datetime) -> None:
        self.trainer, self.info = trainer, f"paused for a cleaner grid until {until:%Y-%m-%d %H:%M} UTC"

    def __call__(self, done_s: float, total_s: float) -> None:
        self.trainer.tracker.sample()
        self.trainer.report_progress("wait", done_s, total_s, self.info)


def controller_for(carbon, provider: IntensityProvider, pue: float, total_steps: int) -> CarbonAwareController:
    """The controller a run's ``[carbon]`` config asks for; one-line errors before any work starts.

    Args:
        carbon: A :class:`greendiff.train.CarbonAwareConfig` with ``enabled`` set.
        provider: The run's intensity provider; it must give an hourly series.
    """
    from greendiff.train import parse_utc

    clock = (SimulatedClock(parse_utc(carbon.simulate_start, "--simulate-clock"), carbon.simulated_step_s)
             if carbon.simulate_start else WallClock())
    now = clock.now()
    probe = provider.intensity(now, now + timedelta(hours=1))
    if probe.kind == "static":
        raise UserInputError(f"--carbon-aware needs an hourly intensity series (--grid NAME|FILE.csv or --live uk); "
                             f"the location gives one yearly figure ({probe.source})")
    first, last = provider.coverage()
    real_now = datetime.now(timezone.utc)
    if carbon.simulate_start and last is not None and not first <= real_now < last:
        raise UserInputError(f"a simulated clock with a trace that does not cover today ({first:%Y-%m-%d} to {last:%Y-%m-%d}): "
                             "the ledger prices the real run in real time; use a bundled grid or a year-long trace")
    deadline = parse_utc(carbon.deadline, "--deadline") if carbon.deadline else None
    if deadline is not None and deadline <= now:
        raise UserInputError(f"--deadline {deadline.isoformat()} is not after the start {now.isoformat()}")
    return CarbonAwareController(provider, clock, total_steps, pue, carbon.max_intensity or None, deadline,
                                 carbon.margin, carbon.min_pause_min * 60, carbon.pause_cost_kwh, carbon.recheck_min * 60)
