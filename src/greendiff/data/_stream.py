"""Data larger than its memory budget, decoded from disk by loader workers a step ahead of the trainer.

A :class:`StreamedSet` hands out the same batches as an :class:`~greendiff.data.ImageSet` of the same
files and seed: a batch sampler yields each step's indices (:func:`~greendiff.data.step_indices`), and
a torch ``DataLoader`` with worker processes decodes, resizes and collates them in order, ``prefetch_factor``
batches per worker ahead. Resuming at step ``k`` starts the sampler at ``k``.

Unreadable files: with ``skip_bad_images`` a file whose *header* is unusable is found up front by a
cheap header check of every file and left out (as an in-memory folder leaves it out); a file whose
header is fine but whose pixels fail to decode later (a truncated PNG) is **replaced deterministically**
by the next file in order that decodes, with its label and caption (the index order, and so every other
batch, stays what the seed says). Without ``skip_bad_images`` either is a one-line error naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from greendiff.data._batches import (
    REFERENCE_IMAGES, Batch, Labelled, reference_indices, step_indices)
from greendiff.data._sources import BadImage, _decode, _pixels, bad_file_error
from greendiff.errors import UserInputError
from greendiff.names import display_path

logger = logging.getLogger(__name__)

#: Images decoded at a time in the main process (reference images, saved datasets loaded into memory).
_CHUNK = 256


def decoded_bytes(num_images: int, channels: int, resolution: int) -> int:
    """Bytes of the decoded uint8 images: ``N x C x R x R``."""
    return num_images * channels * resolution * resolution


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def placement(num_images: int, channels: int, resolution: int, cache_max_gb: float | None, workers: int,
              streamable: bool = True) -> tuple[bool, str]:
    """Whether to stream, and the one printable line that says why.

    Args:
        num_images, channels, resolution: The decoded images (``uint8``, ``resolution`` pixels square).
        cache_max_gb: Memory budget of the decoded images in GB (1e9 bytes); ``None``: no budget (in memory).
        workers: Loader worker processes when streamed.
        streamable: Whether the source can stream (bundled sets and arrays are always held in memory).

    Example:
        >>> placement(12_000, 3, 256, 1.0, 2)
        (True, 'data: 12,000 images, 2.4 GB decoded > cache_max_gb 1: streamed from disk with 2 workers')
    """
    size = decoded_bytes(num_images, channels, resolution)
    head = f"data: {num_images:,} images, {_size(size)} decoded"
    if cache_max_gb is None:
        return False, f"{head}: in memory"
    if size <= cache_max_gb * 1e9:
        return False, f"{head} <= cache_max_gb {cache_max_gb:g}: in memory"
    if not streamable:
        return False, f"{head} > cache_max_gb {cache_max_gb:g}: in memory all the same (only image folders and saved datasets stream)"
    return True, f"{head} > cache_max_gb {cache_max_gb:g}: streamed from disk with {workers} worker{'s' * (workers != 1)}"


def check_budget(cache_max_gb: float | None, workers: int) -> None:
    """Refuse a budget that is not a non-negative number of GB, or a negative worker count."""
    if cache_max_gb is not None and not (isinstance(cache_max_gb, (int, float)) and math.isfinite(cache_max_gb)
                                         and cache_max_gb >= 0):
        raise UserInputError(f"cache_max_gb must be a number of GB, 0 or more; got {cache_max_gb!r}")
    if workers < 0:
        raise UserInputError(f"loader workers must be 0 or more; got {workers}")


class ImageReader(Protocol):
    """Where a streamed set's images come from (picklable: it travels to the loader workers)."""

    def __len__(self) -> int: ...

    def name(self, i: int) -> str: ...

    def decode(self, i: int):
        """Image ``i`` decoded as a Pillow image of mode ``L`` or ``RGB``; :class:`BadImage` if unusable."""

    def sources(self) -> dict:
        """What identifies the images without decoding them: ``{"files": [Path, ...], ...}`` (the files they
        are read from; any other key a JSON value), for a cache keyed by the data."""


