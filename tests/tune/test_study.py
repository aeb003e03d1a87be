from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys

import optuna
import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import process_alive
from greendiff.tune import (
    StateTotals, create_study, load_study, make_objective, open_storage, redact, run_worker, summarize_study, trial_rows,
)
from greendiff.tune._study import counts, exported_config, fail_dead_trials, trial_config
from tests.tune.conftest import ScriptedRunner


def storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 'study.db'}")


def by_lr(bad_lr: float):
    """Good trials improve from ~10; the trial at ``bad_lr`` stays at ~50."""
    def script(config):
        offset = 40.0 if config.optim.lr == bad_lr else 0.0
        return [10.0 + offset, 9.0 + offset, 8.0 + offset, 7.0 + offset + config.optim.lr]
    return script


def test_a_four_trial_study_finishes_and_its_spec_travels_with_it(tmp_path, spec):
    study = create_study(spec(), storage(tmp_path), "s")
    runner = ScriptedRunner(by_lr(bad_lr=-1.0))
    assert run_worker(study, make_objective(spec(), spec().params, tmp_path, runner), 4) == 4
    assert counts(study) == {"COMPLETE": 4}
    loaded, loaded_spec = load_study(storage(tmp_path), "s")
    assert loaded_spec == spec() and len(loaded.trials) == 4
    assert all(1e-4 <= c.optim.lr <= 1e-2 for c in runner.configs)
    assert loaded.best_value == pytest.approx(7.0 + min(c.optim.lr for c in runner.configs))
    t = loaded.trials[0]
    assert t.user_attrs["ledger"]["run_id"] == 101 and t.user_attrs["outcome"]["energy_kwh"] == 4.0
    assert t.user_attrs["worker"]["pid"] == os.getpid()


def test_the_pruner_stops_a_scripted_bad_trial_and_the_saving_is_counted(tmp_path, spec):
    spec = functools.partial(spec, base_trial=False)
    study = create_study(spec(), storage(tmp_path), "s")
    for lr in (1e-3, 2e-3, 5e-3, 3e-3):
        study.enqueue_trial({"optim.lr": lr})
    run_worker(study, make_objective(spec(), spec().params, tmp_path, ScriptedRunner(by_lr(bad_lr=5e-3))), 4)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    pruned = study.trials[2]
    assert pruned.intermediate_values == {1: 50.0} and "median pruner after evaluation 1" in pruned.user_attrs["outcome"]["stop_reason"]
    summary = summarize_study(spec(), trial_rows(study))
    assert summary.by_state["PRUNED"] == StateTotals(1, 1.0, 0.5)
    assert summary.energy_kwh == 13.0 and summary.no_pruning_estimate_kwh == 16.0
    assert summary.pruning_saving_frac == pytest.approx(3 / 16) and summary.best_trial == 0


def test_trial_config_applies_the_study_settings(tmp_path, spec):
    config = trial_config(spec(reports=4, trial_budget_kwh=2e-3), {"optim.lr": 3e-3}, 7, tmp_path / "trials")
    assert config.optim.lr == 3e-3 and config.model.preset == "nano" and config.run.name == "trial-0007"
    assert config.stop.budget_kwh == 2e-3 and config.stop.eval_every_kwh == pytest.approx(5e-4)
    assert config.stop.eval_at_end and config.stop.spread_seeds == 1 and config.stop.eval_every == 0
    assert config.run.sample_every == config.run.checkpoint_every == config.run.max_steps  # nothing in between
    pareto = trial_config(spec(mode="pareto", pruner="none", trial_budget_kwh=0.0), {"optim.lr": 3e-3}, 1, tmp_path)
    assert pareto.stop.eval_every_kwh == 0 and pareto.stop.budget_kwh == 0 and pareto.stop.eval_at_end
    exported = exported_config(spec(), {"optim.lr": 3e-3}, steps=123)
    assert exported.run.max_steps == 123 and exported.stop.budget_kwh == 0 and not exported.stop.eval_at_end


def test_trials_of_a_dead_worker_are_marked_failed_and_queued_again(tmp_path, spec):
    study = create_study(spec(), storage(tmp_path), "s")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    trial = study.ask()
    lr = spec().params[0].suggest(trial)
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": gone.pid, "started_unix_s": 0.0})
    live = study.ask()
    spec().params[0].suggest(live)
    live.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "started_unix_s": 1e18})
    assert fail_dead_trials(study, process_alive) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "WAITING"]
    assert study.trials[0].user_attrs["fail_reason"] == "its worker process died"
    retry = study.trials[2]
    assert retry.params == {} and retry.system_attrs["fixed_params"] == {"optim.lr": lr} and retry.user_attrs["retry_of"] == 0


def test_a_worker_gives_up_after_three_failed_trials_in_a_row(tmp_path, spec):
    def diverges(config, pruner, on_start):
        raise UserInputError("training diverged: 20 non-finite losses in a row at step 3")

    study = create_study(spec(), storage(tmp_path), "s")
    with pytest.raises(UserInputError, match="3 trials in a row failed; the last: training diverged"):
        run_worker(study, make_objective(spec(), spec().params, tmp_path, diverges), 4)
    assert counts(study) == {"FAIL": 3}


