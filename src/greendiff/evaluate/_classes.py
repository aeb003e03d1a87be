"""Quality of class-conditional samples: does each image show the class it was asked for (class accuracy,
by a domain classifier), and how close is each class's samples to that class's real images (per-class FID)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from greendiff.errors import UserInputError
from greendiff.evaluate._metrics import FeatureStats, frechet_distance


def balanced_labels(n: int, num_classes: int) -> list[int]:
    """``n`` class ids spread as evenly as possible over 0..K-1, round robin (each count is n // K or one
    more, the lower ids taking the extra), so any prefix is balanced too. Deterministic.

    Example:
        >>> balanced_labels(7, 3)
        [0, 1, 2, 0, 1, 2, 0]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"need at least one class to spread samples over, got {num_classes!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserInputError(f"the number of samples must be an integer >= 0, got {n!r}")
    return [i % num_classes for i in range(n)]


def _label_tensor(labels: Sequence[int] | torch.Tensor, n: int, what: str) -> torch.Tensor:
    ids = torch.as_tensor(labels).reshape(-1)
    if ids.is_floating_point() or ids.numel() != n:
        raise UserInputError(f"{what}: need {n} integer class labels, one per image, got {ids.numel()} ({ids.dtype})")
    return ids.long()


@torch.no_grad()
def class_accuracy(images: torch.Tensor, requested_labels: Sequence[int] | torch.Tensor,
                   classifier: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 500) -> float:
    """Share of ``images`` (N, C, H, W) in [-1, 1] that ``classifier`` assigns to the class asked for.

    Args:
        requested_labels: The class each image was generated for (N,).
        classifier: Images -> logits (N, K), e.g. the bundled ``MnistFeatures.logits``.
        batch_size: Images per classifier call.
    """
    n = images.shape[0]
    if n == 0:
        raise UserInputError("class accuracy needs at least one image")
    wanted = _label_tensor(requested_labels, n, "class accuracy")
    predicted = []
    for start in range(0, n, batch_size):
        logits = classifier(images[start:start + batch_size])
        if logits.ndim != 2 or logits.shape[0] != min(batch_size, n - start) or not torch.isfinite(logits).all():
            raise UserInputError(f"the classifier must return finite (N, K) logits; got {tuple(logits.shape)}")
        predicted.append(logits.argmax(dim=1).cpu())
    return int((torch.cat(predicted) == wanted).sum()) / n  # an exact share (float32's mean printed 0.10000000149)


def features_by_class(features: torch.Tensor, labels: Sequence[int] | torch.Tensor) -> dict[int, torch.Tensor]:
    """``features`` (N, D) split by class: {class id: (N_c, D)}, classes in increasing order."""
    ids = _label_tensor(labels, features.shape[0], "features by class")
    return {int(c): features[ids == c] for c in torch.unique(ids)}


def per_class_fid(fake_features: torch.Tensor, fake_labels: Sequence[int] | torch.Tensor,
                  real_features_by_class: Mapping[int, torch.Tensor]) -> dict[int, float]:
    """FID of each class's generated samples against that class's real images: {class id: FID}.

    Args:
        fake_features: Features (N, D) of the generated images (same extractor as the real ones).
        fake_labels: The class each generated image was asked for (N,).
        real_features_by_class: {class id: real features (N_c, D)}, e.g. :func:`features_by_class` of
            the dataset's features and labels.

    A class needs at least two samples on each side; few per class make the FID biased upward (compare
    classes of runs sampled alike, not to an all-class FID).
    """
    fake = features_by_class(fake_features, fake_labels)
    missing = sorted(set(fake) - set(real_features_by_class))
    if missing:
        raise UserInputError(f"no real images of class {missing[0]} to compare its samples with")
    out = {}
    for c, feats in fake.items():
        real = real_features_by_class[c]
        if min(feats.shape[0], real.shape[0]) < 2:
            raise UserInputError(f"class {c}: per-class FID needs at least 2 samples and 2 real images, got "
                                 f"{feats.shape[0]} and {real.shape[0]}; sample more (a balanced label list)")
        out[c] = frechet_distance(FeatureStats.of(real), FeatureStats.of(feats))
    return out


@dataclass(frozen=True)
class ClassQuality:
    """How well generated images match the classes they were asked for.

    Attributes:
        class_accuracy: Share (0..1) of images the domain classifier assigns to the requested class; None
            when no classifier knows the classes (it is then left out of :meth:`to_dict`).
        per_class_fid: {class id: FID of that class's samples against its real images}.
        n: Images evaluated.
    """

    class_accuracy: float | None
    per_class_fid: dict[int, float] = field(default_factory=dict)
    n: int = 0

    @property
    def mean_class_fid(self) -> float | None:
        """Mean of the per-class FIDs (None when there are none)."""
        return sum(self.per_class_fid.values()) / len(self.per_class_fid) if self.per_class_fid else None

    def to_dict(self) -> dict:
        """JSON-ready: ``class_accuracy`` (when there is one), ``per_class_fid`` (class ids as strings),
        ``mean_class_fid``, ``n``."""
        accuracy = {} if self.class_accuracy is None else {"class_accuracy": self.class_accuracy}
        return {**accuracy, "per_class_fid": {str(c): fid for c, fid in sorted(self.per_class_fid.items())},
                "mean_class_fid": self.mean_class_fid, "n": self.n}


def class_quality(fake_images: torch.Tensor, labels: Sequence[int] | torch.Tensor, classifier: Callable | None,
                  extractor: Callable, real_features_by_class: Mapping[int, torch.Tensor]) -> ClassQuality:
    """Class accuracy and per-class FID of ``fake_images`` (N, C, H, W) in [-1, 1] generated for ``labels``.

    Args:
        classifier: Images -> logits (N, K) (``MnistFeatures.logits``); None where no classifier knows the
            run's classes (no class accuracy then, per-class FID only).
        extractor: The feature extractor of ``real_features_by_class`` (a module, as :func:`extract` takes).
    """
    from greendiff.evaluate._features import extract

    fake = extract(extractor, fake_images)
    accuracy = class_accuracy(fake_images, labels, classifier) if classifier is not None else None
    return ClassQuality(accuracy,
                        per_class_fid(fake, labels, real_features_by_class), fake_images.shape[0])
