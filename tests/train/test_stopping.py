from __future__ import annotations

import json

from greendiff.train._callbacks import Stop, StepOutcome
from greendiff.train._stopping import StopCallback, StoppingRules


def feed(rules, values, kwh_per_eval=1.0):
    for i, v in enumerate(values):
        reason = rules.on_eval(step=(i + 1) * 10, energy_kwh=(i + 1) * kwh_per_eval, value=v)
        if reason:
            return i, reason
    return None, None


def test_patience_and_min_delta():
    rules = StoppingRules(patience=2, min_delta=0.5)
    index, reason = feed(rules, [10, 8, 7.8, 7.7, 5])
    # 7.8 and 7.7 are improvements too small for patience, but the best checkpoint still follows them
    assert index == 3 and "no improvement of more than 0.5 in 2 evaluations (best 7.7 at step 40)" in reason
    assert rules.is_best


def test_improvements_reset_patience():
    assert feed(StoppingRules(patience=2), [10, 9, 9.5, 8, 8.5, 7, 6])[0] is None


def test_target_stops_at_once():
    index, reason = feed(StoppingRules(target=7.0), [10, 8, 6.9, 5])
    assert index == 2 and reason.startswith("target reached: 6.9")


def test_energy_aware_rule_uses_gain_per_kwh():
    # gains per kWh over the last 2 evaluations: (10-6)/2=2, (8-5)/2=1.5, (6-4.9)/2=0.55 < 1 -> stop
    index, reason = feed(StoppingRules(min_gain_per_kwh=1.0, gain_window=2), [10, 8, 6, 5, 4.9])
    assert index == 4 and "improvement per kWh fell to 0.55" in reason


def test_best_tracking():
    rules = StoppingRules()
    rules.on_eval(10, 1.0, 5.0)
    assert rules.is_best
    rules.on_eval(20, 2.0, 6.0)
    assert not rules.is_best and rules.best_step == 10


def test_energy_budget_stops_before_passing_it_by_more_than_a_step():
    rules = StoppingRules(budget_kwh=1.0, warmup_steps=5)
    stopped = None
    for step in range(1, 1000):
        energy = step * 0.013  # a fake meter: 0.013 kWh per step
        stopped = rules.on_step(step, energy, emissions_kg=energy * 0.4)
        if stopped:
            break
    assert "energy budget" in stopped
    assert step * 0.013 <= 1.0 < (step + 1) * 0.013 + 1e-12  # the next step would have passed it


def test_carbon_budget_and_forecast():
    rules = StoppingRules(budget_kgco2e=0.1, warmup_steps=3, uncertainty_frac=0.2)
    assert rules.forecast(1, 0.01, 0.5, 100) is None
    for step in range(1, 100):
        reason = rules.on_step(step, step * 0.01, emissions_kg=step * 0.01 * 0.5)
        if reason:
            break
    assert "carbon budget" in reason and step == 20  # 20 steps emit 0.1 kg; a 21st would pass the budget
    f = rules.forecast(10, 0.1, 0.05, 100)
    assert abs(f.energy_kwh - 1.0) < 1e-9 and abs(f.emissions_kg - 0.5) < 1e-9 and f.energy_kwh_high > f.energy_kwh


def test_carbon_budget_prices_the_next_step_at_the_latest_steps_intensity():
    """1 kWh per step, 0.1 kg/kWh for 6 steps, then 0.4: the next step is forecast at 0.4, not at the run's
    average (0.22 kg per step at step 10), so the run stops at 2.2 kg, before a step that would pass 2.5."""
    rules = StoppingRules(budget_kgco2e=2.5, warmup_steps=2)
    emitted = 0.0
    for step in range(1, 100):
        emitted += 0.1 if step <= 6 else 0.4
        if rules.on_step(step, float(step), emitted):
            break
    assert step == 10 and abs(emitted - 2.2) < 1e-9 and abs(rules.kg_per_kwh_now - 0.4) < 1e-9
    assert rules.steps_within_budget(10, 10.0, 2.2) == 10  # 0.3 kg left, 0.4 per step: none
    f = rules.forecast(10, 10.0, 2.2, 20)
    assert abs(f.emissions_kg - (2.2 + 10 * 0.4)) < 1e-9


def test_state_survives_resume():
    rules = StoppingRules(patience=3)
    feed(rules, [10, 8, 9])
    restored = StoppingRules(patience=3)
    restored.load_state_dict(json.loads(json.dumps(rules.state_dict())))
    assert restored.state_dict() == rules.state_dict()
    assert restored.on_eval(40, 4.0, 9.5) is None and restored.on_eval(50, 5.0, 9.5) is not None


