"""Training data: the bundled MNIST, scikit-learn's digits, image folders in the Hugging Face *imagefolder*
layout (class subfolders, ``metadata.jsonl``/``.csv`` with labels and captions), ``datasets`` save_to_disk
folders and arrays. :func:`load_dataset` holds them in memory (:class:`ImageSet`), or streams them from disk
through loader workers (:class:`StreamedSet`) when larger than a memory budget; either way
``batches(start_step, ...)`` hands out the same :class:`Batch` per step for the same seed.

Example:
    >>> from greendiff.data import load_dataset
    >>> data = load_dataset("digits", 8)
    >>> tuple(data.images.shape), data.channels
    ((1797, 1, 8, 8), 1)
    >>> batch = next(iter(data.batches(start_step=0, batch_size=4, seed=0)))
    >>> tuple(batch.images.shape), batch.labels.tolist()
    ((4, 1, 8, 8), [6, 5, 5, 7])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greendiff.data._constants import BUILTIN, DIGIT_CLASSES, MAX_CLASSES, REFERENCE_IMAGES

if TYPE_CHECKING:
    from greendiff.data._batches import Batch, ImageSet, Labelled, batch_indices, reference_indices, step_indices
    from greendiff.data._load import Data, label_sources, load_dataset
    from greendiff.data._pairs import PriorPairs
    from greendiff.data._sources import image_files, load_digits
    from greendiff.data._stream import StreamedSet, decode_all

#: Where each name that needs torch lives: imported on first use, so ``import greendiff.data`` (and
#: ``greendiff --help``, which reads the constants) does not import torch.
_LAZY = {"Batch": "_batches", "ImageSet": "_batches", "batch_indices": "_batches", "reference_indices": "_batches",
         "step_indices": "_batches", "Labelled": "_batches", "decode_all": "_stream",
         "Data": "_load", "label_sources": "_load", "load_dataset": "_load", "PriorPairs": "_pairs",
         "image_files": "_sources", "load_digits": "_sources", "StreamedSet": "_stream"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BUILTIN", "DIGIT_CLASSES",
    # loading
    "Data", "load_dataset", "load_digits", "image_files", "ImageSet", "StreamedSet",
    # labels: the class-id cap (ids 0..MAX_CLASSES - 1) and what gives a dataset its labels, for messages
    "MAX_CLASSES", "label_sources",
    # batches by step, and the reference images of evaluations
    "Batch", "batch_indices", "step_indices", "REFERENCE_IMAGES", "reference_indices",
    # for layers that hold a dataset's derived form (the latent cache): the labels' helpers, decoding in chunks
    "Labelled", "decode_all",
    # DreamBooth with prior preservation: each batch the subject's images, then as many class images
    "PriorPairs",
]
