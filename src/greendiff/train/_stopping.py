"""When to stop: quality plateaus, quality targets, and energy/carbon budgets.

:class:`StoppingRules` is the pure decision logic: it is fed evaluations (:meth:`~StoppingRules.on_eval`)
and step totals (:meth:`~StoppingRules.on_step`), each returning a stop reason or ``None``.
:class:`StopCallback` is the trainer's callback around it: it decides when an evaluation is due
(every N steps or every X kWh), runs it through the trainer's evaluator, raises the results and the
budget forecast as events, and asks for the best checkpoint. Both have ``state_dict``/``load_state_dict``,
so a resumed run keeps its history and its evaluation schedule.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from greendiff.display import ENERGY_UNITS, band_text, energy_text, mass_text, plain_number
from greendiff.train._callbacks import Stop
from greendiff.train._events import EvalEvent, ForecastEvent
from greendiff.train._pace import StepEnergy
from greendiff.units import joules_to_kwh

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forecast:
    """Projected totals at ``max_steps`` from the measured energy per step."""

    energy_kwh: float
    emissions_kg: float
    energy_kwh_low: float
    energy_kwh_high: float


class StoppingRules:
    """Early stopping on a lower-is-better metric, and budgets.

    Args:
        patience: Evaluations without an improvement of more than ``min_delta`` before stopping (0: off).
        min_delta: Smallest change that counts as an improvement.
        min_gain_per_kwh: Stop when the metric improved by less than this per kWh over the last
            ``gain_window`` evaluations (0: off).
        target: Stop as soon as the metric is at or below this (0: off).
        budget_kwh / budget_kgco2e: Stop before the next step would exceed them (0: off), from the first
            step: the next step is forecast at the mean energy per step since the segment's first step (the
            segment's own steps only: the setup before the first step, reference features included, and the
            first step's warm-up are left out; evaluations stay in, they recur), with :attr:`reserve_kwh` kept
            for what follows the stop; emissions are the run's as the ledger accounts them (each hour at its own
            intensity, PUE included). After the first step no step is forecast yet (that step holds the
            warm-up): the run stops there only if what it used, and the reserve, already pass a budget. So a
            budget is passed only by a first step larger than it, or by the second step when the first left
            less than a step of room.
        warmup_steps: Steps measured before the forecast of the run's total (:meth:`forecast`) and the
            learning-rate horizon (:meth:`steps_within_budget`) are made: the first steps' warm-up would
            inflate them. The budgets themselves hold from the first step.
        uncertainty_frac: Relative band of the energy figure, for the forecast's range.
        pace: The segment's :class:`~greendiff.train._pace.StepEnergy` (the trainer's, begun just before the
            segment's first step; default: one of its own, begun by :meth:`begin` or the first :meth:`on_step`).
    """

    def __init__(self, patience: int = 0, min_delta: float = 0.0, min_gain_per_kwh: float = 0.0,
                 gain_window: int = 3, target: float = 0.0, budget_kwh: float = 0.0, budget_kgco2e: float = 0.0,
                 warmup_steps: int = 20, uncertainty_frac: float = 0.0, pace: StepEnergy | None = None) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.min_gain_per_kwh, self.gain_window = min_gain_per_kwh, gain_window
        self.target = target
        self.budget_kwh, self.budget_kgco2e = budget_kwh, budget_kgco2e
        self.warmup_steps, self.uncertainty_frac = warmup_steps, uncertainty_frac
        self.history: list[tuple[int, float, float]] = []  # (step, energy_kwh, value)
        self.best_value = math.inf
        self.best_step = -1
        self.patience_reference = math.inf
        self.evals_since_best = 0
        self.pace = pace if pace is not None else StepEnergy()
        self.kg_per_kwh_now = 0.0  # emission factor of the latest step (PUE included)
        self.reserve_kwh = 0.0  # energy kept for after the stop (the closing evaluation), set by the caller
        self._last: tuple[float, float] | None = None  # (energy_kwh, emissions_kg) after the latest step

    # -- quality ----------------------------------------------------------------------------------

    def on_eval(self, step: int, energy_kwh: float, value: float) -> str | None:
        """Record an evaluation; returns the stop reason, if any. ``is_best`` tells whether it improved."""
        self.history.append((step, energy_kwh, value))
        if value < self.best_value:  # the best checkpoint follows any improvement ...
            self.best_value, self.best_step = value, step
        if value < self.patience_reference - self.min_delta:  # ... patience only a large enough one
            self.patience_reference, self.evals_since_best = value, 0
        else:
            self.evals_since_best += 1
        if self.target > 0 and value <= self.target:
            return f"target reached: {plain_number(value, 4)} <= {plain_number(self.target, 4)} at step {step}"
        if self.patience > 0 and self.evals_since_best >= self.patience:
            return (f"no improvement of more than {plain_number(self.min_delta, 4)} in {self.patience} evaluations "
                    f"(best {plain_number(self.best_value, 4)} at step {self.best_step})")
        if self.min_gain_per_kwh > 0 and len(self.history) > self.gain_window:
            (_, e0, v0), (_, e1, v1) = self.history[-1 - self.gain_window], self.history[-1]
            if e1 > e0 and (v0 - v1) / (e1 - e0) < self.min_gain_per_kwh:
                return (f"improvement per kWh fell to {plain_number((v0 - v1) / (e1 - e0), 4)} over the last "
                        f"{self.gain_window} evaluations (< {plain_number(self.min_gain_per_kwh, 4)})")
        return None

    @property
    def is_best(self) -> bool:
        return bool(self.history) and self.best_step == self.history[-1][0]

    # -- budgets ----------------------------------------------------------------------------------

    def begin(self, step: int, energy_kwh: float) -> None:
        """A segment's first step is ``step + 1``, with ``energy_kwh`` used before it (a resumed run: its earlier
        segments; the setup before the step)."""
        self.pace.begin(step, energy_kwh)

    def _warming_up(self, step: int) -> bool:
        """Fewer than ``warmup_steps`` steps of the segment measured (or none)."""
        return self.pace.start is None or step - self.pace.start[0] < self.warmup_steps

    def forecast(self, step: int, energy_kwh: float, emissions_kg: float, max_steps: int) -> Forecast | None:
        """Totals at ``max_steps`` if the measured energy per step (:class:`~greendiff.train._pace.StepEnergy`)
        holds, the rest emitted at the latest step's emission factor; ``None`` during warm-up."""
        projected = None if self._warming_up(step) else self.pace.projected_kwh(step, energy_kwh, max_steps)
        if projected is None:
            return None
        total = projected[0]
        u = self.uncertainty_frac
        emissions = emissions_kg + (total - energy_kwh) * self.kg_per_kwh_now
        return Forecast(total, emissions, total * (1 - u), total * (1 + u))

    def steps_within_budget(self, step: int, energy_kwh: float, emissions_kg: float) -> int | None:
        """The step at which the tightest budget runs out if the energy per step measured so far
        (evaluations included) holds, and the grid stays at the latest step's emission factor; ``None``
        without a budget or during warm-up.

        Example:
            >>> rules = StoppingRules(budget_kwh=1.0, warmup_steps=10)
            >>> rules.on_step(1, 0.01, 0.005) is None
            True
            >>> rules.steps_within_budget(20, 0.2, 0.1)  # 0.01 kWh per step: the budget ends at step 100
            100
        """
        pace = None if self._warming_up(step) or not (self.budget_kwh or self.budget_kgco2e) else self.pace.at(step, energy_kwh)
        if pace is None or pace.kwh_per_step <= 0:
            return None
        per_step = pace.kwh_per_step
        limits = [self.budget_kwh] if self.budget_kwh else []
        if self.budget_kgco2e and self.kg_per_kwh_now > 0:
            limits.append(energy_kwh + (self.budget_kgco2e - emissions_kg) / self.kg_per_kwh_now)
        return step + max(0, math.floor((min(limits) - self.reserve_kwh - energy_kwh) / per_step))

    def on_step(self, step: int, energy_kwh: float, emissions_kg: float) -> str | None:
        """After a step, with the run's energy and emissions so far (the ledger's accounting): stop if the
        next step (and :attr:`reserve_kwh`) would take the run past a budget, from the first step on. The next
        step is forecast at the mean energy per step since the segment's first step
        (:class:`~greendiff.train._pace.StepEnergy`), emitting at the emission factor of the latest step (on an
        hourly grid the intensity of the hour it runs in, not an average over the run). After the first step
        none is forecast (it holds the warm-up, :data:`greendiff.plan.WARMUP_COST`): the run stops only if a
        budget is already passed with the reserve.

        Example:
            >>> rules = StoppingRules(budget_kwh=1.0)
            >>> rules.begin(0, 0.0)
            >>> rules.on_step(1, 0.4, 0.2) is None  # the first step took 0.4 kWh (warm-up): not a forecast
            True
            >>> rules.on_step(2, 0.55, 0.27) is None  # 0.15 kWh a step since the first
            True
            >>> rules.on_step(4, 0.9, 0.45)  # 0.1667 a step: a fifth would pass 1 kWh
            'energy budget: 900 Wh used, the next step would pass 1.00 kWh'
        """
        if not self.pace.begun:  # not begun: a fresh run counts from step 0; a resumed one from its first step
            self.begin(*((0, 0.0) if step <= 1 else (step, energy_kwh)))
        self.pace.record(step, energy_kwh)
        self._measure_factor(energy_kwh, emissions_kg)
        if not (self.budget_kwh or self.budget_kgco2e):
            return None
        pace = self.pace.at(step, energy_kwh)
        per_step = pace.kwh_per_step if pace is not None and not pace.with_warmup else 0.0
        after = " and the closing evaluation" if self.reserve_kwh > 0 else ""
        if self.budget_kwh and energy_kwh + per_step + self.reserve_kwh > self.budget_kwh:
            return (f"energy budget: {energy_text(energy_kwh)} used, the next step{after} would pass "
                    f"{energy_text(self.budget_kwh)}")
        reserve_kg = self.reserve_kwh * self.kg_per_kwh_now
        if self.budget_kgco2e and emissions_kg + per_step * self.kg_per_kwh_now + reserve_kg > self.budget_kgco2e:
            return (f"carbon budget: {mass_text(emissions_kg)} CO2e emitted, the next step{after} would pass "
                    f"{mass_text(self.budget_kgco2e)} CO2e")
        return None

    def _measure_factor(self, energy_kwh: float, emissions_kg: float) -> None:
        """kgCO2e per kWh of the latest step (its emissions over its energy); before one is measured, or
        when a step's energy reads zero, the run's average so far."""
        if self._last is not None and energy_kwh > self._last[0]:
            self.kg_per_kwh_now = (emissions_kg - self._last[1]) / (energy_kwh - self._last[0])
        elif self._last is None and energy_kwh > 0:
            self.kg_per_kwh_now = emissions_kg / energy_kwh
        self._last = (energy_kwh, emissions_kg)

    # -- resume -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"history": self.history, "best_value": self.best_value, "best_step": self.best_step,
                "patience_reference": self.patience_reference, "evals_since_best": self.evals_since_best}

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(h) for h in state["history"]]
        self.best_value, self.best_step = float(state["best_value"]), int(state["best_step"])
        self.patience_reference = float(state["patience_reference"])
        self.evals_since_best = int(state["evals_since_best"])


