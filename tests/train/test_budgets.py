"""Budgets say what they do: an energy budget holds from the first step (no unmetered warm-up), forecast from
the mean energy per step since the first step (the setup before it and its warm-up left out), with room kept
for the closing evaluation; one ``stopped`` record."""

from __future__ import annotations

import json

import pytest

from greendiff.train import train
from tests.train.fakes import ChargedGpu, CostlySetup


@pytest.fixture
def metered(tracker_for):
    """3 kWh for the first step, 1 kWh for each later one."""
    gpu = ChargedGpu(3.0, 1.0)
    return gpu, tracker_for(gpu)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_an_energy_budget_holds_from_the_first_step(tmp_path, tiny_data, tiny_config, metered):
    """3 kWh for the first step, then 1 kWh a step; a 10 kWh budget. After the first step no step is forecast (it
    holds the warm-up), then the next is forecast at the mean since the first (1 kWh): a 9th step would pass it, so
    the run stops at step 8 with 10 kWh. With the old 20-step warm-up the run went on to step 20 (22 kWh, 2.2x)."""
    gpu, tracker = metered
    config = tiny_config(run__max_steps=40, stop__budget_kwh=10.0)  # stop.budget_warmup_steps stays 20
    result = train(config, tmp_path / "run", tiny_data, tracker, objective=gpu.objective)
    summary = tracker.stop("completed")
    assert (result.status, result.step) == ("stopped", 8)
    assert result.stop_reason == "energy budget: 10.0 kWh used, the next step would pass 10.0 kWh"
    assert summary.energy_kwh == pytest.approx(10.0)
    stopped = [r for r in records(tmp_path / "run") if r.get("event") == "stopped"]
    assert stopped == [records(tmp_path / "run")[-1]] == [{"event": "stopped", "step": 8, "reason": result.stop_reason}]


def test_a_first_step_larger_than_the_budget_is_the_only_overrun(tmp_path, tiny_data, tiny_config, metered):
    gpu, tracker = metered
    result = train(tiny_config(run__max_steps=40, stop__budget_kwh=2.0), tmp_path / "run", tiny_data, tracker,
                   objective=gpu.objective)
    assert (result.status, result.step) == ("stopped", 1) and tracker.stop("completed").energy_kwh == pytest.approx(3.0)


def test_the_budget_keeps_room_for_the_closing_evaluation(tmp_path, tiny_data, tiny_config, metered, monkeypatch):
    """Each evaluation costs 2 kWh (charged by the scripted scores): with the closing one reserved, a 14 kWh budget
    stops after step 5 (3 + 4 steps + an evaluation at step 4 = 9 kWh, + a step ~1.8 + 2 reserved > 14 is not
    yet; at step 6: 10 + 1.67 + 2 = 13.67; step 7: 11 + 1.57 + 2 = 14.57 > 14) and the run ends at 13 kWh."""
    import greendiff.evaluate as evaluate_pkg
    from greendiff.evaluate import Quality

    gpu, tracker = metered

    def scored(*args, **kwargs):
        gpu.energy_j += 2.0 * 3.6e6
        return Quality(10.0, 0.0, 0.0, 1.0, 1.0, 8)

    monkeypatch.setattr(evaluate_pkg, "quality", scored)
    config = tiny_config(run__max_steps=40, stop__budget_kwh=14.0, stop__eval_every=4, stop__eval_samples=8,
                         stop__spread_seeds=1, stop__eval_at_end=True)
    result = train(config, tmp_path / "run", tiny_data, tracker, objective=gpu.objective)
    assert (result.status, result.step) == ("stopped", 7) and "the next step and the closing evaluation" in result.stop_reason
    evals = [r for r in records(tmp_path / "run") if r.get("event") == "eval"]
    assert [(r["step"], r.get("final", False)) for r in evals] == [(4, False), (7, True)]
    assert evals[-1]["energy_kwh"] == pytest.approx(13.0)  # within the 14 kWh budget


def test_the_setup_before_the_first_step_is_not_forecast_as_a_step(tmp_path, tiny_data, tiny_config, tracker_for):
    """Review #1: 6 kWh of reference features, 1 kWh a step, a 13 kWh budget. The run used to stop at step 1 with
    7 kWh ("the next step would pass 13 kWh": the setup counted in the first step's forecast) though 6 more steps
    fit; it stops at step 7 with 13 kWh."""
    gpu = ChargedGpu(1.0, 1.0)
    tracker = tracker_for(gpu)
    config = tiny_config(run__max_steps=40, stop__budget_kwh=13.0, stop__eval_at_end=True, stop__eval_samples=8,
                         stop__spread_seeds=1)
    result = train(config, tmp_path / "run", tiny_data, tracker, objective=gpu.objective, evaluator=CostlySetup(gpu, 6.0))
    assert (result.status, result.step) == ("stopped", 7)
    assert result.stop_reason == "energy budget: 13.0 kWh used, the next step would pass 13.0 kWh"
    assert tracker.stop("completed").energy_kwh == pytest.approx(13.0)


def test_the_first_steps_warmup_is_not_forecast_as_the_next_step(tmp_path, tiny_data, tiny_config, metered):
    """3 kWh for the first step (warm-up), 1 after, a 5 kWh budget: the run used to stop at step 1 with 3 kWh (the
    next step forecast at 3); the first step forecasts nothing, the second measures 1 kWh a step: step 3, 5 kWh."""
    gpu, tracker = metered
    result = train(tiny_config(run__max_steps=40, stop__budget_kwh=5.0), tmp_path / "run", tiny_data, tracker,
                   objective=gpu.objective)
    assert (result.status, result.step) == ("stopped", 3)
    assert tracker.stop("completed").energy_kwh == pytest.approx(5.0)
