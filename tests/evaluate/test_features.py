from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from greendiff.data import load_dataset
from greendiff.errors import UserInputError
from greendiff.evaluate import load_mnist_features, resolve_extractor
from greendiff.evaluate._features import extract, extractor_hash, load_inception
from greendiff.evaluate._features import MNIST_WEIGHTS


def test_shipped_mnist_extractor_classifies_held_out_digits():
    """The documented held-out accuracy holds for the shipped weights (the last 2,000 of the fixed split)."""
    report = json.loads((Path(str(MNIST_WEIGHTS)).parent / "mnist_features.json").read_text())
    assert report["held_out_accuracy"] > 0.95
    model = load_mnist_features()
    x = load_dataset("mnist", 28).images[:500].float() / 127.5 - 1
    feats = extract(model, x)
    assert feats.shape == (500, 64)
    with torch.no_grad():  # the classifier recognises real digits: predictions spread over all ten classes
        predicted = model.logits(x).argmax(1)
    assert len(set(predicted.tolist())) == 10


def test_extractor_accepts_any_resolution_and_channels():
    model = load_mnist_features()
    assert extract(model, torch.zeros(3, 3, 16, 16)).shape == (3, 64)


def test_extractor_hash_changes_with_weights():
    model = load_mnist_features()
    before = extractor_hash(model)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    assert extractor_hash(model) != before and extractor_hash(load_mnist_features()) == before


def test_user_module_hook_and_wrong_shape():
    class Flatten(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    module, name = resolve_extractor(Flatten())
    assert name == "custom:Flatten" and extract(module, torch.zeros(4, 1, 8, 8)).shape == (4, 64)

    class Bad(nn.Module):
        def forward(self, x):
            return x  # 4-D: not features

    with pytest.raises(UserInputError, match=r"must return \(N, D\) features"):
        extract(Bad(), torch.zeros(2, 1, 8, 8))


def test_missing_and_corrupt_weights(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_mnist_features(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(UserInputError, match="corrupt"):
        load_mnist_features(tmp_path / "bad.safetensors")
    with pytest.raises(UserInputError, match="never downloads"):
        load_inception(tmp_path / "pt_inception.pth")
    with pytest.raises(UserInputError, match="unknown --features"):
        resolve_extractor("clip")


def test_reference_features_are_cached_and_invalidated(tmp_path, monkeypatch):
    from greendiff.evaluate import _reference, reference_features

    images = load_dataset("digits", 8).images[:200]
    model = load_mnist_features()
    calls = []
    real_extract = _reference.extract
    monkeypatch.setattr(_reference, "extract", lambda m, x: calls.append(1) or real_extract(m, x))
    first = reference_features(images, model, tmp_path)
    second = reference_features(images, model, tmp_path)
    assert torch.equal(first, second) and len(calls) == 1  # the second came from the cache
    reference_features(images[:150], model, tmp_path)  # other data: new key
    with torch.no_grad():
        model.fc.bias.add_(0.5)
    reference_features(images, model, tmp_path)  # other weights: new key
    assert len(calls) == 3 and len(list(tmp_path.glob("*.npy"))) == 3
