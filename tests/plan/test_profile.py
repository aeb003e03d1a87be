from __future__ import annotations

import json
import math

import pytest

from greendiff.errors import UserInputError
from greendiff.plan import Forecast, PhaseCosts, forecast, planned_counts, profile_config
from greendiff.train import train


def test_forecast_scales_each_phase_and_states_its_band():
    steps_j = [50.0, 30.0] + [10.0, 12.0, 10.0, 12.0, 10.0, 12.0, 10.0, 12.0]  # two warm-up steps
    costs = PhaseCosts(eval_j=100.0, eval_s=2.0, eval_setup_j=40.0, grid_j=20.0, grid_s=1.0, checkpoint_j=5.0, checkpoint_s=0.5)
    f = forecast(steps_j, [0.1] * 10, costs, (3, 2, 4), steps=1000, meter_uncertainty_frac=0.1, warmup=2)
    per_step = 11.0
    total_j = 1000 * per_step + 3 * 100 + 40 + 2 * 20 + 4 * 5
    assert f.energy_per_step_kwh == pytest.approx(per_step / 3.6e6) and f.energy_kwh == pytest.approx(total_j / 3.6e6)
    assert f.hours == pytest.approx((1000 * 0.1 + 3 * 2 + 2 * 1 + 4 * 0.5) / 3600)
    sem = 1.0690449676496976 / math.sqrt(8)  # stdev of the 8 used steps
    assert f.uncertainty_frac == pytest.approx(math.sqrt(0.1 ** 2 + (2 * sem / per_step) ** 2))  # no drift: halves equal
    assert f.energy_low_kwh == pytest.approx(f.energy_kwh * (1 - f.uncertainty_frac))
    assert f.pause_cost_kwh == pytest.approx(10.0 / 3.6e6)


def test_forecast_counts_energy_triggered_evaluations_and_refuses_short_profiles():
    f = forecast([3.6e3] * 10, [1.0] * 10, PhaseCosts(eval_j=1.0), (0, 1, 2), steps=1000, meter_uncertainty_frac=0,
                 warmup=0, eval_every_kwh=0.25)  # 1 Wh per step: 1 kWh, an evaluation every 0.25 kWh
    assert f.evaluations == 4
    with pytest.raises(UserInputError, match="profile too short"):
        forecast([1.0] * 6, [1.0] * 6, PhaseCosts(), (0, 1, 2), 100, 0.0, warmup=3)


@pytest.mark.parametrize("max_steps, eval_every, at_end", [(10, 4, True), (12, 4, True), (9, 0, True), (7, 3, False)])
def test_planned_counts_match_the_training_loop(tiny_data, tiny_config, tracker, tmp_path, max_steps, eval_every, at_end):
    config = tiny_config(run__max_steps=max_steps, stop__eval_every=eval_every, stop__eval_at_end=at_end,
                         stop__eval_samples=16, stop__spread_seeds=1,
                         run__sample_every=4, run__checkpoint_every=5)
    train(config, tmp_path / "run", tiny_data, tracker)
    summary = tracker.stop()
    phases = {p.name: p.count for p in summary.phases}
    evals, grids, checkpoints = planned_counts(max_steps, eval_every, at_end, 4, 5)
    evaluated = eval_every > 0 or at_end
    assert phases.get("eval", 0) == evals + int(evaluated)  # + the real images' features, once
    periodic = max_steps // eval_every if eval_every else 0  # each may save a "best" checkpoint
    assert phases["sample"] == grids
    assert checkpoints - periodic <= phases["checkpoint"] <= checkpoints
    assert phases["checkpoint"] >= checkpoints - periodic + 1 if periodic else phases["checkpoint"] == checkpoints


def test_profile_config_measures_each_phase_once():
    from greendiff.train import resolve_config

    planned = resolve_config(overrides={"run.max_steps": 5000, "stop.eval_every": 500, "stop.budget_kwh": 1.0, "stop.patience": 3})
    profiled = profile_config(planned, 30)
    assert profiled.run.max_steps == 30 and profiled.run.log_every == 1 and profiled.run.sample_every == 31
    assert profiled.stop.eval_every == 0 and profiled.stop.eval_at_end and profiled.stop.budget_kwh == 0
    assert profiled.stop.patience == 0 and profiled.optim == planned.optim and profiled.model == planned.model
    assert not profile_config(resolve_config(overrides={"run.max_steps": 100}), 30).stop.eval_at_end


