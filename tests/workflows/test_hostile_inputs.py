"""What a hostile tester found in the workflows called from Python: each input refused before anything is
created (no run directory, no ledger row), with the CLI's own message; relative dataset paths; a data failure
mid-run; class accuracy only where the bundled digit classifier means something."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import greendiff.train
from greendiff.data import ImageSet
from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.train import TrainResult, read_toml, resolve_config
from greendiff.workflows import (
    EvalJob, MeasurementOptions, SampleJob, TrainJob, resolve_conditioning, run_eval, run_sample, run_train,
)
from tests.workflows.conftest import TINY, measurement


def nothing_created(root: Path) -> bool:
    """No run directory under ``root/runs`` and no ledger row in ``root/l.sqlite``."""
    ledger = root / "l.sqlite"
    return not (root / "runs").exists() and (not ledger.exists() or Ledger(ledger).list_runs() == [])


def labelled_folder(root: Path, labels: list) -> Path:
    """Images ``0.png``.. with a ``metadata.jsonl`` giving each its ``label``."""
    root.mkdir(parents=True)
    rows = []
    for i, label in enumerate(labels):
        Image.fromarray(np.full((8, 8), 15 * i, dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "label": label}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def cond_job(root: Path, dataset: Path, **keys) -> TrainJob:
    return TrainJob(overrides={**TINY, "model.conditioning": "class", "data.dataset": str(dataset), "data.label_column": "label",
                               "optim.batch_size": 4, "run.max_steps": 2, "run.output_dir": str(root / "runs"), **keys},
                    measurement=measurement(root / "l.sqlite"))


def _images(n: int) -> torch.Tensor:
    return torch.zeros(n, 1, 8, 8, dtype=torch.uint8)


# -- 1. large label ids, 2. classes without images: refused before the run directory --------------------------
@pytest.mark.parametrize("big", [2**40, 1_000_000])
def test_a_label_id_beyond_the_class_limit_is_refused_by_resolve_conditioning_itself(big):
    data = ImageSet(_images(4), "four", labels=torch.tensor([0, 1, big, 1]))
    with pytest.raises(UserInputError, match=rf"class ids up to {big}, so model.num_classes must be >= 0 and at "
                                             rf"most 100000, got {big + 1}$"):
        resolve_conditioning(resolve_config(overrides={"model.conditioning": "class"}), data)


@pytest.mark.parametrize("big", [2**40, 1_000_000])
def test_a_label_id_beyond_the_class_limit_creates_nothing(tmp_path, big):
    folder = labelled_folder(tmp_path / "ds", [0, 1, big, 1, 0, 1, 0, 1])
    with pytest.raises(UserInputError, match=r"100,?000|99,?999") as err:  # ours, or the data's own limit
        run_train(cond_job(tmp_path, folder))
    assert "\n" not in str(err.value) and nothing_created(tmp_path)


def test_class_ids_with_gaps_are_refused_naming_the_empty_classes():
    data = ImageSet(_images(4), "gaps", labels=torch.tensor([3, 7, 3, 7]))
    with pytest.raises(UserInputError, match=r"^--conditioning class: class ids 0, 1, 2, \.\.\. have no images \(6 of 8 "
                                             r"classes empty .*\): class ids must run 0\.\.7 with images in each"):
        resolve_conditioning(resolve_config(overrides={"model.conditioning": "class"}), data)

    class Counted:  # data that counts its own classes (a streamed set need not hold every label in memory)
        labels, num_classes, class_counts = torch.tensor([0, 0]), 2, (2, 0)

    counted = Counted()
    with pytest.raises(UserInputError, match=r"class ids 1 have no images \(1 of 2"):
        resolve_conditioning(resolve_config(overrides={"model.conditioning": "class"}), counted)


def test_class_ids_with_gaps_create_nothing(tmp_path):
    folder = labelled_folder(tmp_path / "ds", [3, 7] * 4)
    with pytest.raises(UserInputError, match=r"class ids 0, 1, 2, \.\.\. have no images"):
        run_train(cond_job(tmp_path, folder))
    assert nothing_created(tmp_path)


# -- 4. jobs checked like the CLI's flags, at construction -------------------------------------------------------
RUN = Path("some-run")


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: SampleJob(run=RUN, n=0), UserInputError, "--samples must be a positive integer up to 100000, got 0"),
    (lambda: SampleJob(run=RUN, n=10**12), UserInputError, "--samples must be a positive integer up to 100000, got 1000000000000"),
    (lambda: SampleJob(run=RUN, steps=0), UserInputError, "--sample-steps must be a positive integer up to 100000, got 0"),
    (lambda: SampleJob(run=RUN, steps=-1), UserInputError, "--sample-steps must be a positive integer up to 100000, got -1"),
    (lambda: SampleJob(run=RUN, seed=-1), UserInputError, "--seed must be >= 0 and at most 4294967295, got -1"),
    (lambda: SampleJob(run=RUN, seed="x"), TypeError, "SampleJob.seed must be an int, got str 'x'"),
    (lambda: SampleJob(run=RUN, n=2.5), TypeError, "SampleJob.n must be an int, got float 2.5"),
    (lambda: SampleJob(run=RUN, classes=3), TypeError, "SampleJob.classes must be a tuple of class ids (ints), got int 3"),
    (lambda: SampleJob(run=RUN, classes=(True,)), TypeError, "SampleJob.classes[0] must be an int, got bool True"),
    (lambda: SampleJob(run=RUN, classes=(-1,)), UserInputError, "--class must be a class id: an integer from 0, got -1"),
    (lambda: SampleJob(run=RUN, guidance_scale="2"), TypeError, "SampleJob.guidance_scale must be a float, got str '2'"),
    (lambda: SampleJob(run=RUN, measurement=None), TypeError, "SampleJob.measurement must be a MeasurementOptions, got NoneType"),
    (lambda: SampleJob(run=5), TypeError, "SampleJob.run must be a Path or str, got int 5"),
    (lambda: EvalJob(run=RUN, n="20"), TypeError, "EvalJob.n must be an int, got str '20'"),
    (lambda: EvalJob(run=RUN, n=0), UserInputError, "--samples must be >= 4 and at most 1000000, got 0"),
    (lambda: EvalJob(run=RUN, steps=-1), UserInputError, "--sample-steps must be >= 0 and at most 100000, got -1"),
    (lambda: EvalJob(run=RUN, seeds=0), UserInputError, "--seeds must be a positive integer up to 100, got 0"),
    (lambda: EvalJob(run=RUN, kid_subset=0), UserInputError, "--kid-subset must be >= 2 and at most 1000000, got 0"),
    (lambda: EvalJob(run=RUN, measurement={}), TypeError, "EvalJob.measurement must be a MeasurementOptions, got dict"),
    (lambda: TrainJob(overrides=None), TypeError, "TrainJob.overrides must be a mapping of config keys"),
    (lambda: TrainJob(overrides=[("model.preset", "pico")]), TypeError, "TrainJob.overrides must be a mapping"),
    (lambda: TrainJob(overrides="model.preset=pico"), TypeError, "TrainJob.overrides must be a mapping"),
    (lambda: TrainJob(overrides={1: 2}), TypeError, "TrainJob.overrides key must be a str (a dotted config key), got int 1"),
    (lambda: TrainJob(measurement=None), TypeError, "TrainJob.measurement must be a MeasurementOptions, got NoneType"),
    (lambda: TrainJob(measurement={"country": "FRA"}), TypeError, "TrainJob.measurement must be a MeasurementOptions"),
    (lambda: TrainJob(processes="2"), TypeError, "TrainJob.processes must be an int, got str '2'"),
    (lambda: TrainJob(processes=0), UserInputError, "--nproc must be a positive number of processes, at most 1024, got 0"),
    (lambda: TrainJob(resume=3), TypeError, "TrainJob.resume must be a Path or str or None, got int 3"),
    (lambda: MeasurementOptions(ledger=3), TypeError, "MeasurementOptions.ledger must be a Path or str or None, got int"),
    (lambda: run_train(None), TypeError, "run_train takes a TrainJob (or a PreparedTrain), got NoneType"),
    (lambda: run_sample(None), TypeError, "run_sample's job must be a SampleJob, got NoneType"),
    (lambda: run_eval(TrainJob()), TypeError, "run_eval's job must be an EvalJob, got TrainJob"),
])
def test_a_bad_job_field_is_refused_when_the_job_is_made(make, error, message):
    with pytest.raises(error) as err:
        make()
    assert type(err.value) is error and str(err.value).startswith(message)


def test_paths_may_be_given_as_text():
    assert SampleJob(run="r", out="x.npz").run == Path("r") and SampleJob(run="r", out="x.npz").out == Path("x.npz")
    assert EvalJob(run="r").run == Path("r")
    job = TrainJob(config_file="c.toml", resume="r", measurement=MeasurementOptions(ledger="l.sqlite"))
    assert (job.config_file, job.resume, job.measurement.ledger) == (Path("c.toml"), Path("r"), Path("l.sqlite"))


def test_a_progress_without_the_protocol_is_refused_before_anything_is_created(tmp_path):
    job = TrainJob(overrides={**TINY, "run.max_steps": 1, "run.output_dir": str(tmp_path / "runs")},
                   measurement=measurement(tmp_path / "l.sqlite"))
    with pytest.raises(TypeError, match="progress must be a Progress .*; object has no on_start, on_log, on_end, note"):
        run_train(job, progress=object())
    assert nothing_created(tmp_path)


# -- 5. a folder dataset is saved as an absolute path ----------------------------------------------------------
def test_a_relative_dataset_is_saved_absolute_so_resume_and_eval_work_from_another_folder(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    for label in ("cat", "dog"):
        (a / "ds" / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((8, 8), 30 * i + (0 if label == "cat" else 5), dtype=np.uint8)).save(a / "ds" / label / f"{i}.png")
    monkeypatch.chdir(a)
    first = run_train(TrainJob(overrides={**TINY, "data.dataset": "ds", "optim.batch_size": 4, "run.max_steps": 2,
                                          "run.output_dir": str(tmp_path / "runs")}, measurement=measurement(tmp_path / "l.sqlite")))
    assert read_toml(first.run_dir / "config.toml")["data"]["dataset"] == str(a / "ds")
    monkeypatch.chdir(b)
    second = run_train(TrainJob(overrides={"run.max_steps": 4}, resume=first.run_dir, measurement=measurement(tmp_path / "l.sqlite")))
    assert (second.status, second.step) == ("completed", 4)
    assert read_toml(first.run_dir / "config.toml")["data"]["dataset"] == str(a / "ds")
    report = run_eval(EvalJob(run=first.run_dir, n=8, steps=2, kid_subset=4, measurement=measurement(tmp_path / "l.sqlite"))).report
    assert math.isfinite(report.results[0].quality.fid)


def test_a_bundled_dataset_name_stays_a_name(tmp_path, monkeypatch):
    (tmp_path / "digits").mkdir()  # a folder of that name does not turn the bundled name into a path
    monkeypatch.chdir(tmp_path)
    from greendiff.workflows import resolve_train_config

    assert resolve_train_config(TrainJob(overrides={**TINY}))[0].data.dataset == "digits"


# -- 6. the data fails mid-run: the trainer returns "failed" ------------------------------------------------------
def test_a_data_failure_mid_run_closes_the_ledger_run_and_says_how_to_resume(tmp_path, monkeypatch):
    def failing_train(config, run_dir, data, tracker, **kwargs):
        (run_dir / "checkpoints" / "step-2").mkdir(parents=True)
        return TrainResult("failed", 3, 0.5, run_dir, 0.0, "image 'ds/7.png' could not be read (deleted after the start)")

    monkeypatch.setattr(greendiff.train, "train", failing_train)
    with pytest.raises(UserInputError) as err:
        run_train(TrainJob(overrides={**TINY, "run.max_steps": 4, "run.output_dir": str(tmp_path / "runs")},
                           measurement=measurement(tmp_path / "l.sqlite")))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert str(err.value) == ("image 'ds/7.png' could not be read (deleted after the start); checkpoint step-2 kept: fix "
                              f"the data and resume with greendiff train --resume {run_dir}")
    (row,) = Ledger(tmp_path / "l.sqlite").list_runs()
    assert row.status == "failed"
    emissions = json.loads((run_dir / "emissions.json").read_text())
    assert emissions["stop_reason"].startswith("image 'ds/7.png'") and emissions["ledger_run_ids"] == [row.id]


# -- 3. class accuracy only for runs whose classes are the digits ---------------------------------------------------
@pytest.fixture(scope="module")
def pets_run(tmp_path_factory) -> Path:
    """A class-conditional run (2 steps) on an image folder of two classes, cat and dog, 8 images each."""
    root = tmp_path_factory.mktemp("pets")
    folder = root / "pets"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8)).save(folder / label / f"{i}.png")
    job = TrainJob(overrides={**TINY, "model.conditioning": "class", "data.dataset": str(folder), "optim.batch_size": 4,
                              "run.max_steps": 2, "run.output_dir": str(root / "runs")}, measurement=measurement(root / "l.sqlite"))
    return run_train(job).run_dir


def test_class_accuracy_is_left_out_for_classes_that_are_not_digits(tmp_path, pets_run):
    report = run_eval(EvalJob(run=pets_run, n=8, steps=2, kid_subset=4, measurement=measurement(tmp_path / "l.sqlite"))).report.to_dict()
    assert "class_accuracy" not in report and "class_accuracy" not in report["results"][0]
    assert report["class_accuracy_note"].startswith("no class accuracy: the bundled classifier knows the digits 0-9, "
                                                    "and this run's classes are 'cat', 'dog'")
    assert sorted(report["results"][0]["per_class_fid"]) == ["0", "1"]


def test_a_compression_scores_classes_that_are_not_digits_without_the_digit_classifier(tmp_path, pets_run):
    """prune scores a class-conditional run as eval does: no class accuracy from the MNIST classifier for cats."""
    from greendiff.workflows import PruneJob, run_prune

    outcome = run_prune(PruneJob(run=pets_run, ratio=0.5, finetune_steps=0, taylor_timesteps=2, taylor_batch=4,
                                 eval_samples=8, output_dir=str(tmp_path / "out"),
                                 measurement=measurement(tmp_path / "l.sqlite")))
    quality = json.loads(outcome.report_path.read_text())["quality"]
    for model in ("parent", "pruned"):
        assert "class_accuracy" not in quality[model] and sorted(quality[model]["per_class_fid"]) == ["0", "1"]


def test_class_accuracy_of_a_digit_run_is_an_exact_share():
    from greendiff.workflows._eval import ClassScoring

    def always_three(images):  # logits (N, 10) that pick class 3
        return torch.nn.functional.one_hot(torch.full((images.shape[0],), 3), 10).float()

    real = {c: torch.randn(4, 3, generator=torch.Generator().manual_seed(c)) for c in range(10)}
    extractor = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    fake = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scored = ClassScoring(10, 1.0, real, always_three).score(fake, list(range(10)) * 2, extractor)
    assert repr(scored.class_accuracy) == "0.1"  # 2 of 20, not float32's 0.10000000149011612
