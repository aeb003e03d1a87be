"""Reference features of a dataset, computed once per (dataset, extractor) and cached on disk."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from greendiff.carbon import default_cache_dir
from greendiff.evaluate._features import extract, extractor_hash

logger = logging.getLogger(__name__)


def dataset_fingerprint(images: torch.Tensor) -> str:
    """Hash of the exact uint8 images (so a changed folder or resolution is a new key)."""
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


def reference_features(images: torch.Tensor, extractor: nn.Module, cache_dir: Path | None = None) -> torch.Tensor:
    """Features of the real images (uint8, N x C x H x W), from the cache when the key matches.

    Key: dataset fingerprint + extractor hash (class and weights). Changing either recomputes.
    """
    root = cache_dir or default_cache_dir().parent / "features"
    key = f"{dataset_fingerprint(images)}-{extractor_hash(extractor)}"
    path = root / f"{key}.npy"
    if path.exists():
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):
            logger.warning("reference feature cache %s unreadable; recomputing", path)
    features = extract(extractor, images.float() / 127.5 - 1.0)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, features.numpy())
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("reference features not cached: %s", exc)
    return features
