"""Quality metrics offline: FID, KID and precision/recall of generated images against the features of real
ones, on a pluggable feature extractor (the bundled MNIST classifier, an Inception network, or any module);
for class-conditional models, class accuracy and per-class FID. Reference features are cached by dataset
and extractor.

Example:
    >>> import pathlib, tempfile, torch
    >>> from greendiff.data import load_dataset
    >>> from greendiff.evaluate import quality, reference_features, resolve_extractor
    >>> data = load_dataset("mnist", 28)
    >>> extractor, name = resolve_extractor("mnist")  # the bundled MNIST classifier's features
    >>> real = reference_features(data.images[:1000], extractor, cache_dir=pathlib.Path(tempfile.mkdtemp()))
    >>> held_out = data.images[1000:1200].float() / 127.5 - 1  # more real digits, in [-1, 1]
    >>> noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    >>> quality(held_out, real, extractor).fid < 50 < quality(noise, real, extractor).fid
    True
"""

from __future__ import annotations

from greendiff.evaluate._classes import balanced_labels, class_accuracy, class_quality, features_by_class
from greendiff.evaluate._clip import ClipScorer, check_clip_folder
from greendiff.evaluate._evaluate import Quality, quality, seed_spread
from greendiff.evaluate._features import MnistFeatures, load_mnist_features, resolve_extractor
from greendiff.evaluate._reference import reference_features

__all__ = [
    # scoring generated images
    "Quality", "quality", "seed_spread", "reference_features",
    # feature extractors
    "MnistFeatures", "load_mnist_features", "resolve_extractor",
    # class-conditional models
    "balanced_labels", "class_accuracy", "class_quality", "features_by_class",
    # text-to-image models: CLIP score of images against their prompts
    "ClipScorer", "check_clip_folder",
]
