"""Class-conditional training through the trainer: the family the config picks, labels and their dropout
reaching the loss, a preview row per class, class accuracy in the evaluations, and the exported pipeline
generating by class."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from greendiff.data import ImageSet, load_dataset
from greendiff.errors import UserInputError
from greendiff.train import (
    ClassConditionalFamily, UNetFamily, check_data, checkpoint_dirs, diffusion_loss, family_for, train,
)

K = 10


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    """64 labelled scikit-learn digits at 8x8 (classes 0..9)."""
    full = load_dataset("digits", 8)
    return ImageSet(full.images[:64].clone(), "digits[:64]", labels=full.labels[:64].clone(), class_names=full.class_names)


@pytest.fixture
def class_config(tiny_config):
    def make(**overrides):
        return tiny_config(**{"model__conditioning": "class", "model__num_classes": K, **overrides})
    return make


def records(run_dir, event: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if event is None or r.get("event") == event]


def weights(run_dir, name: str = "model") -> dict:
    return load_file(str(checkpoint_dirs(run_dir)[-1] / f"{name}.safetensors"))


def test_the_config_picks_the_family(class_config, tiny_config):
    family = family_for(class_config(optim__guidance_scale=3.0))
    assert isinstance(family, ClassConditionalFamily)
    assert (family.num_classes, family.guidance_scale, family.sampling_forwards) == (K, 3.0, 2)
    assert [family_for(class_config(optim__guidance_scale=w)).sampling_forwards for w in (0.0, 1.0)] == [1, 1]
    assert type(family_for(tiny_config())) is UNetFamily and family_for(tiny_config()).sampling_forwards == 1
    assert ClassConditionalFamily(3).preview_labels(7) == [0, 0, 1, 1, 2, 2]
    assert ClassConditionalFamily(4).preview_labels(2) == [0, 1, 2, 3]  # at least one column


def test_a_class_conditional_run_previews_evaluates_and_exports_by_class(tmp_path, digits, class_config, tracker):
    from greendiff.pipelines import ClassConditionalPipeline

    config = class_config(run__max_steps=6, run__num_samples=20, stop__eval_every=3, stop__eval_samples=20)
    assert train(config, tmp_path, digits, tracker).status == "completed"
    with Image.open(tmp_path / "samples" / "step-6.png") as grid:  # 10 rows, 2 columns of 8 px, 2 px gaps, x2
        assert grid.size == ((2 * (8 + 2) + 2) * 2, (K * (8 + 2) + 2) * 2)
    start = records(tmp_path, "start")[0]
    assert (start["guidance_forwards"], start["placement"]) == (2, digits.placement)
    evals = records(tmp_path, "eval")
    assert [e["step"] for e in evals] == [3, 6]
    assert all(0.0 <= e["class_accuracy"] <= 1.0 and round(e["class_accuracy"] * 20, 6).is_integer() for e in evals)

    pipe = ClassConditionalPipeline.from_pretrained(str(tmp_path / "pipeline"))
    assert pipe.num_classes == K
    ema = weights(tmp_path, "ema")
    exported = [p.detach() for p in pipe.unet.parameters()]
    assert len(ema) == len(exported) and all(torch.equal(ema[str(i)], p) for i, p in enumerate(exported))
    out = pipe([3, 7], guidance_scale=2.0, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
               output_type="pt").images
    again = pipe([3, 3], guidance_scale=2.0, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                 output_type="pt").images
    assert out.shape == (2, 1, 8, 8) and torch.equal(out[0], again[0]) and not torch.equal(out[1], again[1])


def test_an_unconditional_run_keeps_its_records(tmp_path, digits, tiny_config, tracker):
    """Labelled data trains an unconditional model on its images alone: no class embedding, no class accuracy."""
    train(tiny_config(run__max_steps=3, stop__eval_every=3, stop__eval_samples=20), tmp_path, digits, tracker)
    assert records(tmp_path, "start")[0]["guidance_forwards"] == 1
    assert "class_accuracy" not in records(tmp_path, "eval")[0]
    assert not any("class_embedding" in k for k in weights(tmp_path))


def test_the_labels_reach_the_loss_and_dropout_to_the_null_class_replaces_them(tmp_path, digits, class_config, tracker):
    shuffled = ImageSet(digits.images, digits.source, labels=(digits.labels + 3) % K, class_names=digits.class_names)
    for dropout in (0.0, 1.0):
        for name, data in (("true", digits), ("shuffled", shuffled)):
            train(class_config(run__max_steps=3, optim__cond_dropout=dropout), tmp_path / f"{dropout}-{name}", data, tracker)
    assert any("class_embedding" in k for k in weights(tmp_path / "0.0-true"))
    # every label dropped: which class an image had never reaches the model
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "1.0-true").values(),
                                                  weights(tmp_path / "1.0-shuffled").values()))
    assert not all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "0.0-true").values(),
                                                      weights(tmp_path / "0.0-shuffled").values()))


def test_the_familys_loss_with_every_label_dropped_is_the_all_null_loss(class_config):
    config = class_config(optim__cond_dropout=1.0)
    family = family_for(config)
    torch.manual_seed(0)
    net, scheduler = family.build(config, channels=1), family.noise_scheduler(config.optim)
    x0, labels = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 3, 5, 9])
    loss = family.loss(net, scheduler, x0, torch.Generator().manual_seed(1), config.optim, labels=labels)
    null = diffusion_loss(net, scheduler, x0, torch.Generator().manual_seed(1), config.optim,
                          labels=torch.full((4,), K), cond_dropout=0.0)
    kept = diffusion_loss(net, scheduler, x0, torch.Generator().manual_seed(1), config.optim, labels=labels)
    assert loss.item() == null.item() and loss.item() != kept.item()


def test_class_conditional_data_is_checked_before_the_run(digits, class_config, tiny_data):
    with pytest.raises(UserInputError, match="needs class labels"):
        check_data(class_config(), tiny_data)
    with pytest.raises(UserInputError, match="needs model.num_classes"):
        check_data(class_config(model__num_classes=0), digits)
    with pytest.raises(UserInputError, match=r"class id outside 0\.\.4 \(e\.g\. 5\)"):
        check_data(class_config(model__num_classes=5), digits)
    check_data(class_config(), digits)


def evaluated(data, class_names, num_classes: int = K) -> dict:
    from greendiff.parallel import Dist
    from greendiff.train import QualityEvaluator

    evaluator = QualityEvaluator(20, "mnist", seed=0, dist=Dist(), num_classes=num_classes, class_names=class_names)
    evaluator.prepare(data.images)
    return evaluator.evaluate(lambda n, seed, labels: torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1)


@pytest.mark.parametrize("names, scored", [
    (tuple("0123456789"), True),
    (tuple("abcdefghij"), False),  # ten classes that are not the digits: the digit classifier means nothing
    ((), False),  # bare ids 0..9: not known to be digits
    (tuple("0123456798"), False),  # the digits out of order: id 8 is not the digit 8
])
def test_class_accuracy_is_scored_only_when_the_classes_are_the_digits(digits, names, scored):
    scores = evaluated(digits, names)
    assert ("class_accuracy" in scores) == scored and scores["fid"] > 0


@pytest.mark.parametrize("dataset", ["digits", "mnist"])
def test_the_bundled_digit_sets_are_scored_by_the_digit_classifier(dataset):
    from greendiff.parallel import Dist
    from greendiff.train import QualityEvaluator

    names = load_dataset(dataset, 8).class_names
    assert QualityEvaluator(20, "mnist", 0, Dist(), K, names).scores_digits()


def test_a_cat_and_dog_run_records_its_class_names_in_the_pipeline(tmp_path, digits, class_config, tracker):
    from greendiff.pipelines import ClassConditionalPipeline

    pets = ImageSet(digits.images, "pets", labels=digits.labels % 2, class_names=("cat", "dog"))
    config = class_config(model__num_classes=2, run__max_steps=2, stop__eval_every=2, stop__eval_samples=20)
    assert train(config, tmp_path, pets, tracker).status == "completed"
    assert "class_accuracy" not in records(tmp_path, "eval")[0]
    assert json.loads((tmp_path / "pipeline" / "model_index.json").read_text())["class_names"] == ["cat", "dog"]
    pipe = ClassConditionalPipeline.from_pretrained(str(tmp_path / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.class_names == ("cat", "dog") and pipe.class_ids(["dog", "cat"]) == [1, 0]
    by_name = pipe(["dog", "cat"], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    by_id = pipe([1, 0], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(by_name.images, by_id.images)


def test_a_run_on_bare_class_ids_exports_no_names(tmp_path, digits, class_config, tracker):
    bare = ImageSet(digits.images, "bare", labels=digits.labels)
    assert train(class_config(run__max_steps=2, data__dataset=str(tmp_path / "ids.npz")), tmp_path / "ids", bare,
                 tracker).status == "completed"
    assert json.loads((tmp_path / "ids" / "pipeline" / "model_index.json").read_text())["class_names"] is None
    # the bundled digits are the digits, named or not
    assert train(class_config(run__max_steps=2), tmp_path / "digits", bare, tracker).status == "completed"
    assert json.loads((tmp_path / "digits" / "pipeline" / "model_index.json").read_text())["class_names"] == \
        list("0123456789")
