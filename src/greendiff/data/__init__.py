"""Training data: bundled MNIST, scikit-learn digits, image folders (class subfolders, metadata.jsonl/.csv
labels and captions), ``datasets`` save_to_disk folders and arrays; held in memory, or streamed from disk
by loader workers when larger than a memory budget. Every kind hands out the same :class:`Batch` per step."""

from __future__ import annotations

from greendiff.data._batches import REFERENCE_IMAGES, Batch, ImageSet, batch_indices, reference_indices, step_indices
from greendiff.data._hf import is_saved_dataset, open_saved
from greendiff.data._labels import FolderIndex, index_folder, read_metadata
from greendiff.data._load import Data, load_dataset
from greendiff.data._sources import (
    BUILTIN,
    IGNORED_FOLDERS,
    image_files,
    is_hidden,
    load_array,
    load_digits,
    load_folder,
    load_mnist,
    read_idx_images,
    read_idx_labels,
    resize_square,
)
from greendiff.data._stream import StepBatchSampler, StreamedSet, decoded_bytes, placement

__all__ = ["BUILTIN", "IGNORED_FOLDERS", "REFERENCE_IMAGES", "Batch", "Data", "FolderIndex", "ImageSet", "StepBatchSampler",
           "StreamedSet", "batch_indices", "decoded_bytes", "image_files", "index_folder", "is_hidden", "is_saved_dataset",
           "load_array", "load_dataset", "load_digits", "load_folder", "load_mnist", "open_saved", "placement",
           "read_idx_images", "read_idx_labels", "read_metadata", "reference_indices", "resize_square", "step_indices"]