class FakeTrainer:
    """What :class:`StopCallback` asks of the trainer: energy and emissions so far (0.1 kWh and 0.05 kg per
    step), scripted evaluations, and the events and checkpoints it raises."""

    def __init__(self, scores, answer=None):
        self.step, self.scores, self.answer = 0, iter(scores), answer
        self.events, self.best, self.horizons = [], [], []

    def energy_so_far_j(self):
        return self.step * 0.1 * 3.6e6

    def emissions_so_far_kg(self):
        return self.step * 0.05

    def evaluate(self, seeds):
        return {"fid": next(self.scores), "seeds": seeds}

    def emit(self, event):
        self.events.append(event.to_dict())
        return Stop(reason) if event.hook == "on_evaluation" and self.answer and (reason := self.answer(event.to_dict())) else None

    def save_checkpoint(self, step, name=None):
        self.best.append((step, name))

    def set_lr_horizon(self, steps):
        self.horizons.append(steps)


def make_callback(rules, **kw):
    args = {"max_steps": 100, "metric": "fid", "eval_every": 0, "eval_every_kwh": 0.0, "spread_seeds": 3, **kw}
    return StopCallback(rules, **args)


def run_steps(cb, trainer, steps):
    reasons = []
    for step in steps:
        trainer.step = step
        answer = cb.on_step_end(trainer, StepOutcome(step, 0.1, True, 16))
        reasons.append(answer.reason if answer else None)
    return reasons


def test_callback_evaluates_on_a_kwh_schedule_and_keeps_the_best():
    trainer = FakeTrainer([10.0, 8.0, 9.0, 9.5])
    cb = make_callback(StoppingRules(patience=2), eval_every_kwh=0.25)
    reasons = run_steps(cb, trainer, range(1, 13))
    evals = [e for e in trainer.events if e["event"] == "eval"]
    # 0.1 kWh per step, an evaluation each 0.25 kWh used since the last one: after steps 3, 6, 9, 12
    assert [e["step"] for e in evals] == [3, 6, 9, 12]
    assert [e["seeds"] for e in evals] == [3, 1, 1, 1]  # the first also measures the seed spread
    assert all(e["eval_energy_kwh"] == 0.0 for e in evals)  # the fake meter does not move during an evaluation
    assert trainer.best == [(3, "best"), (6, "best")] and [e["best"] for e in evals] == [True, True, False, False]
    assert reasons[:11] == [None] * 11 and reasons[11].startswith("no improvement")


class CostlyEvalTrainer(FakeTrainer):
    """Each evaluation uses 0.4 kWh of its own: more than the 0.25 kWh evaluation interval."""

    def __init__(self, scores):
        super().__init__(scores)
        self.eval_kwh = 0.0

    def energy_so_far_j(self):
        return (self.step * 0.1 + self.eval_kwh) * 3.6e6

    def evaluate(self, seeds):
        self.eval_kwh += 0.4
        return super().evaluate(seeds)


def test_an_evaluation_s_own_energy_does_not_count_toward_the_next_interval():
    trainer = CostlyEvalTrainer([10.0, 9.0, 8.0, 7.0])
    cb = make_callback(StoppingRules(), eval_every_kwh=0.25)
    run_steps(cb, trainer, range(1, 10))
    evals = [e for e in trainer.events if e["event"] == "eval"]
    # 0.25 kWh of training between evaluations (3 steps of 0.1), whatever the evaluations cost: steps 3, 6, 9,
    # not an evaluation after every step once the first one has used more than the interval
    assert [e["step"] for e in evals] == [3, 6, 9]
    assert [round(e["eval_energy_kwh"], 9) for e in evals] == [0.4, 0.4, 0.4]


def test_callback_skips_steps_whose_update_was_skipped():
    trainer = FakeTrainer([10.0])
    cb = make_callback(StoppingRules(), eval_every=1)
    trainer.step = 1
    assert cb.on_step_end(trainer, StepOutcome(1, float("nan"), False, 16)) is None and trainer.events == []


def test_callback_state_resumes_the_evaluation_schedule():
    trainer = FakeTrainer([10.0, 8.0, 9.0])
    cb = make_callback(StoppingRules(patience=3), eval_every_kwh=0.25)
    run_steps(cb, trainer, range(1, 5))
    state = json.loads(json.dumps(cb.state_dict()))
    restored = make_callback(StoppingRules(patience=3), eval_every_kwh=0.25)
    restored.load_state_dict(state)
    assert json.loads(json.dumps(restored.state_dict())) == state
    # resumed after step 4; the last evaluation was at step 3 (0.3 kWh): the next is due 0.25 kWh later
    again = FakeTrainer([7.0])
    assert run_steps(restored, again, [5]) == [None] and restored.rules.history[-1][0] == 3
    assert run_steps(restored, again, [6]) == [None] and restored.rules.history[-1][0] == 6
    assert abs(restored.rules.history[-1][1] - 0.6) < 1e-9


