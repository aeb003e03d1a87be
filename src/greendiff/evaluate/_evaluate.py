"""Evaluate generated images against a dataset's reference features."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from greendiff.evaluate._features import extract
from greendiff.evaluate._metrics import FeatureStats, frechet_distance, kid, precision_recall


@dataclass(frozen=True)
class Quality:
    """Quality of ``n`` generated images (lower FID/KID is better; higher precision/recall)."""

    fid: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def quality(fake_images: torch.Tensor, real_features: torch.Tensor, extractor: nn.Module,
            kid_subset: int = 1000, pr_k: int = 3) -> Quality:
    """All metrics for ``fake_images`` (N, C, H, W) in [-1, 1] against cached real features."""
    fake = extract(extractor, fake_images)
    subset = min(kid_subset, fake.shape[0], real_features.shape[0])
    kid_mean, kid_std = kid(real_features, fake, subset_size=subset, subsets=50)
    real_pr = real_features[torch.randperm(real_features.shape[0], generator=torch.Generator().manual_seed(0))[:fake.shape[0]]]
    precision, recall = precision_recall(real_pr, fake, k=pr_k)
    return Quality(frechet_distance(FeatureStats.of(real_features), FeatureStats.of(fake)), kid_mean, kid_std,
                   precision, recall, fake.shape[0])


SPREAD_METRICS = ("fid", "kid", "precision", "recall")


def seed_spread(results: Sequence[dict]) -> dict[str, float]:
    """Standard deviation of each metric over evaluations that differ only by their noise seed:
    differences between models smaller than this are noise. Needs at least two results."""
    return {m: statistics.stdev(r[m] for r in results) for m in SPREAD_METRICS}