def test_forecast_file_round_trip_and_bad_files(tmp_path):
    f = forecast([2.0] * 10, [0.5] * 10, PhaseCosts(checkpoint_j=7.2e3), (1, 1, 2), 100, 0.2, warmup=2)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"forecast": f.to_dict()}))
    assert Forecast.from_file(path) == f
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserInputError, match="not a greendiff profile"):
        Forecast.from_file(tmp_path / "bad.json")
    with pytest.raises(UserInputError, match="no such file"):
        Forecast.from_file(tmp_path / "missing.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # a RecursionError escaped as a traceback
    with pytest.raises(UserInputError, match="deep.json: not a greendiff profile"):
        Forecast.from_file(tmp_path / "deep.json")
    for key, value, message in (("steps", 2.5, "forecast.steps must be a whole number >= 0, at most 1000000000, got 2.5"),
                                ("checkpoints", True, "forecast.checkpoints must be a whole number"),
                                ("hours", "2", "forecast.hours must be a number >= 0, at most 8784, got '2'"),
                                ("device", {"gpu": 1}, "forecast.device must be a string")):
        path.write_text(json.dumps({"forecast": {**f.to_dict(), key: value}}))
        with pytest.raises(UserInputError, match=message):
            Forecast.from_file(path)


def test_a_profile_states_every_energy_in_kwh(tmp_path):
    costs = PhaseCosts(eval_j=7.2e3, grid_j=3.6e3, checkpoint_j=1.8e3)
    f = forecast([3.6e3] * 10, [0.5] * 10, costs, (1, 1, 2), 100, 0.0, warmup=2)
    energies = {k: v for k, v in f.to_dict().items() if "energy" in k or "cost" in k}
    assert all(k.endswith("_kwh") for k in energies), sorted(energies)  # no _j beside _kwh
    assert (f.energy_per_step_kwh, f.energy_per_eval_kwh, f.energy_per_grid_kwh, f.energy_per_checkpoint_kwh) == \
        pytest.approx((1e-3, 2e-3, 1e-3, 5e-4))
    assert f.pause_cost_kwh == pytest.approx(1e-3)  # a checkpoint written and loaded


def test_a_profile_written_with_joules_per_phase_is_still_read(tmp_path):
    f = forecast([3.6e3] * 10, [0.5] * 10, PhaseCosts(eval_j=7.2e3, checkpoint_j=1.8e3), (1, 1, 2), 100, 0.0, warmup=2)
    old = {k: v for k, v in f.to_dict().items() if not k.startswith("energy_per_")}
    old.update(energy_per_step_j=3.6e3, energy_per_eval_j=7.2e3, energy_per_grid_j=0.0, energy_per_checkpoint_j=1.8e3)
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"forecast": old}))
    read = Forecast.from_file(path)
    assert read.energy_per_step_kwh == pytest.approx(1e-3) and read.pause_cost_kwh == pytest.approx(f.pause_cost_kwh)
    assert read.energy_per_eval_kwh == pytest.approx(2e-3) and read.energy_per_grid_kwh == 0.0


def test_a_band_wider_than_the_forecast_ends_at_zero_energy():
    """A noisy profile (rel > 1) wrote a negative low end, which plan window then refused as a profile."""
    steps_j = [1.0, 1.0, 1.0, 1.0, 100.0, 100.0, 100.0, 100.0]  # the second half drifts far from the first
    f = forecast(steps_j, [0.1] * 8, PhaseCosts(), (0, 1, 2), 100, 0.3, warmup=0)
    assert f.uncertainty_frac > 1 and f.energy_low_kwh == 0.0 and f.energy_high_kwh > f.energy_kwh > 0


@pytest.mark.parametrize(("key", "value", "message"), [
    ("energy_kwh", 1e300, "forecast.energy_kwh must be a number >= 0, at most 1000000000, got 1e+300 (1 TWh"),
    ("energy_high_kwh", 2e9, "forecast.energy_high_kwh must be a number >= 0, at most 1000000000, got 2000000000.0"),
    ("hours", 9000.0, "forecast.hours must be a number >= 0, at most 8784, got 9000.0 (a plan covers at most a year)"),
    ("energy_per_checkpoint_kwh", 1e300, "forecast.energy_per_checkpoint_kwh must be a number >= 0, at most 500000000"),
    ("seconds_per_step", 1e300, "forecast.seconds_per_step must be a number >= 0, at most 31622400"),
    ("steps", 10**30, "forecast.steps must be a whole number >= 0, at most 1000000000, got 1000000000000000000000000000000"),
    ("energy_low_kwh", -1.5e-05, "forecast.energy_low_kwh must be a number >= 0, at most 1000000000, got -1.5e-05"),
    ("uncertainty_frac", float("nan"), "forecast.uncertainty_frac must be a finite number, got nan"),
    ("device", "gpu\x1b[2J\nsecond line", None),
])
def test_a_profile_s_numbers_are_read_within_the_flags_ranges(tmp_path, key, value, message):
    """Each number of a profile file has its quantity's range (1e300 kWh passed where --energy-kwh stops at 1e9)."""
    f = forecast([2.0] * 10, [0.5] * 10, PhaseCosts(checkpoint_j=7.2e3), (1, 1, 2), 100, 0.2, warmup=2)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"forecast": {**f.to_dict(), key: value}}))
    if message is None:  # a label: kept on one line, escapes shown
        assert Forecast.from_file(path).device == "gpu\\x1b[2J"
        return
    with pytest.raises(UserInputError) as err:
        Forecast.from_file(path)
    assert str(err.value).startswith(f"--profile {path}: {message}") and "\n" not in str(err.value)


def test_a_profile_with_a_5000_digit_number_or_deep_nesting_is_one_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"forecast": {"steps": ' + "1" * 5000 + "}}")
    with pytest.raises(UserInputError, match=r"p\.json: not a greendiff profile \(ValueError: Exceeds the limit") as err:
        Forecast.from_file(path)
    assert "\n" not in str(err.value)
    path.write_text('{"forecast": {"device": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    with pytest.raises(UserInputError, match=r"p\.json: not a greendiff profile \(nested too deeply\)"):
        Forecast.from_file(path)
    path.write_text('{"forecast": {"hours": 1}}')
    with pytest.raises(UserInputError, match=r"p\.json: not a greendiff profile \(forecast\.energy_kwh is missing\)"):
        Forecast.from_file(path)
