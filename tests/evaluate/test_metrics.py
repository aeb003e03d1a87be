from __future__ import annotations

import numpy as np
import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.evaluate._metrics import FeatureStats, frechet_distance, kid, precision_recall


def gaussian(n, d, mean=0.0, std=1.0, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(mean, std, size=(n, d)))


def test_fid_of_identical_stats_is_zero():
    stats = FeatureStats.of(gaussian(500, 8))
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-4)


def test_fid_of_samples_from_one_gaussian_is_small():
    assert frechet_distance(FeatureStats.of(gaussian(20_000, 4, seed=1)), FeatureStats.of(gaussian(20_000, 4, seed=2))) < 0.01


def test_fid_known_shift_and_scale_closed_form():
    d = 5
    mu_a, mu_b = np.zeros(d), np.full(d, 0.5)
    var_a, var_b = np.linspace(1, 2, d), np.linspace(0.5, 3, d)
    a = FeatureStats(mu_a, np.diag(var_a), 0)
    b = FeatureStats(mu_b, np.diag(var_b), 0)
    # diagonal covariances: FID = ||mu_a - mu_b||^2 + sum (sqrt(var_a) - sqrt(var_b))^2
    expected = 0.25 * d + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-5)


def test_kid_is_unbiased_on_equal_distributions():
    mean, std = kid(gaussian(4000, 16, seed=3), gaussian(4000, 16, seed=4), subset_size=500, subsets=200)
    assert abs(mean) < 3 * std / np.sqrt(200) + 1e-4


def test_kid_grows_with_the_shift():
    real = gaussian(2000, 8, seed=5)
    small = kid(real, gaussian(2000, 8, mean=0.2, seed=6), subset_size=500, subsets=20)[0]
    large = kid(real, gaussian(2000, 8, mean=1.0, seed=7), subset_size=500, subsets=20)[0]
    assert 0 < small < large


def test_kid_subset_larger_than_samples_is_a_user_error():
    with pytest.raises(UserInputError) as info:
        kid(gaussian(100, 4), gaussian(100, 4), subset_size=1000)
    assert str(info.value) == ("KID subset size 1000 needs 2 <= size <= the number of samples (100); use more samples "
                               "(--samples; in training --eval-samples) or a smaller subset")


def test_precision_recall_identical_and_disjoint():
    real = gaussian(500, 4, seed=8)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, gaussian(500, 4, mean=100.0, seed=9)) == (0.0, 0.0)


def test_precision_recall_mode_collapse_keeps_precision_loses_recall():
    real = gaussian(1000, 2, seed=10)
    collapsed = gaussian(1000, 2, std=0.05, seed=11)  # all samples near the mode
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.3


def test_seed_spread_is_the_sample_std_of_each_metric():
    from greendiff.evaluate import seed_spread

    results = [{"fid": 10.0, "kid": 0.01, "precision": 0.5, "recall": 0.4},
               {"fid": 12.0, "kid": 0.03, "precision": 0.7, "recall": 0.4}]
    spread = seed_spread(results)
    assert spread["fid"] == pytest.approx(2 ** 0.5) and spread["kid"] == pytest.approx(0.02 / 2 ** 0.5)
    assert spread["precision"] == pytest.approx(0.2 / 2 ** 0.5) and spread["recall"] == 0.0
