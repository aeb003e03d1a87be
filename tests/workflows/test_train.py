"""The training workflow, called from Python: typed job in, typed outcome out, no CLI."""

from __future__ import annotations

import json

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.train import LogEvent, read_toml
from greendiff.workflows import NullProgress, SegmentStart, TrainJob, run_train
from tests.workflows.conftest import TINY, measurement


class Recorder(NullProgress):
    """A progress that keeps what it was told."""

    def __init__(self) -> None:
        self.bars, self.records, self.ended = [], [], 0

    def on_start(self, label: str, total: int) -> None:
        self.bars.append((label, total))

    def on_log(self, event) -> None:
        self.records.append(event)

    def on_end(self) -> None:
        self.ended += 1


def test_run_train_returns_the_outcome_and_writes_the_run_directory(tmp_path):
    ledger = tmp_path / "l.sqlite"
    progress = Recorder()
    job = TrainJob(overrides={**TINY, "run.max_steps": 4, "run.output_dir": str(tmp_path / "runs"), "run.name": "py"},
                   measurement=measurement(ledger))
    outcome = run_train(job, progress)
    assert (outcome.status, outcome.step, outcome.stop_reason, outcome.finished) == ("completed", 4, "", True)
    assert outcome.run_dir.parent == tmp_path / "runs" and outcome.run_dir.name.endswith("-py")
    assert read_toml(outcome.run_dir / "config.toml")["run"]["max_steps"] == 4
    emissions = json.loads((outcome.run_dir / "emissions.json").read_text())
    assert emissions["ledger_run_ids"] == [outcome.summary["run_id"]] and emissions["stop_reason"] == "max_steps reached"
    (row,) = Ledger(ledger).list_runs()
    assert (row.id, row.kind, row.status) == (outcome.summary["run_id"], "train", "completed")
    assert progress.bars == [("train", 4)] and progress.ended == 1
    start = progress.records[0]
    assert isinstance(start, SegmentStart) and (start.preset, start.batch_size, start.event.step) == ("nano", 16, 0)
    assert [type(r) for r in progress.records[1:]] == [LogEvent, LogEvent]
    assert [r.step for r in progress.records[1:]] == [2, 4]


def test_a_resumed_run_continues_to_the_new_max_steps_and_lists_both_segments(tmp_path):
    ledger = tmp_path / "l.sqlite"
    first = run_train(TrainJob(overrides={**TINY, "run.max_steps": 2, "run.output_dir": str(tmp_path / "runs")},
                               measurement=measurement(ledger)))
    second = run_train(TrainJob(overrides={"run.max_steps": 4}, resume=first.run_dir, measurement=measurement(ledger)))
    assert (second.run_dir, second.step, second.status) == (first.run_dir, 4, "completed")
    emissions = json.loads((first.run_dir / "emissions.json").read_text())
    assert emissions["ledger_run_ids"] == [first.summary["run_id"], second.summary["run_id"]]
    assert [r.status for r in Ledger(ledger).list_runs()] == ["completed", "completed"]


def test_bad_input_is_refused_before_anything_is_created(tmp_path):
    from greendiff.workflows import MeasurementOptions

    runs, ledger = tmp_path / "runs", tmp_path / "l.sqlite"
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "config.toml").write_text("")
    with pytest.raises(UserInputError, match=r"only --max-steps may change \(got optim.lr\)"):
        run_train(TrainJob(overrides={"optim.lr": 1e-3}, resume=saved, measurement=measurement(ledger)))
    with pytest.raises(UserInputError, match="no config.toml"):
        run_train(TrainJob(resume=tmp_path / "missing", measurement=measurement(ledger)))
    with pytest.raises(UserInputError, match="XXX"):
        run_train(TrainJob(overrides={**TINY, "run.output_dir": str(runs)},
                           measurement=MeasurementOptions(country="XXX", ledger=ledger)))
    assert not runs.exists() and not ledger.exists() and sorted(p.name for p in saved.iterdir()) == ["config.toml"]
