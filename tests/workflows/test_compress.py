"""Prune, distill and distill-steps called from Python: their typed outcomes, files and ledger rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.workflows import (
    DistillJob, DistillStepsJob, NullProgress, PruneJob, run_distill, run_distill_steps, run_prune,
)
from tests.workflows.conftest import measurement, trained


def test_run_prune_returns_the_report_it_writes(tmp_path, parent):
    ledger = tmp_path / "l.sqlite"
    outcome = run_prune(PruneJob(run=parent, ratio=0.5, finetune_steps=2, taylor_timesteps=2, eval_samples=0,
                                 output_dir=str(tmp_path / "out"), measurement=measurement(ledger)))
    assert outcome.run_dir.parent == tmp_path / "out" and outcome.report_path == outcome.run_dir / "compression.json"
    report = outcome.report
    written = json.loads(outcome.report_path.read_text())
    assert written == report.to_dict() and list(written) == [
        "parent", "ratio", "importance", "finetune_steps", "finetune_distill", "taylor", "time_refit_residual",
        "parent_model", "pruned_model", "macs_reduction", "params_reduction", "eval", "quality", "energy"]
    assert written["parent_model"]["block_out_channels"] == [16, 32] and report.pruned_model.block_out_channels == (8, 16)
    assert report.taylor.timesteps_used <= 2 and written["quality"] == {"parent": None, "pruned": None, "finetuned": None}
    assert written["eval"] == {"samples": 0, "sampler_steps": report.eval.sampler_steps, "features": "mnist"}
    assert report.energy.ledger_run_id == outcome.summary.run_id and report.energy.eval_kwh == 0.0
    assert written["params_reduction"] == report.parent_model.params / report.pruned_model.params
    (row,) = Ledger(ledger).list_runs()
    assert (row.kind, row.status) == ("prune", "completed")
    for name in ("config.toml", "pruned-unet/config.json", "pipeline/model_index.json", "emissions.json"):
        assert (outcome.run_dir / name).exists(), name


class PipeClosed(NullProgress):
    """The reader of the job's output went away (``greendiff prune ... | head -1``): the first note fails."""

    def note(self, text: str, style: str | None = None) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_prune_killed_before_its_run_is_made_leaves_no_half_made_folder(tmp_path, parent):
    """No folder holding a location.toml alone: location.toml is written with config.toml, and a folder
    whose config.toml was never written is removed."""
    from greendiff.workflows import MeasurementOptions

    with pytest.raises(BrokenPipeError):
        run_prune(PruneJob(run=parent, ratio=0.5, finetune_steps=0, eval_samples=0, output_dir=str(tmp_path / "out"),
                           measurement=MeasurementOptions(no_gpu=True, ledger=tmp_path / "l.sqlite")), PipeClosed())
    assert list((tmp_path / "out").iterdir()) == []
    outcome = run_prune(PruneJob(run=parent, ratio=0.5, finetune_steps=0, eval_samples=0, output_dir=str(tmp_path / "out"),
                                 measurement=measurement(tmp_path / "l.sqlite")))
    assert sorted(p.name for p in outcome.run_dir.glob("*.toml")) == ["config.toml", "location.toml"]


def test_run_distill_trains_a_smaller_student(tmp_path, parent):
    outcome = run_distill(DistillJob(teacher=parent, student_preset="pico", max_steps=2, eval_samples=8,
                                     output_dir=str(tmp_path / "out"), measurement=measurement(tmp_path / "l.sqlite")))
    report = outcome.report
    assert json.loads(outcome.report_path.read_text()) == report.to_dict()
    assert report.steps == 2 and report.params_reduction > 1 and report.eval.samples == 8
    assert set(report.to_dict()["quality"]["student"]) >= {"fid", "kid"} and report.quality_student.quality.n == 8
    assert report.energy.eval_kwh > 0 and report.energy.cost_kwh < report.energy.total_kwh


