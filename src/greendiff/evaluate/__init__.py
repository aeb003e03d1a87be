"""Quality metrics offline: FID, KID, precision/recall on pluggable feature extractors; for class-conditional
models, class accuracy and per-class FID."""

from __future__ import annotations

from greendiff.evaluate._classes import (
    ClassQuality,
    balanced_labels,
    class_accuracy,
    class_quality,
    features_by_class,
    per_class_fid,
)
from greendiff.evaluate._features import (
    MnistFeatures,
    check_extractor_output,
    extract,
    extractor_hash,
    load_inception,
    load_mnist_features,
    resolve_extractor,
)
from greendiff.evaluate._evaluate import Quality, quality, seed_spread
from greendiff.evaluate._metrics import FeatureStats, frechet_distance, kid, precision_recall
from greendiff.evaluate._reference import dataset_fingerprint, reference_features

__all__ = ["ClassQuality", "balanced_labels", "class_accuracy", "class_quality", "features_by_class", "per_class_fid",
           "FeatureStats", "Quality", "dataset_fingerprint", "frechet_distance", "kid", "precision_recall", "quality",
           "reference_features", "seed_spread", "MnistFeatures", "check_extractor_output", "extract", "extractor_hash", "load_inception",
           "load_mnist_features", "resolve_extractor"]
