"""Pruning a class-conditional run: the Taylor pass scores its own (labelled) loss, the pruned model keeps its class
embedding, is scored class-balanced like ``eval``, fine-tuned from the pruned model on the labelled data, and
exported as the parent's class-conditional pipeline; distilling it (``--distill``), which the trainer cannot do
yet, is one line before anything is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.workflows import PruneJob, run_prune
from tests.workflows.conftest import measurement, trained


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    """A class-conditional run (4 steps on the 10 digit classes)."""
    return trained(tmp_path_factory.mktemp("cond"), {"model.conditioning": "class"})


def samples_by_class(run_dir: Path):
    """The run's pipeline: pruned widths, the parent's 11 class rows (10 classes and the null class) and names, and
    2 images of classes 3 and 7 from it."""
    from greendiff.pipelines import ClassConditionalPipeline

    pipe = ClassConditionalPipeline.from_pretrained(str(run_dir / "pipeline"))
    assert pipe.unet.config.num_class_embeds == 11 and list(pipe.unet.config.block_out_channels) == [8, 16]
    assert pipe.class_names == tuple(str(k) for k in range(10))
    images = pipe(["3", "7"], guidance_scale=2.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    return pipe


def test_a_class_conditional_run_prunes_scores_by_class_and_exports_a_pipeline_that_samples_by_class(tmp_path, cond_run):
    outcome = run_prune(PruneJob(run=cond_run, ratio=0.5, finetune_steps=0, taylor_timesteps=3, taylor_batch=8,
                                 eval_samples=20, output_dir=str(tmp_path / "out"),
                                 measurement=measurement(tmp_path / "l.sqlite")))
    report = json.loads(outcome.report_path.read_text())
    assert report["pruned_model"]["block_out_channels"] == [8, 16] and report["taylor"]["timesteps_used"] == 3
    for model in ("parent", "pruned"):  # class-balanced: 2 images of each of the 10 classes, a FID per class
        quality = report["quality"][model]
        assert quality["n"] == 20 and sorted(quality["per_class_fid"], key=int) == [str(k) for k in range(10)]
        assert quality["guidance_scale"] == 2.0 and 0 <= quality["class_accuracy"] <= 1
    pipe = samples_by_class(outcome.run_dir)
    with torch.no_grad():  # the class embedding survived: two classes, two predictions from the same input
        x, t = torch.zeros(2, 1, 8, 8), torch.tensor([500, 500])
        out = pipe.unet(x, t, class_labels=torch.tensor([3, 7])).sample
    assert (out[0] - out[1]).abs().max() > 0
    (row,) = Ledger(tmp_path / "l.sqlite").list_runs()
    assert (row.kind, row.status) == ("prune", "completed")


def test_fine_tuning_a_class_conditional_run_works_and_keeps_its_classes(tmp_path, cond_run):
    """prune --finetune-steps N of a class-conditional run: the fine-tuning starts from the pruned model (its
    ``model.init_from``, which the config refused with ``model.conditioning = class`` before), trains N steps on the
    labelled data, and the pipeline it exports samples by class."""
    from greendiff.train import read_metrics

    outcome = run_prune(PruneJob(run=cond_run, ratio=0.5, finetune_steps=2, taylor_timesteps=2, taylor_batch=8,
                                 eval_samples=0, output_dir=str(tmp_path / "out"),
                                 measurement=measurement(tmp_path / "l.sqlite")))
    report = json.loads(outcome.report_path.read_text())
    assert report["finetune_steps"] == 2 and report["pruned_model"]["block_out_channels"] == [8, 16]
    config = (outcome.run_dir / "config.toml").read_text()
    assert 'conditioning = "class"' in config and "pruned-unet" in config  # started from the pruned model
    metrics = read_metrics(outcome.run_dir / "metrics.jsonl").events
    assert [e["step"] for e in metrics if "loss" in e] == [2] and metrics[-1] == {"event": "completed", "step": 2}
    samples_by_class(outcome.run_dir)
    (row,) = Ledger(tmp_path / "l.sqlite").list_runs()
    assert (row.kind, row.status) == ("prune", "completed")


def test_distilling_a_class_conditional_run_while_pruning_is_one_line_before_anything_is_created(tmp_path, cond_run):
    ledger = tmp_path / "l.sqlite"
    with pytest.raises(UserInputError) as err:
        run_prune(PruneJob(run=cond_run, ratio=0.5, finetune_steps=2, distill=True, eval_samples=0,
                           output_dir=str(tmp_path / "out"), measurement=measurement(ledger)))
    message = str(err.value)
    assert "\n" not in message and "is class-conditional (10 classes)" in message and "drop --distill" in message
    assert not (tmp_path / "out").exists() and (not ledger.exists() or Ledger(ledger).list_runs() == [])
