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
    ``-1``: a file outside the class subfolders), when a given (or saved, on resume) ``model.num_classes``
    is not the dataset's, when the dataset's count fails the config's checks (ids beyond 99,999), or when
    a class id below it has no images.
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
    resolved = dataclasses.replace(config, model=dataclasses.replace(model, num_classes=found))
    _check_resolved(resolved, dataset)  # before counting: K sizes the count
    _check_every_class_has_images(data, found, dataset)
    return resolved


def _check_resolved(config, dataset: str) -> None:
    """``config`` with its dataset's number of classes passes the config's own checks (``resolve_config``'s
    bounds: ``model.num_classes`` at most 100,000), so a label id of 2**40 stops here, before a run exists."""
    from greendiff.train import resolve_config, to_dict

    try:
        resolve_config(base=to_dict(config))
    except UserInputError as exc:
        raise UserInputError(f"--conditioning class: dataset {display_path(Path(dataset))} has class ids up to "
                             f"{config.model.num_classes - 1}, so {exc}") from None


def class_counts(data, num_classes: int):
    """Images of each class id 0..K-1 (``int64 (K,)``): the data's own ``class_counts`` when it has them, else
    counted from its labels."""
    import torch

    counts = getattr(data, "class_counts", None)
    if counts is not None:
        return torch.as_tensor(counts, dtype=torch.int64)
    return torch.bincount(data.labels, minlength=num_classes)


def _check_every_class_has_images(data, num_classes: int, dataset: str) -> None:
    """One line when some class id below K has no image: integer labels {3, 7} make K = 8 and leave classes
    0-6 untrained (an embedding row per id, sampled and scored as if it were a class)."""
    counts = class_counts(data, num_classes)
    empty = [c for c, count in enumerate(counts.tolist()[:num_classes]) if count == 0]
    empty += list(range(len(counts), num_classes))
    if not empty:
        return
    listed = ", ".join(map(str, empty[:3])) + (", ..." if len(empty) > 3 else "")
    raise UserInputError(f"--conditioning class: class ids {listed} have no images ({len(empty):,} of {num_classes:,} "
                         f"classes empty in dataset {display_path(Path(dataset))}): class ids must run 0..{num_classes - 1} "
                         "with images in each; renumber the labels, or use class names (folders or a text label column)")


def check_unconditional_teacher(teacher: Path, command: str) -> None:
    """One line, before any work, when ``teacher`` (a run directory) holds a class-conditional model: distillation
    (``command``: ``distill`` or ``distill-steps``) trains unconditional students only; the line says what works
    instead. A teacher whose pipeline is missing or damaged passes: the workflow names what is wrong."""
    from greendiff.ledger import BadRecordError, load_json_file

    path = teacher / "pipeline" / "unet" / "config.json"
    try:
        raw = load_json_file(path) if path.is_file() else None
    except BadRecordError:
        return
    rows = raw.get("num_class_embeds") if isinstance(raw, dict) else None
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 2 or raw.get("class_embed_type") is not None:
        return
    shown = display_path(teacher)
    raise UserInputError(f"{command}: --teacher {shown} is class-conditional ({rows - 1} classes) and distillation "
                         "takes unconditional teachers only; distil a run trained with --conditioning none, or make "
                         f"this one smaller with greendiff prune --run {shown}")
