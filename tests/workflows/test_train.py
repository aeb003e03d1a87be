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


def test_a_resume_of_a_completed_run_is_refused_and_records_nothing(tmp_path):
    """A resume with no steps left would add a "(resumed)" ledger row of 0 steps and shrink emissions.json;
    one line instead, nothing written. A larger --max-steps trains further."""
    ledger = tmp_path / "l.sqlite"
    first = run_train(TrainJob(overrides={**TINY, "run.max_steps": 2, "run.output_dir": str(tmp_path / "runs")},
                               measurement=measurement(ledger)))
    emissions = (first.run_dir / "emissions.json").read_bytes()
    for steps in (None, 2, 1):
        with pytest.raises(UserInputError) as caught:
            run_train(TrainJob(overrides={"run.max_steps": steps}, resume=first.run_dir, measurement=measurement(ledger)))
        assert str(caught.value) == (f"{first.run_dir} already completed at step 2 (run.max_steps {steps or 2}); "
                                     "give --max-steps N (> 2) to train further")
    assert (first.run_dir / "emissions.json").read_bytes() == emissions
    assert [r.id for r in Ledger(ledger).list_runs()] == [first.summary.run_id]
    assert run_train(TrainJob(overrides={"run.max_steps": 3}, resume=first.run_dir, measurement=measurement(ledger))).step == 3


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
    from greendiff.workflows import TrainerProgress
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
    assert set(seen) - {"callbacks", "status"} <= {"resume", "objective", "family"}
    assert seen["family"] is None  # the config's own family (a fine-tune passes its text-to-image one)
    first, second, third, progress, shown = seen["callbacks"]
    assert (first, second, third, type(progress), type(shown)) == (stops, controller, pruner, ProgressCallback,
                                                                   TrainerProgress)
    assert seen["status"] == "failed"
    event = EvalEvent(step=2, energy_kwh=1e-6, eval_energy_kwh=1e-7, scores={"fid": 30.0})
    assert pruner.on_evaluation(None, event) == Stop("pruned by the median pruner after evaluation 1 (fid 30.00)")
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


@pytest.mark.parametrize("given", [None, "override", "file", "file at 8"])
def test_an_image_folder_at_16_px_is_warned_about_unless_the_command_line_chose_it(tmp_path, given):
    """The README path (``train --dry-run > my.toml``, then ``train --config my.toml --dataset imgs/``): the
    dumped file sets resolution = 16, and 32 px images would train at 16 px silently."""
    folder = _folder(tmp_path / "photos")
    config_file = None
    keys = {k: v for k, v in TINY.items() if k != "data.resolution"}
    keys |= {"data.dataset": str(folder), "optim.batch_size": 2, "run.max_steps": 1, "run.output_dir": str(tmp_path / "runs")}
    if given == "override":
        keys["data.resolution"] = 16
    elif given is not None:
        config_file = tmp_path / "my.toml"
        config_file.write_text(f"[data]\nresolution = {8 if given == 'file at 8' else 16}\n")
    progress = Recorder()
    outcome = run_train(TrainJob(config_file=config_file, overrides=keys, measurement=measurement(tmp_path / "l.sqlite")),
                        progress)
    assert outcome.status == "completed"
    warned = [n for n in progress.notes if n[1] == "warning"]
    where = {None: "the default data.resolution", "file": f"data.resolution in {config_file}"}.get(given)
    assert warned == ([] if where is None else [
        (f"the images of {folder} (32 x 32 px) are resized to 16 x 16 pixels, {where}: give --resolution N (or set "
         "data.resolution in the config file) to train at another size", "warning")])


def test_the_first_image_s_size_is_read_from_its_header_passing_hidden_and_other_files(tmp_path):
    from PIL import Image

    from greendiff.workflows._train import first_image_size

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0-notes.txt").write_text("not an image")
    (tmp_path / ".thumbs").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / ".thumbs" / "0.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "a" / "1.jpg")
    assert first_image_size(tmp_path) == (64, 48)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert first_image_size(empty) is None


# -- what the loop does besides its steps reaches the caller's progress (issue 20: nothing long is silent) -------------

