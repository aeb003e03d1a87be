"""Quality metrics offline: FID, KID, precision/recall on pluggable feature extractors."""

from __future__ import annotations

from greendiff.evaluate._features import (
    MnistFeatures,
    check_extractor_output,
    extract,
    extractor_hash,
    load_inception,
    load_mnist_features,
    resolve_extractor,
)

__all__ = ["MnistFeatures", "check_extractor_output", "extract", "extractor_hash", "load_inception",
           "load_mnist_features", "resolve_extractor"]
