"""A study created and worked on from Python: its folder, its trials' run directories and ledger rows."""

from __future__ import annotations

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.workflows import StudyJob, new_study, resolve_settings, work_on_study
from tests.workflows.conftest import measurement

BASE = {"model.preset": "nano", "model.block_out_channels": "8,16", "data.dataset": "digits", "data.resolution": "8",
        "optim.batch_size": "16", "optim.sample_steps": "4", "stop.eval_samples": "8", "run.log_every": "1",
        "run.max_steps": "2"}
SPACE = '[space]\n"optim.lr" = { low = 1e-3, high = 1e-2, log = true }\n'


def test_a_pareto_study_runs_each_trial_as_a_run_directory_and_a_ledger_run(tmp_path):
    (tmp_path / "space.toml").write_text(SPACE)
    ledger = tmp_path / "l.sqlite"
    study = new_study(StudyJob(space=tmp_path / "space.toml", trials=2, sets=BASE, mode="pareto", name="s",
                               output_dir=tmp_path / "tune"))
    assert study.folder == tmp_path / "tune" / "s" and (study.folder / "study.toml").is_file()
    assert (study.folder / "space.toml").read_text() == SPACE and study.spec.pruner == "none"
    finished = []
    work_on_study(study, resolve_settings(measurement(ledger)), on_trial_end=finished.append)
    assert [t.number for t in finished] == [0, 1] and [t.state.name for t in finished] == ["COMPLETE", "COMPLETE"]
    assert [t.user_attrs["outcome"]["steps"] for t in finished] == [2, 2]
    runs = Ledger(ledger).list_runs()
    assert sorted(r.assumptions["config"]["tune"]["trial"] for r in runs) == [0, 1]
    assert {(r.kind, r.status) for r in runs} == {("tune-trial", "completed")}
    trial_dirs = sorted((study.folder / "trials").iterdir())
    assert len(trial_dirs) == 2 and all((d / "config.toml").is_file() and (d / "emissions.json").is_file() for d in trial_dirs)


def test_a_study_with_a_bad_space_creates_nothing(tmp_path):
    (tmp_path / "space.toml").write_text("[other]\nx = 1\n")
    with pytest.raises(UserInputError, match=r"expected one \[space\] table"):
        new_study(StudyJob(space=tmp_path / "space.toml", trials=2, sets=BASE, name="s", output_dir=tmp_path / "tune"))
    assert not (tmp_path / "tune").exists()


@pytest.mark.parametrize("fields, error, message", [
    ({"trials": "3"}, TypeError, "StudyJob.trials must be an int"),
    ({"trials": 0}, UserInputError, "--trials must be a positive integer"),
    ({"workers": 0}, UserInputError, "--workers must be >= 1"),
    ({"reports": 0}, UserInputError, "--reports"),
    ({"trial_budget_kwh": float("nan")}, UserInputError, "--trial-budget-kwh must be a finite number"),
    ({"mode": 3}, TypeError, "StudyJob.mode must be a str"),
    ({"sets": ["optim.lr=1"]}, TypeError, "StudyJob.sets must be a Mapping"),
    ({"space": 7}, TypeError, "StudyJob.space must be a Path or str"),
])
def test_a_study_job_checks_its_fields_as_the_cli_checks_its_flags(fields, error, message):
    with pytest.raises(error, match=message):
        StudyJob(**{"space": "space.toml", "trials": 2, **fields})
    assert StudyJob(space="space.toml", trials=2, output_dir="out").output_dir.name == "out"  # str paths are taken


def test_a_study_saves_a_relative_dataset_as_an_absolute_path(tmp_path, monkeypatch):
    """Trials run in their own folders, and workers may start elsewhere: the base config names the data absolutely."""
    from greendiff.data import load_digits
    import numpy as np

    images = load_digits(8).images.numpy()
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "digits.npy", images)
    (tmp_path / "space.toml").write_text(SPACE)
    monkeypatch.chdir(tmp_path)
    study = new_study(StudyJob(space="space.toml", trials=2, sets={**BASE, "data.dataset": "d/digits.npy"},
                               mode="pareto", name="s", output_dir="tune"))
    assert study.spec.base["data"]["dataset"] == str(tmp_path / "d" / "digits.npy")


def test_a_trial_shows_each_evaluation_once_and_keeps_its_location(tmp_path):
    """A budget trial evaluated at its last step: the evaluation reaches the progress once (train_segment adds the
    one TrainerProgress; the trial adds none), and the trial's run directory keeps where it was priced (before, a
    resume, sample or eval of a trial was priced at the world average)."""
    from greendiff.train import EvalEvent
    from greendiff.workflows import RunLocation
    from tests.workflows.test_train import Recorder

    (tmp_path / "space.toml").write_text(SPACE)
    study = new_study(StudyJob(space=tmp_path / "space.toml", trials=1, sets={**BASE, "run.max_steps": "4"},
                               mode="budget", trial_budget_kwh=1.0, reports=2, name="s", output_dir=tmp_path / "tune"))
    progress = Recorder()
    work_on_study(study, resolve_settings(measurement(tmp_path / "l.sqlite")), progress)
    assert progress.bars == [("trial 0", 4)]
    assert [r.step for r in progress.records if isinstance(r, EvalEvent)] == [4]
    (trial_dir,) = (study.folder / "trials").iterdir()
    assert RunLocation.read(trial_dir) == RunLocation(country="FRA")
