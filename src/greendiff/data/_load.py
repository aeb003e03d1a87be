"""The one entry point: a dataset spec to data held in memory or streamed from disk, by a memory budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from greendiff.data._batches import ImageSet
from greendiff.data._hf import is_saved_dataset, open_saved, saved_columns
from greendiff.data._labels import FOLDER_LABEL, FolderIndex, unknown_column
from greendiff.data._sources import (
    BUILTIN, check_fits_in_memory, folder_index, image_channels, load_array, load_digits, load_folder, load_mnist, read_each)
from greendiff.data._stream import DecodeSet, FileReader, StreamedSet, check_budget, decode_all, placement
from greendiff.errors import UserInputError
from greendiff.names import display_path

#: What :func:`load_dataset` returns: both hand out batches the same way.
Data = ImageSet | StreamedSet


def _header_check(folder: Path, index: FolderIndex, skip_bad_images: bool) -> tuple[FolderIndex, int, int]:
    """``(index of the usable files, channels, files skipped)`` by each file's header (no pixels decoded)."""
    channels, kept, skipped = read_each(folder, index.files, image_channels, skip_bad_images, "whose headers are unusable")
    return index.subset(kept), max(channels), skipped


def _folder(folder: Path, resolution: int, skip_bad_images: bool, label_column: str, caption_column: str,
            cache_max_gb: float | None, workers: int, prefetch_factor: int) -> Data:
    """An image folder: in memory when its decoded size fits the budget (first counted as colour, then by the
    files' headers), else streamed."""
    index = folder_index(folder, label_column, caption_column)
    streamed, _ = placement(len(index.files), 3, resolution, cache_max_gb, workers)
    if streamed:
        usable, channels, skipped = _header_check(folder, index, skip_bad_images)
        streamed, line = placement(len(usable.files), channels, resolution, cache_max_gb, workers)
    if not streamed:
        data = load_folder(folder, resolution, skip_bad_images, index)
        line = placement(data.num_images, data.channels, resolution, cache_max_gb, workers)[1]
        return dataclasses.replace(data, placement=line)
    decode_set = DecodeSet(FileReader(usable.files), resolution, channels, usable.label_tensor(), usable.captions,
                           skip_bad_images)
    return StreamedSet(decode_set, f"image folder {folder} ({len(usable.files)} images)", skipped, usable.class_names,
                       line, workers, prefetch_factor)


def _saved(path: Path, resolution: int, skip_bad_images: bool, label_column: str, caption_column: str,
           cache_max_gb: float | None, workers: int, prefetch_factor: int) -> Data:
    """A ``save_to_disk`` folder: decoded into memory when it fits the budget, else streamed."""
    saved = open_saved(path, label_column, caption_column)
    n, channels = len(saved.reader), saved.channels
    decode_set = DecodeSet(saved.reader, resolution, channels, saved.labels, saved.captions, skip_bad_images)
    streamed, line = placement(n, channels, resolution, cache_max_gb, workers)
    source = f"saved dataset {path} ({n} images)"
    if streamed:
        return StreamedSet(decode_set, source, 0, saved.class_names, line, workers, prefetch_factor)
    check_fits_in_memory(n, channels, resolution, display_path(path), 0)
    batch = decode_all(decode_set, list(range(n)))
    return ImageSet(batch.images, source, labels=batch.labels,
                    captions=tuple(batch.captions) if batch.captions is not None else None,
                    class_names=saved.class_names, placement=line)


def _in_memory(data: ImageSet, label_column: str, resolution: int, cache_max_gb: float | None, workers: int) -> ImageSet:
    """A bundled set or an array (always in memory), its label column checked, its placement line added."""
    if label_column and (label_column != FOLDER_LABEL or data.labels is None):
        raise unknown_column("label", label_column, [FOLDER_LABEL] if data.labels is not None else [], data.source)
    line = placement(data.num_images, data.channels, resolution, cache_max_gb, workers, streamable=False)[1]
    return dataclasses.replace(data, placement=line)