def test_callback_reports_the_budget_forecast_once():
    trainer = FakeTrainer([])
    cb = make_callback(StoppingRules(budget_kwh=4.95, warmup_steps=4))
    reasons = run_steps(cb, trainer, range(1, 60))
    forecasts = [e for e in trainer.events if e["event"] == "forecast"]
    assert len(forecasts) == 1 and forecasts[0]["step"] == 4 and abs(forecasts[0]["energy_kwh"] - 10.0) < 1e-9
    assert abs(forecasts[0]["emissions_kg"] - 5.0) < 1e-9  # 0.5 kg per kWh, as the fake ledger accounts
    first_stop = next(i for i, r in enumerate(reasons) if r)
    assert first_stop + 1 == 49 and "energy budget" in reasons[first_stop]  # 4.9 kWh used; step 50 would pass 4.95


def test_callback_loads_a_rules_only_state_from_older_checkpoints():
    rules = StoppingRules(patience=2)
    feed(rules, [10, 8])
    cb = make_callback(StoppingRules(patience=2))
    cb.load_state_dict(json.loads(json.dumps(rules.state_dict())))
    assert cb.rules.best_value == 8 and cb.last_eval_kwh == 2.0  # the schedule restarts at the last evaluation


def test_callback_moves_the_schedule_horizon_to_where_the_budget_runs_out():
    trainer = FakeTrainer([])
    cb = make_callback(StoppingRules(budget_kwh=4.95, warmup_steps=4), fit_schedule=True)
    run_steps(cb, trainer, range(1, 8))
    # 0.1 kWh per step: 4.95 kWh lasts until step 49 (not 50); none during the 4 warm-up steps
    assert trainer.horizons == [49] * 4
    capped = FakeTrainer([])
    run_steps(make_callback(StoppingRules(budget_kwh=100.0, warmup_steps=2), fit_schedule=True), capped, [1, 2])
    assert capped.horizons == [100]  # never past max_steps


def test_callback_lets_a_tuner_stop_the_run_and_evaluates_at_the_end():
    told = []
    trainer = FakeTrainer([10.0, 12.0, 7.0], answer=lambda event: told.append(event["fid"]) or ("pruned" if event["fid"] > 11 else None))
    cb = make_callback(StoppingRules(), eval_every=2, eval_at_end=True)
    assert run_steps(cb, trainer, range(1, 5)) == [None, None, None, "pruned"] and told == [10.0, 12.0]
    trainer.step = 5
    assert cb.final(trainer, 5) is None  # a pruned run needs no final score
    cb.stopped_by_tuner = False
    cb.on_final(trainer, "stopped")
    final = trainer.events[-1]
    assert final["final"] and final["fid"] == 7.0 and told == [10.0, 12.0, 7.0]
    assert cb.final(trainer, 5) is None  # the step was just evaluated


def test_the_budget_forecasts_from_the_segments_own_steps():
    """6 kWh of setup before the first step, 1 kWh a step, a 13 kWh budget: the first step forecasts nothing (it
    used to forecast 7 kWh, setup included, and stop at 7 kWh); later ones 1 kWh: the run stops at step 7, 13 kWh."""
    rules = StoppingRules(budget_kwh=13.0)
    rules.begin(0, 6.0)
    reasons = [rules.on_step(step, 6.0 + step, 0.0) for step in range(1, 9)]
    assert reasons[:6] == [None] * 6
    assert reasons[6] == "energy budget: 13.0 kWh used, the next step would pass 13.0 kWh"


def test_stop_reasons_print_fixed_point_numbers_with_units():
    """Tiny budgets and metrics read as people read them (they printed "5e-05 kWh" and "4e-05" before)."""
    rules = StoppingRules(budget_kwh=5e-5, budget_kgco2e=0.0)
    rules.begin(0, 0.0)
    assert rules.on_step(1, 6e-5, 3e-8) == "energy budget: 60.0 mWh used, the next step would pass 50.0 mWh"
    carbon = StoppingRules(budget_kgco2e=2e-8)
    carbon.begin(0, 0.0)
    assert carbon.on_step(1, 6e-5, 3e-8) == "carbon budget: 0.0300 mg CO2e emitted, the next step would pass 0.0200 mg CO2e"
    index, reason = feed(StoppingRules(target=5e-5), [1e-3, 4e-5])
    assert reason == "target reached: 0.00004 <= 0.00005 at step 20"
