"""Training data: bundled MNIST, scikit-learn digits, image folders and arrays, held in memory."""

from __future__ import annotations

from greendiff.data._sources import (
    BUILTIN,
    IGNORED_FOLDERS,
    ImageSet,
    image_files,
    is_hidden,
    load_array,
    load_dataset,
    load_digits,
    load_folder,
    load_mnist,
    read_idx_images,
    resize_square,
)

__all__ = ["BUILTIN", "IGNORED_FOLDERS", "ImageSet", "image_files", "is_hidden", "load_array", "load_dataset", "load_digits", "load_folder", "load_mnist",
           "read_idx_images", "resize_square"]
