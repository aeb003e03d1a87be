"""FID, KID and precision/recall on feature matrices. Pure functions: features in, numbers out.

- FID: Heusel et al., NeurIPS 2017; the Fréchet distance of two Gaussians fitted to the features.
- KID: Bińkowski et al., ICLR 2018; the unbiased MMD² estimator with the cubic polynomial kernel
  k(x, y) = (x·y / d + 1)³, averaged over random subsets.
- Precision/recall: Kynkäänniemi et al., NeurIPS 2019; k-NN balls around each sample estimate each
  distribution's manifold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

from greendiff.errors import UserInputError


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of N feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def of(cls, features: torch.Tensor | np.ndarray) -> FeatureStats:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise UserInputError(f"need at least 2 feature vectors of shape (N, D), got {x.shape}")
        return cls(x.mean(axis=0), np.cov(x, rowvar=False), x.shape[0])


def frechet_distance(a: FeatureStats, b: FeatureStats, eps: float = 1e-6) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½)."""
    diff = a.mu - b.mu
    # eps * I keeps the product invertible when features have dead (constant) dimensions, which
    # ReLU features often do; the bias it adds is O(eps * D).
    offset = np.eye(a.sigma.shape[0]) * eps
    covmean = linalg.sqrtm((a.sigma + offset) @ (b.sigma + offset)).real
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * np.trace(covmean))


def kid(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) with the unbiased MMD² estimator on subsets of ``subset_size``."""
    n = min(real.shape[0], fake.shape[0])
    if subset_size < 2 or subset_size > n:
        raise UserInputError(f"KID subset size {subset_size} needs 2 <= size <= the number of samples ({n}); "
                             "use more samples (--samples; in training --eval-samples) or a smaller subset")
    x_all, y_all = real.double(), fake.double()
    d = x_all.shape[1]
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = x_all[torch.randperm(x_all.shape[0], generator=gen)[:subset_size]]
        y = y_all[torch.randperm(y_all.shape[0], generator=gen)[:subset_size]]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        m = subset_size
        mmd = ((kxx.sum() - kxx.diagonal().sum()) + (kyy.sum() - kyy.diagonal().sum())) / (m * (m - 1)) \
            - 2 * kxy.sum() / (m * m)
        values.append(float(mmd))
    arr = np.array(values)
    return float(arr.mean()), float(arr.std())


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    radii = []
    for start in range(0, x.shape[0], chunk):
        dist = torch.cdist(x[start:start + chunk], x)
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # +1: the row itself is at distance 0
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    """Fraction of ``points`` inside at least one ball (centre, radius)."""
    inside = []
    for start in range(0, points.shape[0], chunk):
        dist = torch.cdist(points[start:start + chunk], centres)
        inside.append((dist <= radii[None, :]).any(dim=1))
    return float(torch.cat(inside).float().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold)."""
    if min(real.shape[0], fake.shape[0]) <= k:
        raise UserInputError(f"precision/recall with k={k} needs more than {k} samples on each side")
    real, fake = real.float(), fake.float()
    precision = _coverage(fake, real, _kth_nn_radius(real, k))
    recall = _coverage(real, fake, _kth_nn_radius(fake, k))
    return precision, recall
