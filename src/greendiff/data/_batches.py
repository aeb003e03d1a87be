"""One batch interface for the trainer: the images of every step, in memory or streamed.

The order is one function (:func:`batch_indices`): a fresh seeded permutation per epoch, so a seed
names the same batches whether the images sit in memory or are decoded from disk by workers, and a
run resumed at step ``k`` draws exactly the batches ``k, k+1, ...`` of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from greendiff.data._constants import REFERENCE_IMAGES


@dataclass(frozen=True)
class Batch:
    """The images of one step on one process, with their labels and captions when the data has them.

    Attributes:
        images: ``uint8`` ``(B, C, H, W)``.
        labels: ``int64`` ``(B,)`` class ids (``-1``: an image without a class), or ``None``.
        captions: One string per image, or ``None``.

    Example:
        >>> b = Batch(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))
        >>> b.size, b.labels.tolist()
        (2, [0, 1])
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    captions: list[str] | None = None

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the batch of ``step``: a fresh permutation per epoch, seeded by (seed, epoch)."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch_size:(k + 1) * batch_size]


def step_indices(step: int, n: int, batch_size: int, world_size: int, rank: int, seed: int) -> torch.Tensor:
    """The indices process ``rank`` trains on at ``step``: its slice of the global batch of
    ``batch_size * world_size`` images (rank 0 of a job and a single process draw alike)."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"batch_size {batch_size}, world_size {world_size}, rank {rank}: need batch_size >= 1 and "
                         "0 <= rank < world_size")
    return batch_indices(step, n, batch_size * world_size, seed)[rank * batch_size:(rank + 1) * batch_size]


def reference_indices(n: int, max_images: int, seed: int) -> torch.Tensor:
    """Which images are the real reference for FID: all ``n`` when they are at most ``max_images``, else a
    seeded sample of ``max_images``, sorted (files read in order)."""
    if n <= max_images:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_images].sort().values


def count_classes(labels: torch.Tensor | None, class_names: Sequence[str]) -> int:
    """Classes of a labelled set: its named classes, or the largest id + 1 (0 without labels)."""
    if labels is None:
        return 0
    return len(class_names) or (int(labels.max()) + 1 if labels.numel() else 0)


def class_counts(labels: torch.Tensor | None, class_names: Sequence[str]) -> tuple[int, ...]:
    """Images per class id ``0..K-1`` (``K``: :func:`count_classes`; ``()`` without labels). Integer ids are
    used as given, so ids ``{3, 7}`` give ``K = 8`` and zeros for the classes no image has; images without a
    class (``-1``) are not counted.

    Example:
        >>> class_counts(torch.tensor([3, 7, 7, -1]), ())
        (0, 0, 0, 1, 0, 0, 0, 2)
    """
    k = count_classes(labels, class_names)
    if not k:
        return ()
    return tuple(torch.bincount(labels[labels >= 0], minlength=k).tolist())


class Labelled:
    """What a dataset's labels tell, for any dataset with ``labels`` (int64 (N,) or None) and ``class_names``."""

    @property
    def num_classes(self) -> int:
        return count_classes(self.labels, self.class_names)

    @property
    def class_counts(self) -> tuple[int, ...]:
        """Images per class id ``0..num_classes-1`` (a zero: a class no image has; :func:`class_counts`), from
        the labels known up front (a streamed set decodes nothing)."""
        return class_counts(self.labels, self.class_names)


@dataclass(frozen=True)
class ImageSet(Labelled):
    """Images in memory, with their labels and captions when the source has them.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)``.
        source: What was loaded, for the run record.
        skipped: Files skipped as corrupt or not images.
        labels: ``int64`` ``(N,)`` class ids (``-1``: no class), or ``None``. Integer ids from the source are
            used as given: ``num_classes`` is the largest id + 1, and :attr:`class_counts` shows empty classes.
        captions: One caption per image, or ``None``.
        class_names: Name of each class id (``()`` when the ids are bare integers).
        placement: One printable line: how big the decoded data is and where it is held.

    Example:
        >>> data = ImageSet(torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1), "six", labels=torch.arange(6))
        >>> batch = next(data.batches(0, batch_size=2, seed=0))
        >>> batch.images.flatten().tolist() == batch.labels.tolist()
        True
    """

    images: torch.Tensor
    source: str
    skipped: int = 0
    labels: torch.Tensor | None = None
    captions: tuple[str, ...] | None = None
    class_names: tuple[str, ...] = ()
    placement: str = ""

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    def take(self, indices: torch.Tensor) -> Batch:
        """The images (labels, captions) at ``indices``."""
        captions = [self.captions[int(i)] for i in indices] if self.captions is not None else None
        return Batch(self.images[indices], self.labels[indices] if self.labels is not None else None, captions)

    def batches(self, start_step: int = 0, batch_size: int = 1, world_size: int = 1, rank: int = 0, seed: int = 0,
                stop_step: int | None = None) -> Iterator[Batch]:
        """The batches of steps ``start_step, start_step + 1, ...`` (until ``stop_step``, if given) for ``rank``."""
        step = start_step
        while stop_step is None or step < stop_step:
            yield self.take(step_indices(step, self.num_images, batch_size, world_size, rank, seed))
            step += 1

    def reference_images(self, max_images: int = REFERENCE_IMAGES, seed: int = 0) -> torch.Tensor:
        """Real images for FID reference features: all of them (this very tensor) up to ``max_images``, else
        a seeded sample of ``max_images`` (``uint8 (M, C, H, W)``)."""
        if self.num_images <= max_images:
            return self.images
        return self.images[reference_indices(self.num_images, max_images, seed)]
