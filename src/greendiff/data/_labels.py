"""Labels and captions of an image folder, in the Hugging Face ``datasets`` *imagefolder* layout.

The layout diffusers' training scripts read (``examples/text_to_image/README.md``; ``datasets``'
ImageFolder): class subfolders are labels (``train/cat/1.png`` -> ``cat``; the class names sorted, ids
``0..K-1``; a file directly in the root has no class, id ``-1``), and a ``metadata.jsonl`` or
``metadata.csv`` beside the images names each one by ``file_name`` (its path relative to the folder)
with more columns: a class (``label_column``: integers, or class names sorted into ids) or a caption
(``caption_column``: strings). Every problem is one :class:`UserInputError` line.

Integer class ids are used as given: ``K = max id + 1`` classes, so ids ``{3, 7}`` make ``K = 8`` with
classes 0-2 and 4-6 empty (``class_counts`` of the loaded data shows them). Ids are ``0..MAX_CLASSES - 1``.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from greendiff.data._constants import MAX_CLASSES
from greendiff.errors import UserInputError
from greendiff.names import display_path

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
#: The column of a folder's class subfolders, as ``datasets`` names it.
FOLDER_LABEL = "label"
#: The range of class ids, as messages say it.
CLASS_ID_RANGE = f"class ids are 0..{MAX_CLASSES - 1:,} (at most {MAX_CLASSES:,} classes)"
_INTEGER = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class FolderIndex:
    """The image files of a folder, in order, with their class ids and captions.

    Attributes:
        files: The image files, sorted.
        labels: A class id per file (``-1``: no class), or ``None``.
        captions: A caption per file, or ``None``.
        class_names: Name of each class id (``()`` when the ids are bare integers).
    """

    files: tuple[Path, ...]
    labels: tuple[int, ...] | None = None
    captions: tuple[str, ...] | None = None
    class_names: tuple[str, ...] = ()

    def subset(self, keep: Sequence[int]) -> FolderIndex:
        """The files at positions ``keep`` (and their labels and captions)."""
        return replace(self, files=tuple(self.files[i] for i in keep),
                       labels=None if self.labels is None else tuple(self.labels[i] for i in keep),
                       captions=None if self.captions is None else tuple(self.captions[i] for i in keep))

    def label_tensor(self) -> torch.Tensor | None:
        return None if self.labels is None else torch.tensor(self.labels, dtype=torch.int64)


@dataclass(frozen=True)
class Metadata:
    """A folder's metadata file: its columns and a row per ``file_name`` (a normalised relative path)."""

    where: str
    columns: tuple[str, ...]
    rows: dict[str, dict]