@dataclass(frozen=True)
class FileReader:
    """Images of files on disk (an image folder)."""

    files: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.files)

    def name(self, i: int) -> str:
        return display_path(self.files[i])

    def decode(self, i: int):
        return _decode(self.files[i])

    def error(self, i: int, exc: Exception) -> UserInputError:
        return bad_file_error(self.files[i], exc)

    def sources(self) -> dict:
        return {"files": list(self.files)}


@dataclass(frozen=True)
class _Failure:
    """A batch a worker could not decode: the one line the main process raises (a worker's exception
    would come back as a multi-line traceback)."""

    message: str


def _identity(batch):
    return batch


class DecodeSet(Dataset):
    """Decodes and resizes images of a reader, a whole batch per call (``__getitems__``).

    Args:
        reader: Where the images come from.
        resolution: Output side in pixels.
        channels: Output channels (greyscale among colour images is repeated; colour among grey is averaged).
        labels: ``int64 (N,)`` or ``None``.
        captions: One per image, or ``None``.
        skip_bad_images: Replace an image that fails to decode by the next one that decodes, instead of an error.
    """

    def __init__(self, reader: ImageReader, resolution: int, channels: int, labels: torch.Tensor | None,
                 captions: Sequence[str] | None, skip_bad_images: bool) -> None:
        self.reader, self.resolution, self.channels = reader, resolution, channels
        self.labels, self.captions, self.skip_bad_images = labels, captions, skip_bad_images

    def __len__(self) -> int:
        return len(self.reader)

    def _pixels(self, i: int) -> torch.Tensor:
        img = self.reader.decode(i)
        if (img.mode == "L") != (self.channels == 1):
            img = img.convert("L" if self.channels == 1 else "RGB")
        return _pixels(img, self.resolution)  # (C, R, R)

    def _usable(self, i: int) -> tuple[int, torch.Tensor]:
        """The index actually used for ``i`` and its pixels (``i`` itself unless it fails to decode)."""
        n = len(self.reader)
        first = None
        for k in range(n if self.skip_bad_images else 1):
            j = (i + k) % n
            try:
                return j, self._pixels(j)
            except (BadImage, OSError) as exc:
                if not self.skip_bad_images:
                    raise self.reader.error(j, exc) from None
                first = first or (j, exc)
                logger.warning("%s: %s; replaced by the next image that decodes", self.reader.name(j), exc)
        raise UserInputError(f"no readable image: e.g. {self.reader.name(first[0])}: {first[1]}")

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._usable(int(i))[1]

    def __getitems__(self, indices: Sequence[int]) -> Batch | _Failure:
        try:
            used, pixels = zip(*(self._usable(int(i)) for i in indices))
        except UserInputError as exc:
            return _Failure(str(exc))
        labels = self.labels[list(used)] if self.labels is not None else None
        captions = [self.captions[j] for j in used] if self.captions is not None else None
        return Batch(torch.stack(pixels), labels, captions)


class StepBatchSampler(Sampler):
    """The index lists of steps ``start_step, start_step + 1, ...`` (until ``stop_step``) for one rank."""

    def __init__(self, n: int, batch_size: int, world_size: int, rank: int, seed: int, start_step: int,
                 stop_step: int | None = None) -> None:
        self.n, self.batch_size, self.world_size, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.start_step, self.stop_step = start_step, stop_step

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.stop_step is None or step < self.stop_step:
            yield step_indices(step, self.n, self.batch_size, self.world_size, self.rank, self.seed).tolist()
            step += 1


def _init_worker(worker_id: int) -> None:
    """One thread per worker (the workers are the parallelism), and its RNGs seeded from the loader's
    seed (torch gives each worker ``base_seed + worker_id``) for any augmentation that draws numbers."""
    torch.set_num_threads(1)
    os.nice(10)  # decoding yields to the training threads (measured on 2 cores: see BENCHMARKS.md, streaming)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _raise_failure(item: Batch | _Failure) -> Batch:
    if isinstance(item, _Failure):
        raise UserInputError(item.message)
    return item