class StopCallback:
    """Evaluations on a schedule, early stopping and budgets: the trainer's callback around :class:`StoppingRules`.

    After every applied step (``on_step_end``) it checks the budgets against the run's energy and
    emissions so far (``trainer.energy_so_far_j()``, ``trainer.emissions_so_far_kg()``: the ledger's
    accounting), reports the budget forecast once, then runs a due evaluation through
    ``trainer.evaluate(seeds)`` and raises it as an :class:`EvalEvent` (a tuner's pruner answers it),
    saving the best checkpoint on any improvement. Its state travels in checkpoints (key ``stopping``).

    Args:
        rules: The decision logic.
        max_steps: The run's step limit (for the budget forecast).
        metric: The key of the evaluation scores the rules watch (``fid`` or ``kid``).
        eval_every / eval_every_kwh: Evaluation schedule in steps and in kWh (0: off).
        spread_seeds: Seeds of the run's first evaluation, which also reports the metric's spread.
        fit_schedule: Once the budget warm-up is over, end the learning-rate schedule where the budget is
            forecast to run out (``trainer.set_lr_horizon``, at most ``max_steps``).
        eval_at_end: Evaluate once more when the run completes or stops (``on_final``).
    """

    state_key = "stopping"

    def __init__(self, rules: StoppingRules, max_steps: int, metric: str, eval_every: int, eval_every_kwh: float,
                 spread_seeds: int, fit_schedule: bool = False, eval_at_end: bool = False) -> None:
        self.rules, self.max_steps, self.metric = rules, max_steps, metric
        self.eval_every, self.eval_every_kwh, self.spread_seeds = eval_every, eval_every_kwh, spread_seeds
        self.fit_schedule, self.eval_at_end = fit_schedule, eval_at_end
        self.stopped_by_tuner = False
        self.last_eval_kwh = 0.0
        self.forecast_reported = False

    @property
    def budgets(self) -> bool:
        return bool(self.rules.budget_kwh or self.rules.budget_kgco2e)

    def on_step_end(self, trainer, outcome) -> Stop | None:
        if not outcome.updated:
            return None
        reason = self.after_step(outcome.step, trainer)
        return Stop(reason) if reason else None

    def after_step(self, step: int, trainer) -> str | None:
        """After optimizer step ``step``: budgets, then a due evaluation. Returns a stop reason or ``None``."""
        reason = None
        now_kwh = joules_to_kwh(trainer.energy_so_far_j()) if (self.budgets or self.eval_every_kwh) else None  # one read a step
        if self.budgets:
            now_kg = trainer.emissions_so_far_kg()
            if not self.forecast_reported:
                self._report_forecast(trainer, step, now_kwh, now_kg)
            reason = self.rules.on_step(step, now_kwh, now_kg)
            horizon = self.rules.steps_within_budget(step, now_kwh, now_kg) if self.fit_schedule else None
            if horizon is not None:
                trainer.set_lr_horizon(min(self.max_steps, horizon))
        due = (self.eval_every and step % self.eval_every == 0) or \
            (self.eval_every_kwh and now_kwh - self.last_eval_kwh >= self.eval_every_kwh)
        if due:
            event, eval_reason = self._evaluate(trainer, step, joules_to_kwh(trainer.energy_so_far_j())
                                                if now_kwh is None else now_kwh)
            # the next interval counts from the end of this evaluation: an evaluation's own energy is not
            # training, and one costing more than the interval would otherwise trigger another every step
            self.last_eval_kwh = event.energy_kwh
            if self.rules.is_best:
                trainer.save_checkpoint(step, name="best")
            answer = trainer.emit(event)  # every callback is told, even when stopping anyway
            tuner_reason = answer.reason if answer else None
            self.stopped_by_tuner = bool(tuner_reason) and not (reason or eval_reason)
            reason = reason or eval_reason or tuner_reason
        return reason

    def on_final(self, trainer, status: str) -> None:
        if self.eval_at_end:
            self.final(trainer, trainer.step)

    def final(self, trainer, step: int) -> EvalEvent | None:
        """The closing evaluation, unless step ``step`` was just evaluated or a tuner stopped the run (a pruned
        trial needs no final score); raised like the others with ``final=True``. Returns the event (or ``None``)."""
        if self.stopped_by_tuner or (self.rules.history and self.rules.history[-1][0] == step):
            return None
        event, _ = self._evaluate(trainer, step, joules_to_kwh(trainer.energy_so_far_j()), final=True)
        trainer.emit(event)
        return event

    def _evaluate(self, trainer, step: int, before_kwh: float, final: bool = False) -> tuple[EvalEvent, str | None]:
        """One evaluation (the first also measures the seed spread), fed to the rules.
        Returns the event and the rules' stop reason."""
        seeds = self.spread_seeds if not self.rules.history else 1
        scores = trainer.evaluate(seeds)
        used = joules_to_kwh(trainer.energy_so_far_j())  # up to and including this evaluation
        if self.eval_at_end and not final:  # a budget keeps room for the closing evaluation, one seed
            self.rules.reserve_kwh = (used - before_kwh) / seeds
        value = scores.get(self.metric)  # absent: nothing to judge (a fine-tune with no image held out)
        reason = self.rules.on_eval(step, used, value) if value is not None else None
        return EvalEvent(step, used, used - before_kwh, scores, self.rules.is_best, final), reason

    def _report_forecast(self, trainer, step: int, used_kwh: float, emitted_kg: float) -> None:
        projected = self.rules.forecast(step, used_kwh, emitted_kg, self.max_steps)
        if projected is None:
            return
        self.forecast_reported = True
        trainer.emit(ForecastEvent(step, **asdict(projected)))
        budget_kwh, budget_kg = self.rules.budget_kwh, self.rules.budget_kgco2e
        if (budget_kwh and projected.energy_kwh > budget_kwh) or (budget_kg and projected.emissions_kg > budget_kg):
            logger.warning("forecast %s (%s), %s CO2e exceeds the budget: the run will stop early",
                           energy_text(projected.energy_kwh),
                           band_text(projected.energy_kwh_low, projected.energy_kwh_high, ENERGY_UNITS, projected.energy_kwh),
                           mass_text(projected.emissions_kg))

    def state_dict(self) -> dict:
        return {"rules": self.rules.state_dict(), "last_eval_kwh": self.last_eval_kwh,
                "forecast_reported": self.forecast_reported, "reserve_kwh": self.rules.reserve_kwh}

    def load_state_dict(self, state: dict) -> None:
        if "rules" not in state:  # checkpoints written before the callback saved its schedule
            last = state["history"][-1][1] if state["history"] else 0.0
            state = {"rules": state, "last_eval_kwh": last, "forecast_reported": False}
        self.rules.load_state_dict(state["rules"])
        self.last_eval_kwh = float(state["last_eval_kwh"])
        self.forecast_reported = bool(state["forecast_reported"])
        self.rules.reserve_kwh = float(state.get("reserve_kwh", 0.0))  # absent in checkpoints before it was kept