def _relative_name(value: object, where: str, line: int) -> str:
    """A row's ``file_name`` as a normalised relative path; one inside the folder or an error."""
    if not isinstance(value, str) or not value:
        raise UserInputError(f"{where} line {line}: file_name must be a non-empty string, got {value!r}")
    name = posixpath.normpath(value.replace("\\", "/"))
    if posixpath.isabs(name) or re.match(r"[A-Za-z]:", name) or name == ".." or name.startswith("../"):
        raise UserInputError(f"{where} line {line}: file_name {value!r} leads outside the folder; name files by "
                             "their path relative to it (e.g. cat/1.png)")
    return name


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different (``json`` keeps the last of a repeated key silently)."""
    keys = [key for key, _ in pairs]
    repeated = next((key for i, key in enumerate(keys) if key in keys[:i]), None)
    if repeated is not None:
        raise _DuplicateKey(repeated)
    return dict(pairs)


def _jsonl_rows(text: str, where: str) -> list[tuple[int, dict]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise UserInputError(f"{where} line {line}: the key {str(exc)!r} appears twice; give each key once") from None
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{where} line {line}: not valid JSON ({exc.msg}); each line is one JSON object "
                                 'such as {"file_name": "1.png", "text": "a cat"}') from None
        if not isinstance(row, dict):
            raise UserInputError(f"{where} line {line}: a JSON {type(row).__name__}, expected an object with a file_name")
        rows.append((line, row))
    return rows


def _csv_rows(text: str, where: str) -> list[tuple[int, dict]]:
    reader = csv.reader(text.splitlines(), strict=True)
    rows = []
    try:
        header = next(reader, None)
        if not header:
            return []
        repeated = next((name for i, name in enumerate(header) if name in header[:i]), None)
        if repeated is not None:
            raise UserInputError(f"{where}: column {repeated!r} appears twice in the header; name each column once")
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise UserInputError(f"{where} line {reader.line_num}: {len(fields)} fields, the header has "
                                     f"{len(header)} ({', '.join(header)})")
            rows.append((reader.line_num, {k: (v if v != "" else None) for k, v in zip(header, fields)}))
    except csv.Error as exc:
        raise UserInputError(f"{where} line {reader.line_num}: not valid CSV ({exc})") from None
    return rows


def read_metadata(folder: Path) -> Metadata | None:
    """The folder's ``metadata.jsonl`` or ``metadata.csv`` (``None`` without one), each row checked: a
    ``file_name`` inside the folder, named once, that exists."""
    found = [folder / name for name in METADATA_NAMES if (folder / name).is_file()]
    if not found:
        return None
    if len(found) > 1:
        raise UserInputError(f"{display_path(folder)} holds both metadata.jsonl and metadata.csv; keep one")
    path = found[0]
    where = display_path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    rows = _jsonl_rows(text, where) if path.suffix == ".jsonl" else _csv_rows(text, where)
    columns = list(dict.fromkeys(key for _, row in rows for key in row))
    if rows and "file_name" not in columns:
        raise UserInputError(f"{where}: no file_name column (columns: {', '.join(map(str, columns))}); each row names "
                             "its image by file_name, relative to the folder")
    by_name, lines = {}, {}
    for line, row in rows:
        name = _relative_name(row.get("file_name"), where, line)
        if name in by_name:
            raise UserInputError(f"{where} line {line}: file_name {name!r} is already on line {lines[name]}")
        if not (folder / name).is_file():
            raise UserInputError(f"{where} line {line}: file_name {name!r}: no such file in {display_path(folder)}")
        by_name[name], lines[name] = row, line
    return Metadata(where, tuple(c for c in columns if c != "file_name"), by_name)


def _missing(kind: str, values: Sequence[object], names: Sequence[str], column: str, where: str) -> None:
    """Refuse values missing for some files: how many, and one of them."""
    missing = [name for name, value in zip(names, values) if value is None or value == ""]
    if missing:
        raise UserInputError(f"{kind} missing for {len(missing):,} of {len(names):,} images (e.g. {missing[0]!r}): "
                             f"each needs a {column!r} value in {where}")


def _as_label(value: object) -> object:
    """A label as read: integer text (a CSV cell, ``"3"``) is an int and other number text (``"0.5"``,
    ``"1.0"``) a float, as JSON would have them; anything else stays as it is."""
    if isinstance(value, str):
        if _INTEGER.fullmatch(value):
            return int(value)
        if _NUMBER.fullmatch(value):
            return float(value)
    return value


def _check_one_kind(values: Sequence[object], names: Sequence[str], column: str, where: str) -> None:
    """Refuse a column mixing class ids and class names, naming the first row of the fewer kind."""
    is_name = [isinstance(v, str) for v in values]
    n_names = sum(is_name)
    if n_names in (0, len(values)):
        return
    minority = n_names <= len(values) - n_names  # names are the fewer kind (or as many)
    first = next(i for i, flag in enumerate(is_name) if flag == minority)
    few = n_names if minority else len(values) - n_names
    kinds = ("class names", "class ids") if minority else ("class ids", "class names")
    raise UserInputError(f"label column {column!r} of {where} mixes class ids and class names: {names[first]!r} holds "
                         f"{values[first]!r} ({kinds[0]} in {few:,} of {len(values):,} rows, {kinds[1]} in the rest); "
                         "use one kind throughout")


def check_class_ids(ids: Sequence[int], names: Sequence[str], column: str, where: str) -> None:
    """Refuse a class id outside ``0..MAX_CLASSES - 1``, naming its row and value (before any tensor is made:
    an id past int64 would not fit one)."""
    bad = next(((n, v) for n, v in zip(names, ids) if not 0 <= v < MAX_CLASSES), None)
    if bad is not None:
        raise UserInputError(f"label column {column!r} of {where} holds {bad[1]} ({bad[0]!r}); {CLASS_ID_RANGE}")


def labels_from_values(values: Sequence[object], names: Sequence[str], column: str, where: str,
                       ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Class ids and class names of a label column: integers ``0..MAX_CLASSES - 1`` used as given (integers
    written as text, as in a CSV, too; ``K = max id + 1``), or strings as class names sorted into ids
    ``0..K-1``. One kind per column; a float (or number text that is not an integer) is refused."""
    _missing("labels", values, names, column, where)
    values = [_as_label(v) for v in values]
    wrong = next(((n, v) for n, v in zip(names, values) if isinstance(v, bool)
                  or not isinstance(v, (int, str))), None)
    if wrong is not None:
        raise UserInputError(f"label column {column!r} of {where} holds a {type(wrong[1]).__name__} "
                             f"({wrong[0]!r}: {wrong[1]!r}); labels are integers or class names")
    _check_one_kind(values, names, column, where)
    if values and isinstance(values[0], str):
        class_names = tuple(sorted(set(values)))
        if len(class_names) > MAX_CLASSES:
            raise UserInputError(f"label column {column!r} of {where} names {len(class_names):,} classes; "
                                 f"{CLASS_ID_RANGE}")
        ids = {name: i for i, name in enumerate(class_names)}
        return tuple(ids[v] for v in values), class_names
    check_class_ids(values, names, column, where)
    return tuple(values), ()


