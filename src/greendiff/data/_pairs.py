"""DreamBooth's batches with prior preservation (Ruiz et al. 2023, section 3.3): every step trains on a batch
of the subject's images and an equal batch of class images the base model generated, so the class prior is
kept while the subject is learned. diffusers' ``train_dreambooth.py`` concatenates the two the same way
(instance examples first, class examples after) and weighs the class half's loss by ``prior_loss_weight``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from greendiff.data._batches import step_indices


@dataclass(frozen=True)
class PriorPairs:
    """A dataset whose first ``instances`` images are the subject's and the rest the class images.

    Each step's batch holds ``batch_size`` instance images then ``batch_size`` class images, both in the
    seeded order of their own set (:func:`step_indices`), so a resumed run draws the same pairs.

    Attributes:
        inner: Anything with ``take(indices)`` and ``num_images`` (an :class:`~greendiff.data.ImageSet`, or
            the latent cache's set of its latents), instance images first.
        instances: How many of ``inner``'s images are the subject's.

    Example:
        >>> from greendiff.data import ImageSet
        >>> data = PriorPairs(ImageSet(torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1), "five"), instances=2)
        >>> [int(v) for v in next(data.batches(0, batch_size=2, seed=0)).images.flatten()], data.class_images
        ([0, 1, 3, 4], 3)
    """

    inner: Any
    instances: int

    def __post_init__(self) -> None:
        if not 0 < self.instances < self.inner.num_images:
            raise ValueError(f"instances must be between 1 and {self.inner.num_images - 1}, got {self.instances}")

    @property
    def class_images(self) -> int:
        return self.inner.num_images - self.instances

    @property
    def num_images(self) -> int:
        return int(self.inner.num_images)

    def __getattr__(self, name: str):  # channels, captions, labels, source, placement ... are the inner set's
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def with_inner(self, inner) -> PriorPairs:
        """The same pairing over ``inner`` (the same images in the same order, e.g. as cached latents)."""
        return replace(self, inner=inner)

    def batches(self, start_step: int = 0, batch_size: int = 1, world_size: int = 1, rank: int = 0, seed: int = 0,
                stop_step: int | None = None) -> Iterator:
        """The batches of steps ``start_step, ...`` for ``rank``: its ``batch_size`` instance images, then its
        ``batch_size`` class images."""
        step = start_step
        while stop_step is None or step < stop_step:
            subject = step_indices(step, self.instances, batch_size, world_size, rank, seed)
            prior = self.instances + step_indices(step, self.class_images, batch_size, world_size, rank, seed + 1)
            yield self.inner.take(torch.cat([subject, prior]))
            step += 1
