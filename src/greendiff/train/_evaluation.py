"""The trainer's evaluator: sample quality (FID, KID, precision, recall) of the EMA weights.

A collaborator of the trainer: it is handed a way to draw images (``draw(n, seed)``, the trainer's
sampler with the EMA weights swapped in) and returns the scores, the same on every process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class QualityEvaluator:
    """Scores ``eval_samples`` generated images against the training images' features.

    In a job each process draws its share with its own seed and the main process scores them all; the
    scores are broadcast. With ``seeds`` > 1 the metric's spread over seeds is reported too.

    Args:
        eval_samples: Images per evaluation (``stop.eval_samples``).
        features: The feature extractor (``stop.eval_features``).
        seed: The run's seed; evaluation noise is seeded from it, never from the training RNG.
        dist: The job's :class:`greendiff.parallel.Dist`.
    """

    def __init__(self, eval_samples: int, features: str, seed: int, dist) -> None:
        self.eval_samples, self.features, self.seed, self.dist = eval_samples, features, seed, dist
        self.extractor = self.real_features = None

    def prepare(self, images: torch.Tensor) -> None:
        """The training images' reference features (main process; the caller meters it)."""
        if not self.dist.is_main:
            return
        from greendiff.evaluate import reference_features, resolve_extractor

        self.extractor, _ = resolve_extractor(self.features)
        self.real_features = reference_features(images, self.extractor)

    def evaluate(self, draw: Callable[[int, int], torch.Tensor], seeds: int = 1) -> dict:
        """Scores of the images ``draw(n, seed)`` gives (n, C, H, W) in [-1, 1]; with ``seeds`` > 1 also
        their ``spread`` (std over seeds)."""
        from greendiff.evaluate import quality, seed_spread

        dist, results = self.dist, []
        share = -(-self.eval_samples // dist.world_size) if dist.distributed else self.eval_samples
        for k in range(seeds):
            fake = draw(share, self.seed + 54_321 + k + 7_777 * dist.rank)
            if dist.distributed:
                fake = torch.cat(dist.all_gather(fake.cpu()))[:self.eval_samples]
            if dist.is_main:
                results.append(quality(fake, self.real_features, self.extractor).to_dict())  # KID subset: at most the samples
        scores = None
        if dist.is_main:
            scores = results[0]
            if seeds > 1:
                scores["spread"] = seed_spread(results)
        return dist.broadcast(scores if dist.is_main else None)