def load_dataset(spec: str, resolution: int, skip_bad_images: bool = False, *, label_column: str = "",
                 caption_column: str = "", cache_max_gb: float | None = None, workers: int = 2,
                 prefetch_factor: int = 2) -> Data:
    """``mnist`` (bundled), ``digits`` (scikit-learn), an image folder (class subfolders, ``metadata.jsonl``/
    ``.csv``), a ``datasets`` ``save_to_disk`` folder, or a ``.npy``/``.npz`` file (an ``.npz`` may hold ``labels``).

    Args:
        spec: The dataset.
        resolution: Side of the square training images, pixels.
        skip_bad_images: Skip unusable files instead of stopping (:func:`load_folder`; streamed: see
            :mod:`greendiff.data._stream`).
        label_column: Metadata column of class ids or names (default: class subfolders / the source's labels);
            refused where there is no such column to read (a folder without a metadata file, the bundled sets).
            Integer ids are used as given (``num_classes`` = max id + 1; ``class_counts`` shows empty classes).
        caption_column: Metadata column of captions (default: none); refused likewise.
        cache_max_gb: Memory budget of the decoded images in GB; larger folders and saved datasets stream
            from disk. ``None`` (default): always in memory.
        workers: Loader worker processes when streamed.
        prefetch_factor: Batches each worker decodes ahead.

    Returns:
        An :class:`ImageSet` or a :class:`StreamedSet`; its ``placement`` is the one line saying which and why.
    """
    if resolution < 4:
        raise UserInputError(f"resolution must be at least 4 pixels, got {resolution}")
    if "\x00" in spec:
        raise UserInputError(f"dataset {spec!r}: a path cannot hold a NUL character")
    check_budget(cache_max_gb, workers)
    path = Path(spec)
    if spec.lower() in BUILTIN:
        _no_captions(caption_column, spec)
        if label_column:
            raise UserInputError(f"label_column {label_column!r}: the bundled {spec.lower()} has its own labels (the "
                                 "digit of each image); drop label_column")
        data = load_mnist(resolution) if spec.lower() == "mnist" else load_digits(resolution)
        return _in_memory(data, label_column, resolution, cache_max_gb, workers)
    args = (resolution, skip_bad_images, label_column, caption_column, cache_max_gb, workers, prefetch_factor)
    if path.is_dir():
        return _saved(path, *args) if is_saved_dataset(path) else _folder(path, *args)
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        _no_captions(caption_column, spec)
        return _in_memory(load_array(path, resolution), label_column, resolution, cache_max_gb, workers)
    if not path.exists() and (path.suffix or len(path.parts) > 1):
        raise UserInputError(f"dataset {spec!r}: no such file or folder")
    raise UserInputError(f"unknown dataset {spec!r}: use mnist, digits, an image folder, or a .npy/.npz file")


def label_sources(spec: str) -> str:
    """What gives dataset ``spec`` class labels, for a message asking for labels it lacks: e.g.
    ``"dataset D has none: use " + label_sources(D)``.

    Example:
        >>> label_sources("photos/")
        'class subfolders, or a metadata.jsonl/.csv column named by --label-column'
    """
    path = Path(spec)
    if spec.lower() in BUILTIN:
        return f"the bundled {spec.lower()}'s own labels"
    if path.is_dir() and is_saved_dataset(path):
        columns = saved_columns(path)
        if not columns:
            return "a ClassLabel feature (it has no column besides its images; save it with one)"
        return f"a ClassLabel feature, or --label-column naming one of its columns ({', '.join(columns)})"
    if path.suffix.lower() in (".npy", ".npz"):
        return "an .npz holding a 'labels' array of class ids beside the images (np.savez(f, images=..., labels=...))"
    return "class subfolders, or a metadata.jsonl/.csv column named by --label-column"


def _no_captions(caption_column: str, spec: str) -> None:
    if caption_column:
        raise UserInputError(f"captions requested (caption_column {caption_column!r}) but dataset {spec!r} has none: "
                             "captions come from a metadata.jsonl/.csv column of an image folder or a saved dataset")
