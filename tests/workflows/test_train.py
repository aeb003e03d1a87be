"""The training workflow, called from Python: typed job in, typed outcome out, no CLI."""

from __future__ import annotations

import json

import pytest

import greendiff.data

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.train import LogEvent, read_toml
from greendiff.workflows import NullProgress, SegmentStart, TrainJob, run_train
from tests.workflows.conftest import TINY, measurement


class Recorder(NullProgress):
    """A progress that keeps what it was told."""

    def __init__(self) -> None:
        self.bars, self.records, self.ended, self.notes = [], [], 0, []

    def on_start(self, label: str, total: int) -> None:
        self.bars.append((label, total))

    def on_log(self, event) -> None:
        self.records.append(event)

    def on_end(self) -> None:
        self.ended += 1

    def note(self, text: str, style: str | None = None) -> None:
        self.notes.append((text, style))


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
    assert emissions["ledger_run_ids"] == [outcome.summary.run_id] and emissions["stop_reason"] == "max_steps reached"
    (row,) = Ledger(ledger).list_runs()
    assert (row.id, row.kind, row.status) == (outcome.summary.run_id, "train", "completed")
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
    assert emissions["ledger_run_ids"] == [first.summary.run_id, second.summary.run_id]
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


def test_train_segment_hands_everything_to_the_trainer_as_callbacks(tmp_path, monkeypatch):
    """Stop signals, the caller's callbacks (a carbon-aware controller, a tuner's pruner) and the progress reach
    ``train`` in ``callbacks``, in that order; nothing else is passed besides the objective."""
    import greendiff.train
    from greendiff.train import EvalEvent, Stop
    from greendiff.tune import TrialPruner
    from greendiff.workflows import StopSignals
    from greendiff.workflows._segment import ProgressCallback, train_segment

    seen = {}

    def fake_train(config, run_dir, data, tracker, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    class Tracker:
        def stop(self, status):
            seen["status"] = status

    class PruneAtOnce:
        def report(self, value, step):
            seen["reported"] = (value, step)

        def should_prune(self):
            return True

    monkeypatch.setattr(greendiff.train, "train", fake_train)
    controller, stops, pruner = object(), StopSignals(), TrialPruner(PruneAtOnce(), "fid", "budget", "median")
    with pytest.raises(RuntimeError, match="stop here"):
        train_segment(greendiff.train.resolve_config(overrides=TINY), greendiff.data.load_digits(8), tmp_path, Tracker(),
                      callbacks=(controller, pruner), stops=stops)
    assert set(seen) - {"callbacks", "status"} <= {"resume", "objective"}
    first, second, third, progress = seen["callbacks"]
    assert (first, second, third, type(progress)) == (stops, controller, pruner, ProgressCallback)
    assert seen["status"] == "failed"
    event = EvalEvent(step=2, energy_kwh=1e-6, eval_energy_kwh=1e-7, scores={"fid": 30.0})
    assert pruner.on_evaluation(None, event) == Stop("pruned by the median pruner after evaluation 1 (fid 30)")
    assert pruner.pruned_after == 1 and seen["reported"] == (30.0, 1)
    assert stops.should_interrupt() is False


def _folder(root):
    """Six 32 x 32 grey PNGs."""
    import numpy as np
    from PIL import Image

    root.mkdir()
    for i in range(6):
        Image.fromarray(np.full((32, 32), 40 * i, dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("given", [None, "override", "file"])
def test_an_image_folder_at_the_default_resolution_is_warned_about_unless_a_resolution_was_given(tmp_path, given):
    folder = _folder(tmp_path / "photos")
    config_file = None
    keys = {k: v for k, v in TINY.items() if k != "data.resolution"}
    keys |= {"data.dataset": str(folder), "optim.batch_size": 2, "run.max_steps": 1, "run.output_dir": str(tmp_path / "runs")}
    if given == "override":
        keys["data.resolution"] = 16
    elif given == "file":
        config_file = tmp_path / "my.toml"
        config_file.write_text("[data]\nresolution = 16\n")
    progress = Recorder()
    outcome = run_train(TrainJob(config_file=config_file, overrides=keys, measurement=measurement(tmp_path / "l.sqlite")),
                        progress)
    assert outcome.status == "completed"
    warned = [n for n in progress.notes if n[1] == "warning"]
    if given is None:
        assert warned == [(f"the images of {folder} are resized to 16 x 16 pixels, the default data.resolution: give "
                           "--resolution N (or set data.resolution in the config file) to train at another size", "warning")]
    else:
        assert warned == []
