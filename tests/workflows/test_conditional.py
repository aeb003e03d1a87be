"""Class conditioning through the workflows: resolved once against the data, sampled by class, scored by class,
and every bad input one line before anything is created."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from greendiff.data import ImageSet, load_digits
from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.train import read_toml, resolve_config
from greendiff.workflows import (
    EvalJob, HardwareJob, MeasurementOptions, SampleJob, TrainJob, resolve_conditioning, run_eval, run_hardware,
    run_sample, run_train,
)
from tests.workflows.conftest import TINY, measurement, trained

COND = {**TINY, "model.conditioning": "class"}


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    """A class-conditional run (4 steps on the 10 digit classes)."""
    return trained(tmp_path_factory.mktemp("cond"), {"model.conditioning": "class"})


def no_runs(ledger: Path) -> bool:
    """No ledger row (the ledger file itself may exist: measurement settings open it)."""
    return not ledger.exists() or Ledger(ledger).list_runs() == []


def _images(n: int) -> torch.Tensor:
    return torch.zeros(n, 1, 8, 8, dtype=torch.uint8)


def _config(**keys):
    return resolve_config(overrides={"model.conditioning": "class", **keys})


def test_the_number_of_classes_is_the_datasets_and_is_saved_with_the_run(cond_run):
    saved = read_toml(cond_run / "config.toml")["model"]
    assert (saved["conditioning"], saved["num_classes"]) == ("class", 10)
    index = json.loads((cond_run / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "ClassConditionalPipeline"


def test_resolve_conditioning_sets_checks_and_leaves_unconditional_configs_alone():
    data = ImageSet(_images(6), "six", labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert resolve_conditioning(_config(), data).model.num_classes == 3
    assert resolve_conditioning(_config(**{"model.num_classes": 3}), data).model.num_classes == 3
    plain = resolve_config()
    assert resolve_conditioning(plain, data) is plain
    with pytest.raises(UserInputError, match=r"model.num_classes is 5 but dataset .* has 3 classes"):
        resolve_conditioning(_config(**{"model.num_classes": 5}), data)
    with pytest.raises(UserInputError, match="needs class labels.*--label-column"):
        resolve_conditioning(_config(), ImageSet(_images(6), "six"))
    with pytest.raises(UserInputError, match=r"2 of 6 images have no class \(e.g. image #1"):
        resolve_conditioning(_config(), ImageSet(_images(6), "six", labels=torch.tensor([0, -1, 1, -1, 0, 1])))


def _folder(root: Path) -> Path:
    """Two class folders of 8 images each, and one image directly in the root (no class)."""
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8)).save(root / name / f"{i}.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "stray.png")
    return root


def test_a_file_without_a_class_is_one_line_naming_it_and_nothing_is_created(tmp_path):
    folder = _folder(tmp_path / "pets")
    ledger = tmp_path / "l.sqlite"
    job = TrainJob(overrides={**COND, "data.dataset": str(folder), "optim.batch_size": 4, "run.max_steps": 1,
                              "run.output_dir": str(tmp_path / "runs")}, measurement=measurement(ledger))
    with pytest.raises(UserInputError) as err:
        run_train(job)
    assert str(err.value).startswith("--conditioning class: 1 of 17 images have no class (e.g. 'stray.png'")
    assert not (tmp_path / "runs").exists() and no_runs(ledger)


def test_a_resumed_run_keeps_its_saved_number_of_classes(tmp_path, cond_run):
    import shutil

    run = tmp_path / cond_run.name
    shutil.copytree(cond_run, run)
    outcome = run_train(TrainJob(overrides={"run.max_steps": 6}, resume=run, measurement=measurement(tmp_path / "l.sqlite")))
    assert (outcome.status, outcome.step) == ("completed", 6)
    assert read_toml(run / "config.toml")["model"]["num_classes"] == 10


def test_sample_by_class_lists_n_per_class_in_order_and_a_grid_row_each(tmp_path, cond_run):
    out = tmp_path / "grid.png"
    outcome = run_sample(SampleJob(run=cond_run, n=2, classes=(0, 3, 7), guidance_scale=1.5, steps=2, out=out,
                                   measurement=measurement(tmp_path / "l.sqlite")))
    assert outcome.labels == (0, 0, 3, 3, 7, 7) and outcome.n == 6 and outcome.grid_rows == 3
    assert outcome.guidance_scale == 1.5 and outcome.steps == 2
    # 3 rows x 2 columns of 8 px images with 2 px gaps, scaled 2x
    assert Image.open(out).size == ((2 * 10 + 2) * 2, (3 * 10 + 2) * 2)
    (row,) = Ledger(tmp_path / "l.sqlite").list_runs()
    assert (row.kind, row.status) == ("sample", "completed")
    # one batch: the per-image figure is its sampling window (the warm-up in it), not the whole ledger run
    first = outcome.summary.phase("sample-first-batch")
    assert outcome.energy_kwh_per_image == pytest.approx(first.energy_j / 3.6e6 / 6, rel=1e-12)
    assert outcome.per_image.includes_warmup and outcome.per_image.images == 6


def test_sample_without_classes_is_class_balanced_at_the_runs_guidance(tmp_path, cond_run):
    out = tmp_path / "s.npz"
    outcome = run_sample(SampleJob(run=cond_run, n=12, steps=2, out=out, measurement=measurement(tmp_path / "l.sqlite")))
    assert outcome.labels == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1) and outcome.guidance_scale == 2.0
    with np.load(out, allow_pickle=False) as saved:
        assert saved["images"].shape == (12, 8, 8, 1) and saved["labels"].tolist() == list(outcome.labels)


@pytest.mark.parametrize(("job", "message"), [
    ({"classes": (12,)}, "--class: class id 12 is outside 0..9"),
    ({"classes": (3, 10)}, "--class: class id 10 is outside 0..9"),
    ({"guidance_scale": math.nan}, "--guidance-scale must be a finite number, got nan"),
    ({"guidance_scale": -1.0}, "--guidance-scale must be a finite number >= 0 and at most 100"),
    ({"guidance_scale": math.inf}, "--guidance-scale must be a finite number, got inf"),
    ({"guidance_scale": 101.0}, "--guidance-scale must be a finite number >= 0 and at most 100"),
])
def test_bad_sampling_is_one_line_before_the_ledger_or_any_file(tmp_path, cond_run, job, message):
    out = tmp_path / "g.png"
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        run_sample(SampleJob(run=cond_run, n=2, steps=2, out=out, measurement=measurement(tmp_path / "l.sqlite"), **job))
    assert not out.exists() and no_runs(tmp_path / "l.sqlite")


def test_a_class_or_guidance_on_an_unconditional_run_is_refused(tmp_path, parent):
    kw = {"run": parent, "n": 2, "steps": 2, "out": tmp_path / "g.png", "measurement": measurement(tmp_path / "l.sqlite")}
    with pytest.raises(UserInputError, match="--class 7: this run is unconditional"):
        run_sample(SampleJob(classes=(7,), **kw))
    with pytest.raises(UserInputError, match="--guidance-scale 2: this run is unconditional"):
        run_sample(SampleJob(guidance_scale=2.0, **kw))
    assert not (tmp_path / "g.png").exists() and no_runs(tmp_path / "l.sqlite")
    outcome = run_sample(SampleJob(**kw))  # as before: no labels, no guidance
    assert outcome.labels is None and outcome.guidance_scale is None and outcome.grid_rows == 0


def test_eval_of_a_conditional_run_reports_class_accuracy_and_per_class_fid(tmp_path, cond_run):
    outcome = run_eval(EvalJob(run=cond_run, n=20, steps=2, kid_subset=10, guidance_scale=1.0,
                               measurement=measurement(tmp_path / "l.sqlite")))
    report, (result,) = outcome.report.to_dict(), outcome.report.to_dict()["results"]
    assert (outcome.report.num_classes, outcome.report.guidance_scale) == (10, 1.0)
    assert outcome.results[0].classes.class_accuracy == result["class_accuracy"]
    assert (report["num_classes"], report["guidance_scale"]) == (10, 1.0)
    assert 0.0 <= result["class_accuracy"] <= 1.0 and report["class_accuracy"] == result["class_accuracy"]
    # 2 samples per class: accuracy is a multiple of 1/20
    assert result["class_accuracy"] * 20 == pytest.approx(round(result["class_accuracy"] * 20))
    assert sorted(result["per_class_fid"], key=int) == [str(c) for c in range(10)]
    assert all(math.isfinite(v) and v >= 0 for v in result["per_class_fid"].values())
    assert result["mean_class_fid"] == pytest.approx(sum(result["per_class_fid"].values()) / 10)
    assert run_eval(EvalJob(run=cond_run, n=20, steps=2, kid_subset=10, measurement=measurement(tmp_path / "l.sqlite"))
                    ).report.guidance_scale == 2.0  # the run's optim.guidance_scale


def test_eval_of_a_conditional_run_refuses_too_few_samples_per_class_before_the_ledger(tmp_path, cond_run):
    with pytest.raises(UserInputError, match="--samples 8 is too few for a per-class FID over 10 classes: at least 20"):
        run_eval(EvalJob(run=cond_run, n=8, kid_subset=4, measurement=measurement(tmp_path / "l.sqlite")))
    with pytest.raises(UserInputError, match="--guidance-scale must be a finite number"):
        run_eval(EvalJob(run=cond_run, n=20, kid_subset=4, guidance_scale=math.nan,
                         measurement=measurement(tmp_path / "l.sqlite")))
    assert no_runs(tmp_path / "l.sqlite")


def test_a_compression_with_too_few_evaluation_images_per_class_names_its_own_flag(tmp_path, cond_run):
    from greendiff.workflows import PruneJob, run_prune

    with pytest.raises(UserInputError) as err:
        run_prune(PruneJob(run=cond_run, ratio=0.5, finetune_steps=0, eval_samples=8, output_dir=str(tmp_path / "out"),
                           measurement=measurement(tmp_path / "l.sqlite")))
    assert str(err.value) == "--eval-samples 8 is too few for a per-class FID over 10 classes: at least 20 (2 per class)"
    assert not (tmp_path / "out").exists() and no_runs(tmp_path / "l.sqlite")


def test_eval_of_an_unconditional_run_has_no_class_keys(tmp_path, parent):
    report = run_eval(EvalJob(run=parent, n=8, steps=2, kid_subset=4, measurement=measurement(tmp_path / "l.sqlite"))).report.to_dict()
    assert set(report) == {"run", "features", "n", "sampler_steps", "sampler", "results", "energy_kwh", "emissions_kg",
                           "ledger_run_id"}
    assert "class_accuracy" not in report["results"][0]


def test_hardware_profiles_a_class_conditional_config_with_its_labels(tmp_path, monkeypatch):
    import greendiff.train._family as family  # the hardware steps train the config's family, as train does

    seen, loss = [], family.diffusion_loss

    def recording_loss(*args, labels=None, cond_dropout=0.0, **kwargs):
        seen.append((None if labels is None else labels.tolist(), cond_dropout))
        return loss(*args, labels=labels, cond_dropout=cond_dropout, **kwargs)

    monkeypatch.setattr(family, "diffusion_loss", recording_loss)
    watts = MeasurementOptions(no_gpu=True, cpu_watts=50.0)
    report = run_hardware(HardwareJob(overrides={**COND}, devices="cpu", steps=2, warmup=0, measurement=watts)).to_dict()
    assert report["devices"][0]["energy_per_sample_kwh"] > 0
    assert len(seen) == 2 and all(dropout == 0.1 for _, dropout in seen)
    first = next(load_digits(8).batches(0, batch_size=16, seed=0)).labels.tolist()
    assert seen[0][0] == first  # the trainer's first batch, with its digits
    seen.clear()
    run_hardware(HardwareJob(overrides={**TINY}, devices="cpu", steps=1, warmup=0, measurement=watts))
    assert seen == [(None, 0.0)]  # unconditional: as before
