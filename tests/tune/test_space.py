from __future__ import annotations

import optuna
import pytest

from greendiff.errors import UserInputError
from greendiff.tune import StudySpec, check_spec
from greendiff.tune._space import parse_space, tunable_keys
from greendiff.tune._space import Param


def test_flat_and_nested_tables_mean_the_same():
    flat = parse_space({"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "optim.batch_size": {"choices": [16, 32]}})
    nested = parse_space({"optim": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": {"choices": [16, 32]}}})
    assert flat == nested == [Param("optim.lr", "float", 1e-4, 1e-2, log=True), Param("optim.batch_size", "categorical", choices=(16, 32))]


def test_types_follow_the_trainer_config():
    params = {p.key: p for p in parse_space({
        "optim.warmup_steps": {"low": 0, "high": 100, "step": 25}, "optim.snr_gamma": {"low": 1, "high": 8},
        "model.preset": {"choices": ["pico", "nano"]}, "model.block_out_channels": {"choices": [[8, 16], [16, 32]]},
        "optim.ema": {"choices": [True, False]}})}
    assert params["optim.warmup_steps"] == Param("optim.warmup_steps", "int", 0, 100, step=25)
    assert params["optim.snr_gamma"].kind == "float" and params["optim.snr_gamma"].low == 1.0
    assert params["model.block_out_channels"].choices == ((8, 16), (16, 32))
    assert "optim.lr" in tunable_keys() and "run.output_dir" not in tunable_keys()


def test_suggestions_stay_in_range_and_lists_round_trip():
    params = parse_space({"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "optim.warmup_steps": {"low": 0, "high": 100, "step": 25},
                          "model.block_out_channels": {"choices": [[8, 16], [16, 32]]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = {p.key: p.suggest(trial) for p in params}
        assert 1e-4 <= values["optim.lr"] <= 1e-2 and values["optim.warmup_steps"] in (0, 25, 50, 75, 100)
        assert values["model.block_out_channels"] in ((8, 16), (16, 32))
        assert trial.params["model.block_out_channels"] in ("8,16", "16,32")  # how Optuna stores it
        study.tell(trial, 0.0)


BAD = [
    ({}, "no parameters"),
    ({"optim.bogus": {"low": 0, "high": 1}}, "unknown parameter 'optim.bogus'"),
    ({"run.output_dir": {"choices": ["a", "b"]}}, "'run.output_dir' cannot be tuned"),
    ({"optim.lr": {"low": 1e-2, "high": 1e-3}}, "empty range: low (0.01) must be below high (0.001)"),
    ({"optim.lr": {"low": 1e-3, "high": 1e-3}}, "empty range"),
    ({"optim.lr": {"low": 1e-4, "high": 1e-5}}, "low (0.0001) must be below high (0.00001)"),  # not 1e-05
    ({"optim.lr": {"low": -1e-5, "high": 1e-2, "log": True}}, "a log range needs low > 0, got -0.00001"),
    ({"optim.batch_size": {"choices": []}}, "choices must be a non-empty list"),
    ({"optim.lr": {"low": 0.0, "high": 1e-2, "log": True}}, "a log range needs low > 0"),
    ({"optim.lr": {"low": 1e-3}}, "needs both low and high"),
    ({"optim.lr": {"lo": 1e-3, "high": 1}}, "unknown field(s) lo"),
    ({"optim.lr": {"low": 1e-3, "high": 1e-2, "choices": [1e-3]}}, "either choices or low/high"),
    ({"optim.sampler": {"low": 1, "high": 2}}, "optim.sampler is not numeric: give choices = [...] from ddpm, ddim"),
    ({"optim.sampler": {"choices": ["ddim", "euler"]}}, "must be one of ddpm, ddim"),
    ({"optim.batch_size": {"choices": [16, 16]}}, "choices repeat a value"),
    ({"optim.lr": 0.001}, "optim.lr needs a table"),
]


@pytest.mark.parametrize(("table", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_spaces_are_one_line_errors(table, message):
    with pytest.raises(UserInputError) as err:
        parse_space(table, "space.toml")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("spec", "message"), [
    (StudySpec(trial_budget_kwh=0.0, space={"optim.lr": {"low": 1e-3, "high": 1e-2}}), "--trial-budget-kwh must be > 0"),
    (StudySpec(trial_budget_kwh=-1.0, space={"optim.lr": {"low": 1e-3, "high": 1e-2}}), "--trial-budget-kwh must be > 0"),
    (StudySpec(mode="pareto", pruner="median", space={"optim.lr": {"low": 1e-3, "high": 1e-2}}), "pruners do not apply"),
    (StudySpec(trials=0, trial_budget_kwh=1.0, space={"optim.lr": {"low": 1e-3, "high": 1e-2}}), "--trials must be >= 1"),
    (StudySpec(trial_budget_kwh=1.0, pruner="asha", space={"optim.lr": {"low": 1e-3, "high": 1e-2}}), "--pruner must be one of"),
    (StudySpec(trial_budget_kwh=1.0, space={"optim.ema_max_decay": {"low": 0.9, "high": 1.0}}),
     "optim.ema_max_decay = 1.0 is not a valid trainer setting: optim.ema_max_decay must be in (0, 1)"),
    (StudySpec(trial_budget_kwh=1.0, space={"optim.sample_steps": {"low": 10, "high": 2000}}), "cannot exceed"),
])
def test_a_spec_is_checked_against_the_trainer_before_any_trial(spec, message):
    with pytest.raises(UserInputError) as err:
        check_spec(spec)
    assert message in str(err.value)
