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
