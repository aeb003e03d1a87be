"""Class conditioning resolved once, against the data, before a run directory exists: the number of classes a
``model.conditioning = "class"`` run trains on is the dataset's, and it is written into ``config.toml``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import display_path


def _unlabelled_example(dataset: str, data, index: int) -> str:
    """How to name image ``index`` of ``data`` in a message: its file (a folder's file directly in the root,
    a streamed set's file by its reader), else its position."""
    reader = getattr(getattr(data, "decode_set", None), "reader", None)
    if reader is not None and hasattr(reader, "name"):
        return repr(reader.name(index))
    folder = Path(dataset)
    if folder.is_dir():
        from greendiff.data import image_files

        root_file = next((p for p in image_files(folder) if p.parent == folder), None)
        if root_file is not None:
            return repr(root_file.name)
    return f"image #{index}"


def resolve_conditioning(config, data):
    """``config`` with ``model.num_classes`` set to the dataset's number of classes when
    ``model.conditioning`` is ``class`` (unchanged otherwise).

    One-line :class:`UserInputError` when the data has no labels, when some images have no class (label
    ``-1``: a file outside the class subfolders), or when a given (or saved, on resume) ``model.num_classes``
    is not the dataset's.
    """
    model = config.model
    if model.conditioning != "class":
        return config
    dataset = config.data.dataset
    labels = data.labels
    if labels is None or data.num_classes == 0:
        raise UserInputError(f"--conditioning class needs class labels, and dataset {display_path(Path(dataset))} has "
                             "none: use class subfolders, or a metadata.jsonl/.csv column named by --label-column")
    unlabelled = (labels < 0).nonzero().flatten()
    if unlabelled.numel():
        example = _unlabelled_example(dataset, data, int(unlabelled[0]))
        raise UserInputError(f"--conditioning class: {unlabelled.numel():,} of {data.num_images:,} images have no class "
                             f"(e.g. {example}, outside the class subfolders); move them into a class folder or "
                             "give every file a label in metadata.jsonl")
    found = data.num_classes
    if model.num_classes and model.num_classes != found:
        raise UserInputError(f"model.num_classes is {model.num_classes} but dataset {display_path(Path(dataset))} has "
                             f"{found} classes; leave model.num_classes at 0 (the dataset's) or match it")
    return dataclasses.replace(config, model=dataclasses.replace(model, num_classes=found))