def captions_from_values(values: Sequence[object], names: Sequence[str], column: str, where: str) -> tuple[str, ...]:
    """The captions of a caption column: one string per image."""
    _missing("captions", values, names, column, where)
    wrong = next(((n, v) for n, v in zip(names, values) if not isinstance(v, str)), None)
    if wrong is not None:
        raise UserInputError(f"caption column {column!r} of {where} holds a {type(wrong[1]).__name__} "
                             f"({wrong[0]!r}: {wrong[1]!r}); captions are strings")
    return tuple(values)


def unknown_column(kind: str, column: str, columns: Sequence[str], where: str) -> UserInputError:
    """The line for a ``label_column``/``caption_column`` the data does not have."""
    have = ", ".join(map(str, columns)) or "none"
    return UserInputError(f"{kind}_column {column!r}: {where} has no such column (columns: {have})")


def _folder_classes(names: Sequence[str]) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """Class ids from the first folder of each relative name (``-1`` for a file in the root), or ``None``
    when no file is in a subfolder."""
    classes = sorted({name.split("/", 1)[0] for name in names if "/" in name})
    if not classes:
        return None
    ids = {c: i for i, c in enumerate(classes)}
    return tuple(ids[n.split("/", 1)[0]] if "/" in n else -1 for n in names), tuple(classes)


def _no_metadata(kind: str, column: str, where: str, has_classes: bool) -> UserInputError:
    """The line for a ``label_column``/``caption_column`` given for a folder without a metadata file."""
    if kind == "caption":
        source = "captions come from a column of a metadata.jsonl or metadata.csv beside the images"
    elif has_classes:
        source = "its labels come from class subfolders (drop label_column)"
    else:
        source = "labels come from class subfolders or a column of a metadata.jsonl or metadata.csv beside the images"
    return UserInputError(f"{kind}_column {column!r}: {where} has no metadata.jsonl or metadata.csv; {source}")


def index_folder(folder: Path, files: Sequence[Path], label_column: str = "", caption_column: str = "") -> FolderIndex:
    """The labels and captions of ``files`` (the image files of ``folder``, sorted).

    Args:
        folder: The image folder.
        files: Its image files (``image_files(folder)``).
        label_column: A metadata column of class ids or names; ``""`` (default): the class subfolders,
            if any (``"label"`` names them too when the metadata has no such column). Refused for a
            folder without a metadata file.
        caption_column: A metadata column of captions; ``""`` (default): no captions.
    """
    names = [p.relative_to(folder).as_posix() for p in files]
    meta = read_metadata(folder)
    folder_classes = _folder_classes(names)
    if meta is None:
        for kind, column in (("label", label_column), ("caption", caption_column)):
            if column:
                raise _no_metadata(kind, column, display_path(folder), folder_classes is not None)
        labels, class_names = folder_classes or (None, ())
        return FolderIndex(tuple(files), labels=labels, class_names=class_names)
    known = set(names)
    stray = next((n for n in meta.rows if n not in known), None)
    if stray is not None:
        raise UserInputError(f"{meta.where}: file_name {stray!r} is not one of the folder's image files (a hidden "
                             "file, or not an image by its extension)")
    columns = list(meta.columns)
    if folder_classes is not None and FOLDER_LABEL not in columns:
        columns.append(FOLDER_LABEL)
    labels, class_names = None, ()
    if (not label_column or label_column == FOLDER_LABEL and FOLDER_LABEL not in meta.columns) \
            and folder_classes is not None:
        labels, class_names = folder_classes
    elif label_column:
        if label_column not in meta.columns:
            raise unknown_column("label", label_column, columns, meta.where)
        labels, class_names = labels_from_values([meta.rows.get(n, {}).get(label_column) for n in names], names,
                                                 label_column, meta.where)
    captions = None
    if caption_column:
        if caption_column not in meta.columns:
            raise unknown_column("caption", caption_column, columns, meta.where)
        captions = captions_from_values([meta.rows.get(n, {}).get(caption_column) for n in names], names,
                                        caption_column, meta.where)
    return FolderIndex(tuple(files), labels, captions, class_names)
