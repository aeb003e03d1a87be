"""The trainer's evaluator: sample quality (FID, KID, precision, recall) of the EMA weights, and for a
class-conditional model the class accuracy of its samples.

A collaborator of the trainer: it is handed a way to draw images (``draw(n, seed, labels)``, the trainer's
sampler with the EMA weights swapped in) and returns the scores, the same on every process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from greendiff.data import DIGIT_CLASSES


class QualityEvaluator:
    """Scores ``eval_samples`` generated images against the training images' features.

    In a job each process draws its share with its own seed and the main process scores them all; the
    scores are broadcast. With ``seeds`` > 1 the metric's spread over seeds is reported too. For a
    class-conditional model (``num_classes`` K > 0) the samples are asked for a class-balanced list of
    classes (:func:`greendiff.evaluate.balanced_labels`), and when the features are the bundled MNIST
    ones and the classes are the digits (``class_names`` '0'..'9' in order, as the bundled ``mnist`` and
    ``digits`` sets name them) ``class_accuracy`` is scored too: the share of samples the classifier
    (``MnistFeatures.logits``) assigns to the class asked for. Other classes (cat, dog; bare ids) get none:
    the digit classifier's verdict on them means nothing.

    Args:
        eval_samples: Images per evaluation (``stop.eval_samples``).
        features: The feature extractor (``stop.eval_features``).
        seed: The run's seed; evaluation noise is seeded from it, never from the training RNG.
        dist: The job's :class:`greendiff.parallel.Dist`.
        num_classes: K of a class-conditional model, 0 (default) for an unconditional one.
        class_names: The data's name of each class id 0..K-1 (``data.class_names``; ``()`` for bare ids).

    Example::

        evaluator = QualityEvaluator(500, "mnist", seed=0, dist=Dist(), num_classes=10,
                                     class_names=data.class_names)
        evaluator.prepare(data.reference_images())
        scores = evaluator.evaluate(lambda n, seed, labels: family.sample(net, sampler, n, 20, shape,
                                                                         torch.Generator().manual_seed(seed),
                                                                         labels=labels))
    """

    def __init__(self, eval_samples: int, features: str, seed: int, dist, num_classes: int = 0,
                 class_names: Sequence[str] = ()) -> None:
        self.eval_samples, self.features, self.seed, self.dist = eval_samples, features, seed, dist
        self.num_classes, self.class_names = num_classes, tuple(class_names)
        self.extractor = self.real_features = self.classifier = None

    def prepare(self, images: torch.Tensor) -> None:
        """The real images' reference features, ``images`` uint8 (N, C, H, W) (main process; the caller
        meters it)."""
        if not self.dist.is_main:
            return
        from greendiff.evaluate import MnistFeatures, reference_features, resolve_extractor

        self.extractor, _ = resolve_extractor(self.features)
        self.real_features = reference_features(images, self.extractor)
        if self.scores_digits() and isinstance(self.extractor, MnistFeatures):
            self.classifier = self.extractor.logits

    def scores_digits(self) -> bool:
        """Whether the classes are the digits 0-9 that the bundled classifier knows (``class_accuracy``)."""
        return self.num_classes == len(DIGIT_CLASSES) and self.class_names == DIGIT_CLASSES

    def labels(self, n: int) -> list[int] | None:
        """The classes of ``n`` samples (balanced), or None for an unconditional model."""
        from greendiff.evaluate import balanced_labels

        return balanced_labels(n, self.num_classes) if self.num_classes else None

    def evaluate(self, draw: Callable[[int, int, list[int] | None], torch.Tensor], seeds: int = 1) -> dict:
        """Scores of the images ``draw(n, seed, labels)`` gives (n, C, H, W) in [-1, 1] (``labels``: one class
        per image, or None); with ``seeds`` > 1 also their ``spread`` (std over seeds)."""
        from greendiff.evaluate import class_accuracy, quality, seed_spread

        dist, results = self.dist, []
        share = -(-self.eval_samples // dist.world_size) if dist.distributed else self.eval_samples
        wanted = self.labels(share * dist.world_size)  # this process draws its slice of one balanced list
        mine = wanted[dist.rank * share:(dist.rank + 1) * share] if wanted is not None else None
        for k in range(seeds):
            fake = draw(share, self.seed + 54_321 + k + 7_777 * dist.rank, mine)
            if dist.distributed:
                fake = torch.cat(dist.all_gather(fake.cpu()))[:self.eval_samples]
            if dist.is_main:
                scores = quality(fake, self.real_features, self.extractor).to_dict()  # KID subset: at most the samples
                if self.classifier is not None:
                    scores["class_accuracy"] = class_accuracy(fake, wanted[:fake.shape[0]], self.classifier)
                results.append(scores)
        scores = None
        if dist.is_main:
            scores = results[0]
            if seeds > 1:
                scores["spread"] = seed_spread(results)
        return dist.broadcast(scores if dist.is_main else None)