def test_in_training_evaluations_reach_the_progress_with_their_sampling(tmp_path):
    """An evaluation every 2 steps of a 4-step run: each is told once, after a row of its sampling, so `greendiff
    train` prints "evaluation at step N: FID ..." (before, the scores went to the loggers alone)."""
    from greendiff.train import EvalEvent, PhaseProgress

    progress = Recorder()
    outcome = run_train(TrainJob(overrides={**TINY, "run.max_steps": 4, "stop.eval_every": 2, "stop.eval_samples": 8,
                                            "run.output_dir": str(tmp_path / "runs")},
                                 measurement=measurement(tmp_path / "l.sqlite")), progress)
    assert outcome.status == "completed"
    kinds = [type(r).__name__ for r in progress.records]
    evaluations = [r for r in progress.records if isinstance(r, EvalEvent)]
    assert [(e.step, e.scores["n"]) for e in evaluations] == [(2, 8), (4, 8)]
    assert all(e.scores["fid"] > 0 for e in evaluations)
    for e in evaluations:  # its sampling shown as a row before its scores, from 0 to every image
        i = progress.records.index(e)
        rows = [r for r in progress.records[:i] if isinstance(r, PhaseProgress)]
        assert rows[0].phase == "eval" and rows[0].done == 0 and rows[-1].done == rows[-1].total > 0
    assert kinds.index("EvalEvent") > kinds.index("LogEvent")  # the step 2 log comes first
    assert progress.bars == [("train", 4)] and progress.ended == 1


def test_a_carbon_aware_pause_reaches_the_progress_with_its_wait(tmp_path):
    """A simulated clock (20 min a step) from 2022-06-01 00:00 UTC over the CISO grid at 250 g/kWh: the pause is told
    when it starts (why, until when), its wait is a row from 0 to 6 h, and its end is told; before, only -v said it."""
    from datetime import datetime, timezone

    from greendiff.train import PauseEvent, PauseStartEvent, PhaseProgress
    from greendiff.workflows import MeasurementOptions

    progress = Recorder()
    overrides = {**TINY, "run.max_steps": 12, "carbon.enabled": True, "carbon.max_intensity": 250,
                 "carbon.simulate_start": "2022-06-01T00:00", "carbon.simulated_step_s": 1200,
                 "run.output_dir": str(tmp_path / "runs")}
    outcome = run_train(TrainJob(overrides=overrides, measurement=MeasurementOptions(
        grid="CISO", no_gpu=True, ledger=tmp_path / "l.sqlite")), progress)
    assert (outcome.status, outcome.step) == ("completed", 12)
    began, until = datetime(2022, 6, 1, 3, tzinfo=timezone.utc), datetime(2022, 6, 1, 9, tzinfo=timezone.utc)
    told = [r for r in progress.records if isinstance(r, (PauseStartEvent, PauseEvent, PhaseProgress))]
    assert told == [
        PauseStartEvent(9, began, until, "the grid is at 270 g/kWh, above the threshold 250 g/kWh"),
        PhaseProgress("wait", 0.0, 21600.0, "paused for a cleaner grid until 2022-06-01 09:00 UTC"),
        PhaseProgress("wait", 21600.0, 21600.0, "paused for a cleaner grid until 2022-06-01 09:00 UTC"),
        PauseEvent(9, began, until, until, False)]
    assert outcome.summary.carbon_aware["pauses"] == 1


def test_a_progress_shown_by_the_callers_own_trainer_progress_is_not_told_twice(tmp_path, monkeypatch):
    """train_segment adds one TrainerProgress per progress: a caller that passes its own for the same progress
    (a tuning trial, say) keeps it alone; one for another progress stays beside it."""
    import greendiff.train
    from greendiff.workflows import TrainerProgress
    from greendiff.workflows._segment import train_segment

    seen = []

    def fake_train(config, run_dir, data, tracker, **kwargs):
        seen.append([cb for cb in kwargs["callbacks"] if isinstance(cb, TrainerProgress)])
        raise RuntimeError("stop here")

    class Tracker:
        def stop(self, status):
            pass

    monkeypatch.setattr(greendiff.train, "train", fake_train)
    progress, other = Recorder(), Recorder()
    config, data = greendiff.train.resolve_config(overrides=TINY), greendiff.data.load_digits(8)
    own = TrainerProgress(progress)
    for given in ((), (own,), (TrainerProgress(other),)):
        with pytest.raises(RuntimeError, match="stop here"):
            train_segment(config, data, tmp_path, Tracker(), progress, callbacks=given)
    assert [[cb.progress for cb in shown] for shown in seen] == [[progress], [progress], [other, progress]]
    assert seen[1] == [own]