def test_run_distill_steps_halves_the_steps_each_round(tmp_path, parent):
    outcome = run_distill_steps(DistillStepsJob(teacher=parent, rounds=2, teacher_steps=8, steps_per_round=2,
                                                eval_samples=0, output_dir=str(tmp_path / "out"),
                                                measurement=measurement(tmp_path / "l.sqlite")))
    assert [row.steps for row in outcome.report.rows] == [8, 2, 4, 2]
    assert outcome.report.student == str(outcome.run_dir / "round-2")
    written = json.loads(outcome.report_path.read_text())
    assert written == outcome.report.to_dict() and written["eval"] == {"samples": 0, "features": "mnist"}
    assert "run" not in written["rows"][0] and written["rows"][3]["run"] == str(outcome.run_dir / "round-2")
    assert all((outcome.run_dir / f"round-{k}" / "config.toml").is_file() for k in (1, 2))


def test_a_bad_job_creates_nothing(tmp_path, parent):
    with pytest.raises(UserInputError, match="one of them"):
        run_distill(DistillJob(teacher=parent, output_dir=str(tmp_path / "out"), measurement=measurement(tmp_path / "l")))
    with pytest.raises(UserInputError, match="unknown"):
        run_prune(PruneJob(run=parent, ratio=0.5, sets={"optim.nope": "1"}, output_dir=str(tmp_path / "out"),
                           measurement=measurement(tmp_path / "l")))
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def cond_teacher(tmp_path_factory) -> Path:
    """A class-conditional run (4 steps on the 10 digit classes)."""
    return trained(tmp_path_factory.mktemp("cond"), {"model.conditioning": "class"})


@pytest.mark.parametrize("command", ["distill", "distill-steps"])
def test_a_class_conditional_teacher_is_one_line_from_python_too(tmp_path, cond_teacher, command):
    """The workflow itself says what works instead (the CLI alone did before: Python callers got the config's
    refusal of distill.kind with model.conditioning = class, which names keys they never set)."""
    out, ledger = tmp_path / "out", tmp_path / "l.sqlite"
    job = (DistillJob(teacher=cond_teacher, student_preset="pico", output_dir=str(out), measurement=measurement(ledger))
           if command == "distill" else
           DistillStepsJob(teacher=cond_teacher, rounds=1, output_dir=str(out), measurement=measurement(ledger)))
    with pytest.raises(UserInputError) as err:
        (run_distill if command == "distill" else run_distill_steps)(job)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{command}: --teacher ")
    assert "is class-conditional (10 classes) and distillation takes unconditional teachers only" in message
    assert not out.exists() and (not ledger.exists() or Ledger(ledger).list_runs() == [])


def test_compression_jobs_check_their_fields_as_the_cli_checks_its_flags(tmp_path):
    from greendiff.workflows import MeasurementOptions

    job = PruneJob(run=str(tmp_path / "p"), ratio=0.5, output_dir=tmp_path / "out")
    assert job.run == tmp_path / "p" and job.output_dir == str(tmp_path / "out")
    assert DistillJob(teacher="t", student_init="s").student_init == Path("s")
    with pytest.raises(UserInputError, match=r"^--ratio must be between 0 and 1 \(exclusive\)"):
        PruneJob(run="p", ratio=1.0)
    with pytest.raises(UserInputError, match=r"^--thr must be in \[0, 1\), got 1"):
        PruneJob(run="p", ratio=0.5, thr=1)
    with pytest.raises(UserInputError, match=r"^--eval-samples must be"):
        DistillJob(teacher="t", eval_samples=-1)
    with pytest.raises(UserInputError, match=r"^--rounds must be a positive integer up to 20, got 21"):
        DistillStepsJob(teacher="t", rounds=21)
    with pytest.raises(TypeError, match="^PruneJob.run must be a Path or str, got int 3"):
        PruneJob(run=3, ratio=0.5)
    with pytest.raises(TypeError, match="^PruneJob.finetune_steps must be an int, got bool"):
        PruneJob(run="p", ratio=0.5, finetune_steps=True)
    with pytest.raises(TypeError, match="^DistillJob.feature_weight must be a float, got str"):
        DistillJob(teacher="t", feature_weight="0.1")
    with pytest.raises(TypeError, match="^DistillStepsJob.measurement must be a MeasurementOptions"):
        DistillStepsJob(teacher="t", measurement={"no_gpu": True})
    with pytest.raises(TypeError, match="^DistillStepsJob.sets must be a mapping"):
        DistillStepsJob(teacher="t", sets=["optim.lr=1"])
    assert DistillStepsJob(teacher="t", measurement=MeasurementOptions(no_gpu=True)).teacher == Path("t")