def test_storage_errors_are_one_line_and_hide_the_password(tmp_path):
    with pytest.raises(UserInputError, match="folder .* does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(UserInputError) as err:
        open_storage("postgresql://alice:s3cret@127.0.0.1:1/studies")
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)
    assert redact("postgresql://alice:s3cret@db.example/x") == "postgresql://***@db.example/x"
    with pytest.raises(UserInputError, match="use an SQLAlchemy URL"):
        open_storage("just-a-name")
    journal = open_storage(f"journal:{tmp_path / 's.journal'}")
    assert isinstance(journal, optuna.storages.JournalStorage)


def test_a_study_name_is_not_reused(tmp_path, spec):
    create_study(spec(), storage(tmp_path), "s")
    with pytest.raises(UserInputError, match="already exists"):
        create_study(spec(), storage(tmp_path), "s")
    with pytest.raises(UserInputError, match="no study named 't'"):
        load_study(storage(tmp_path), "t")


def test_a_resumed_session_does_not_replay_the_first_sessions_draws(tmp_path, spec):
    runner = ScriptedRunner(by_lr(bad_lr=-1.0))
    study = create_study(spec(), storage(tmp_path), "s")
    run_worker(study, make_objective(spec(), spec().params, tmp_path, runner), 2)
    resumed, _ = load_study(storage(tmp_path), "s")  # a new process: a fresh sampler
    run_worker(resumed, make_objective(spec(), spec().params, tmp_path, runner), 4)
    second_worker, _ = load_study(storage(tmp_path), "s", worker_slot=2)
    run_worker(second_worker, make_objective(spec(), spec().params, tmp_path, runner), 5)
    lrs = [c.optim.lr for c in runner.configs]
    assert len(lrs) == 5 and len(set(lrs)) == 5, lrs  # random startup draws: none repeated


def test_the_first_trial_is_the_base_config_where_the_space_allows(tmp_path, spec):
    space = {**{"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "optim.batch_size": {"choices": [8, 32]},
             "optim.warmup_steps": {"low": 0, "high": 100, "step": 25}, "model.preset": {"choices": ["pico", "nano"]}}
    s = spec(space=space)
    study = create_study(s, storage(tmp_path), "s")
    runner = ScriptedRunner(by_lr(bad_lr=-1.0))
    run_worker(study, make_objective(s, s.params, tmp_path, runner), 1)
    first = study.trials[0]
    # the base: nano (lr 2e-3 from the preset), warm-up 25, batch 16 (not a choice here: sampled)
    assert first.user_attrs["base"] and first.params["optim.lr"] == 2e-3 and first.params["optim.warmup_steps"] == 25
    assert first.params["model.preset"] == "nano" and first.params["optim.batch_size"] in (8, 32)
    summary = summarize_study(s, trial_rows(study))
    assert summary.base_trial == 0 and summary.base_value == first.value
    assert not create_study(spec(base_trial=False), storage(tmp_path), "t").get_trials(deepcopy=False)


def test_a_dead_trials_energy_comes_from_the_ledger(tmp_path, spec):
    from greendiff.workflows._tune_report import ledger_energy as _ledger_energy
    from greendiff.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_id = ledger.start_run("s/trial-0000", "tune-trial", "", {}, [{"key": "cpu", "kind": "cpu", "name": "cpu",
                              "method": "estimate:tdp-cputime", "scope": "process", "uncertainty_frac": 0.3}])
    ledger.add_sample(run_id, 1000.0, 1.0, {"cpu": 0.0})
    ledger.add_sample(run_id, 1010.0, 2.0, {"cpu": 3600.0})  # then the worker was killed: 1 Wh measured
    study = create_study(spec(base_trial=False), storage(tmp_path), "s")
    trial = study.ask()
    spec().params[0].suggest(trial)
    trial.set_user_attr("ledger", {"run_id": run_id, "path": str(tmp_path / "ledger.sqlite"), "host": socket.gethostname()})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    (row,) = trial_rows(study, _ledger_energy(None))
    assert (row.state, row.energy_source, row.energy_kwh) == ("FAIL", "ledger", pytest.approx(1e-3))
    missing = _ledger_energy(None)({"run_id": 1, "path": str(tmp_path / "nope.sqlite"), "host": socket.gethostname()})
    assert missing is None and not (tmp_path / "nope.sqlite").exists()


@pytest.mark.parametrize("name", ["../escaped", "a/b", "..", "-study", "run\nx", "study\x1b[2J", " s", "x" * 101, 'a"b'])
def test_a_study_name_is_one_folder_name(tmp_path, spec, name):
    """A study's name becomes its folder (runs/tune/NAME) and a line in study.toml: refused before the
    storage holds anything."""
    with pytest.raises(UserInputError, match="study name .* is not a usable name") as err:
        create_study(spec(), storage(tmp_path), name)
    assert "\n" not in str(err.value)
    assert optuna.get_all_study_summaries(storage(tmp_path)) == []


def test_a_storage_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    """An exception's message from the storage may span lines (SQLAlchemy adds the statement and a link)."""
    from greendiff.tune import load_study, open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")

    def broken(_storage):
        raise RuntimeError("(sqlite3.DatabaseError) file is not a database\n[SQL: SELECT ...]\n(Background: https://sqlalche.me)")

    monkeypatch.setattr(optuna, "get_all_study_summaries", broken)
    with pytest.raises(UserInputError) as err:
        load_study(storage, "x")
    assert str(err.value) == "cannot read studies from the storage: (sqlite3.DatabaseError) file is not a database"