class StreamedSet(Labelled):
    """Images decoded from disk as the trainer needs them (the same interface as :class:`ImageSet`).

    Args:
        decode_set: The images, labels and captions, decoded per batch.
        source: What was loaded, for the run record.
        skipped: Files left out by the header check.
        class_names: Name of each class id.
        placement: The line that says why it streams.
        workers: Loader worker processes (0: decode in the trainer's process).
        prefetch_factor: Batches each worker decodes ahead.
    """

    def __init__(self, decode_set: DecodeSet, source: str, skipped: int = 0, class_names: tuple[str, ...] = (),
                 placement: str = "", workers: int = 2, prefetch_factor: int = 2) -> None:
        self.decode_set, self.source, self.skipped, self.class_names = decode_set, source, skipped, class_names
        self.placement, self.workers, self.prefetch_factor = placement, workers, prefetch_factor

    @property
    def channels(self) -> int:
        return self.decode_set.channels

    @property
    def num_images(self) -> int:
        return len(self.decode_set)

    @property
    def labels(self) -> torch.Tensor | None:
        return self.decode_set.labels

    @property
    def captions(self) -> Sequence[str] | None:
        return self.decode_set.captions

    def sources(self) -> dict:
        """What identifies the images without decoding a pixel: the reader's files (``files``) and source, and
        how they are decoded (resolution, channels, bad-image policy)."""
        d = self.decode_set
        return {**d.reader.sources(), "resolution": d.resolution, "channels": d.channels,
                "skip_bad_images": d.skip_bad_images}

    def batches(self, start_step: int = 0, batch_size: int = 1, world_size: int = 1, rank: int = 0, seed: int = 0,
                stop_step: int | None = None) -> Iterator[Batch]:
        """The batches of steps ``start_step, start_step + 1, ...`` (until ``stop_step``, if given) for ``rank``,
        decoded by the loader's workers in order."""
        sampler = StepBatchSampler(self.num_images, batch_size, world_size, rank, seed, start_step, stop_step)
        workers = self.workers
        loader = DataLoader(self.decode_set, batch_sampler=sampler, collate_fn=_identity, num_workers=workers,
                            persistent_workers=workers > 0, prefetch_factor=self.prefetch_factor if workers else None,
                            worker_init_fn=_init_worker if workers else None,
                            generator=torch.Generator().manual_seed(seed * 7_919 + start_step))
        batches = iter(loader)
        try:
            for item in batches:
                yield _raise_failure(item)
        finally:  # workers shut down now, not when a traceback holding this frame is collected (5 s a worker)
            del batches, loader

    def reference_images(self, max_images: int = REFERENCE_IMAGES, seed: int = 0) -> torch.Tensor:
        """A seeded sample of at most ``max_images`` real images, decoded here (``uint8 (M, C, H, W)``)."""
        return decode_all(self.decode_set, reference_indices(self.num_images, max_images, seed).tolist()).images


def decode_all(decode_set: DecodeSet, indices: Sequence[int]) -> Batch:
    """The images at ``indices`` decoded in this process, a chunk at a time, into one batch."""
    out = torch.empty((len(indices), decode_set.channels, decode_set.resolution, decode_set.resolution),
                      dtype=torch.uint8)
    labels, captions = [], []
    for start in range(0, len(indices), _CHUNK):
        chunk = _raise_failure(decode_set.__getitems__(indices[start:start + _CHUNK]))
        out[start:start + chunk.size] = chunk.images
        labels.append(chunk.labels)
        captions += chunk.captions or []
    return Batch(out, torch.cat(labels) if decode_set.labels is not None else None,
                 captions if decode_set.captions is not None else None)
