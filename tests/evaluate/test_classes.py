"""Class accuracy, per-class FID and balanced label lists for class-conditional samples."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.evaluate import balanced_labels, class_accuracy, class_quality, features_by_class
from greendiff.evaluate._classes import ClassQuality, per_class_fid
from greendiff.evaluate._metrics import FeatureStats, frechet_distance

K = 10


def striped(labels: list[int]) -> torch.Tensor:
    """(N, 1, K, K) images in [-1, 1]: image i is dark with row ``labels[i]`` bright."""
    images = -torch.ones(len(labels), 1, K, K)
    images[torch.arange(len(labels)), 0, torch.tensor(labels)] = 1.0
    return images


def row_classifier(images: torch.Tensor) -> torch.Tensor:
    """Logits (N, K): the brightness of each row; perfect on :func:`striped` images."""
    return images[:, 0].mean(dim=2)


def test_a_perfect_classifier_scores_1_and_known_mistakes_count_exactly():
    labels = balanced_labels(200, K)
    assert class_accuracy(striped(labels), labels, row_classifier, batch_size=64) == 1.0
    wrong = [(c + 1) % K if i < 30 else c for i, c in enumerate(labels)]  # 30 of 200 asked for another class
    assert class_accuracy(striped(labels), torch.tensor(wrong), row_classifier) == pytest.approx(170 / 200)


def test_shuffled_labels_score_about_one_in_k():
    labels = balanced_labels(2000, K)
    shuffled = torch.tensor(labels)[torch.randperm(2000, generator=torch.Generator().manual_seed(0))]
    accuracy = class_accuracy(striped(labels), shuffled, row_classifier)
    assert abs(accuracy - 0.1) < 4 * np.sqrt(0.1 * 0.9 / 2000)


def test_the_bundled_classifier_plugs_in():
    from greendiff.evaluate import load_mnist_features

    net = load_mnist_features()
    images = torch.rand(12, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        predicted = net.logits(images).argmax(dim=1)
    assert class_accuracy(images, predicted, net.logits) == 1.0
    assert class_accuracy(images, (predicted + 1) % 10, net.logits, batch_size=5) == 0.0


@pytest.mark.parametrize("labels, message", [([0] * 5, "need 6 integer class labels"),
                                             ([0.0] * 6, "need 6 integer class labels")])
def test_labels_that_do_not_match_the_images_are_one_line(labels, message):
    with pytest.raises(UserInputError, match=message):
        class_accuracy(striped([0] * 6), labels, row_classifier)


def test_a_classifier_returning_the_wrong_shape_is_one_line():
    with pytest.raises(UserInputError, match=r"finite \(N, K\) logits; got \(6,\)"):
        class_accuracy(striped([0] * 6), [0] * 6, lambda x: x.mean(dim=(1, 2, 3)))


def gaussian(n, d, mean, seed):
    return torch.from_numpy(np.random.default_rng(seed).normal(mean, 1.0, size=(n, d)))


def test_per_class_fid_compares_each_class_with_its_own_real_images():
    d, n = 4, 4000
    real = {0: gaussian(n, d, 0.0, 1), 1: gaussian(n, d, 5.0, 2)}
    fake = torch.cat([gaussian(n, d, 0.0, 3), gaussian(n, d, 6.0, 4)])  # class 1 off by 1 in each of 4 dimensions
    labels = [0] * n + [1] * n
    fid = per_class_fid(fake, labels, real)
    assert sorted(fid) == [0, 1]
    assert fid[0] < 0.02 and fid[1] == pytest.approx(d * 1.0, abs=0.1)
    assert fid[1] == pytest.approx(frechet_distance(FeatureStats.of(real[1]), FeatureStats.of(fake[n:])))
    swapped = per_class_fid(fake, [1] * n + [0] * n, real)  # samples judged against the other class
    assert swapped[0] > 100 and swapped[1] > 100


def test_per_class_fid_needs_real_images_and_two_samples_per_class():
    real = {0: gaussian(10, 2, 0.0, 1)}
    with pytest.raises(UserInputError, match="no real images of class 3"):
        per_class_fid(gaussian(4, 2, 0.0, 2), [0, 0, 3, 3], real)
    with pytest.raises(UserInputError, match="class 0: per-class FID needs at least 2 samples"):
        per_class_fid(gaussian(1, 2, 0.0, 2), [0], real)


def test_features_by_class_splits_rows_by_label():
    features = torch.arange(12.0).reshape(6, 2)
    split = features_by_class(features, [2, 0, 2, 0, 0, 5])
    assert list(split) == [0, 2, 5]
    assert split[0].tolist() == [[2.0, 3.0], [6.0, 7.0], [8.0, 9.0]] and split[5].tolist() == [[10.0, 11.0]]


def test_balanced_labels_spread_as_evenly_as_possible():
    assert balanced_labels(7, 3) == [0, 1, 2, 0, 1, 2, 0]
    assert Counter(balanced_labels(25, K)) == {**{c: 3 for c in range(5)}, **{c: 2 for c in range(5, 10)}}
    assert balanced_labels(0, K) == [] and balanced_labels(25, K)[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    with pytest.raises(UserInputError, match="at least one class"):
        balanced_labels(5, 0)
    with pytest.raises(UserInputError, match="integer >= 0"):
        balanced_labels(-1, 3)


def test_class_quality_and_its_json():
    class RowFeatures(torch.nn.Module):
        def forward(self, x):
            return x[:, 0].mean(dim=2) + 0.01 * torch.randn(x.shape[0], K, generator=torch.Generator().manual_seed(0))

    labels = balanced_labels(40, 2)
    images = striped(labels)
    real = features_by_class(RowFeatures()(images), labels)
    result = class_quality(images, labels, row_classifier, RowFeatures(), real)
    assert result.class_accuracy == 1.0 and result.n == 40 and sorted(result.per_class_fid) == [0, 1]
    assert all(v < 1e-3 for v in result.per_class_fid.values())  # the same features as the real ones
    as_json = json.loads(json.dumps(ClassQuality(0.75, {3: 2.5, 1: 1.5}, 8).to_dict()))
    assert as_json == {"class_accuracy": 0.75, "per_class_fid": {"1": 1.5, "3": 2.5}, "mean_class_fid": 2.0, "n": 8}


def test_class_accuracy_is_an_exact_share_and_left_out_without_a_classifier():
    images = torch.zeros(10, 1, 4, 4)
    def says_zero(x):
        return torch.tensor([[1.0, 0.0]]).repeat(x.shape[0], 1)
    assert class_accuracy(images, [0] + [1] * 9, says_zero) == 0.1  # not float32's 0.10000000149011612
    features = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    real = {0: features[:5] + 1, 1: features[5:] - 1}
    quality = class_quality(images, [0] * 5 + [1] * 5, None, lambda x: features, real)
    assert quality.class_accuracy is None and "class_accuracy" not in quality.to_dict()
    assert set(quality.to_dict()["per_class_fid"]) == {"0", "1"}
