"""A dataset saved with Hugging Face ``datasets``' ``save_to_disk``, read lazily (memory-mapped Arrow).

Needs the optional ``datasets`` package (``pip install 'greendiff[datasets]'``). The images come from
the first ``Image`` feature (or a column named ``image``/``img`` of encoded bytes), decoded one at a
time; labels from ``label_column`` or else the first ``ClassLabel`` feature; captions from
``caption_column``. A ``DatasetDict`` gives its ``train`` split (or its only one).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from greendiff.data._labels import CLASS_ID_RANGE, MAX_CLASSES, captions_from_values, labels_from_values, unknown_column
from greendiff.data._sources import BadImage, as_l_or_rgb, check_size, mode_channels
from greendiff.errors import UserInputError
from greendiff.names import display_path, first_line

INSTALL = "pip install 'greendiff[datasets]'"
#: Images whose headers decide a saved dataset's channels (1 only if all are greyscale).
_CHANNEL_PROBE = 16


def is_saved_dataset(path: Path) -> bool:
    """Whether a folder is the output of ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()) or (path / "dataset_dict.json").is_file()


def _split_folders(path: Path) -> list[Path]:
    """The folder of the saved dataset itself, or of each split of a saved DatasetDict."""
    return [path] if (path / "state.json").is_file() else sorted(p.parent for p in path.glob("*/state.json"))


def _has_empty_split(path: Path) -> bool:
    """Whether the saved dataset (or a split of it) holds no Arrow file: no rows, which ``datasets`` cannot load."""
    try:
        return any(json.loads((folder / "state.json").read_text()).get("_data_files") == []
                   for folder in _split_folders(path))
    except (OSError, ValueError, AttributeError):  # unreadable: load_from_disk says why
        return False


def saved_columns(path: Path) -> list[str]:
    """The columns of a saved dataset (its ``train`` split, or its first) but its image columns, from its
    ``dataset_info.json`` alone (no ``datasets`` import); ``[]`` when that cannot be read."""
    folders = _split_folders(path)
    folder = next((f for f in folders if f.name == "train"), folders[0] if folders else path)
    try:
        features = json.loads((folder / "dataset_info.json").read_text()).get("features") or {}
        return [name for name, f in features.items() if not (isinstance(f, dict) and f.get("_type") == "Image")]
    except (OSError, ValueError, AttributeError):
        return []


def decode_bytes(raw: bytes, name: str):
    """An encoded image (PNG, JPEG ...) decoded to mode ``L`` or ``RGB``; :class:`BadImage` if unusable."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
        with img:
            check_size(img.width, img.height)
            img.load()
            return as_l_or_rgb(img, name)
    except BadImage:
        raise
    except Exception as exc:  # Pillow's many exception types for a broken image
        raise BadImage(f"corrupt or not an image ({first_line(exc)})") from None


def _header_channels(raw: bytes) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        return mode_channels(img.mode)


@dataclass(frozen=True)
class SavedReader:
    """Rows of a saved dataset's image column (picklable: the Arrow files are mapped again in a worker)."""

    dataset: object  # datasets.Dataset, its image column cast to undecoded {"bytes", "path"}
    column: str
    where: str

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, i: int) -> str:
        return f"{self.where} row {i}"

    def sources(self) -> dict:
        """The saved dataset's Arrow files and the image column read from them."""
        files = [Path(f["filename"]) for f in getattr(self.dataset, "cache_files", [])]
        if not files:
            raise ValueError(f"{self.where}: a saved dataset without files on disk cannot be identified undecoded")
        return {"files": files, "column": self.column}

    def raw(self, i: int) -> bytes:
        value = self.dataset[int(i)][self.column]
        if isinstance(value, dict):
            if value.get("bytes") is None and value.get("path"):
                return Path(value["path"]).read_bytes()
            value = value.get("bytes")
        if not isinstance(value, (bytes, bytearray)):
            raise BadImage(f"no image bytes in column {self.column!r} (a {type(value).__name__})")
        return bytes(value)

    def decode(self, i: int):
        return decode_bytes(self.raw(i), self.name(i))

    def error(self, i: int, exc: Exception) -> UserInputError:
        return UserInputError(f"{self.name(i)}: {exc}; fix it (or pass --skip-bad-images to use the next image instead)")


@dataclass(frozen=True)
class SavedIndex:
    """What a saved dataset holds: its image reader, channels, labels, captions."""

    reader: SavedReader
    channels: int
    labels: torch.Tensor | None
    captions: tuple[str, ...] | None
    class_names: tuple[str, ...]


def _split(loaded, where: str):
    """The dataset itself, or a DatasetDict's ``train`` split (or its only one)."""
    if not hasattr(loaded, "keys"):
        return loaded
    splits = list(loaded.keys())
    if "train" in splits or len(splits) == 1:
        return loaded["train" if "train" in splits else splits[0]]
    raise UserInputError(f"{where}: a DatasetDict without a 'train' split (splits: {', '.join(splits)})")


def _image_column(dataset, datasets, where: str) -> str:
    features = dataset.features
    found = [name for name, f in features.items() if isinstance(f, datasets.Image)]
    found += [name for name in ("image", "img") if name in features and name not in found]
    if not found:
        raise UserInputError(f"{where}: no image column (an Image feature, or one named image or img); columns: "
                             f"{', '.join(features)}")
    return found[0]


def _labels(dataset, datasets, label_column: str, image_column: str, where: str):
    """``(labels, class_names)`` of ``label_column`` or the first ClassLabel feature (``(None, ())`` without)."""
    features = dataset.features
    if not label_column:
        label_column = next((n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), "")
        if not label_column:
            return None, ()
    if label_column not in features or label_column == image_column:
        raise unknown_column("label", label_column, [c for c in features if c != image_column], where)
    values = dataset.data.column(label_column).to_pylist()  # the column alone, not the images
    names = [f"row {i}" for i in range(len(values))]
    feature = features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        if len(feature.names) > MAX_CLASSES:
            raise UserInputError(f"{where}: its ClassLabel {label_column!r} has {len(feature.names):,} classes; "
                                 f"{CLASS_ID_RANGE}")
        ids, _ = labels_from_values(values, names, label_column, where)
        return torch.tensor(ids, dtype=torch.int64), tuple(feature.names)
    ids, class_names = labels_from_values(values, names, label_column, where)
    return torch.tensor(ids, dtype=torch.int64), class_names


def open_saved(path: Path, label_column: str = "", caption_column: str = "") -> SavedIndex:
    """Open a ``save_to_disk`` folder lazily: columns checked, labels and captions read, images left on disk."""
    where = display_path(path)
    try:
        import datasets
    except ImportError:
        raise UserInputError(f"{where} is a dataset saved by Hugging Face datasets; reading it needs that package: "
                             f"{INSTALL}") from None
    try:
        dataset = _split(datasets.load_from_disk(str(path)), where)
    except UserInputError:
        raise
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid ... for a damaged folder
        if _has_empty_split(path):  # datasets fails on a split of no Arrow files with an IndexError
            raise UserInputError(f"the saved dataset {where} has no rows") from None
        raise UserInputError(f"cannot read the saved dataset {where}: {first_line(exc)}") from None
    if len(dataset) == 0:
        raise UserInputError(f"the saved dataset {where} has no rows")
    column = _image_column(dataset, datasets, where)
    if isinstance(dataset.features[column], datasets.Image):
        mode = dataset.features[column].mode
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    else:
        mode = None
    reader = SavedReader(dataset, column, where)
    labels, class_names = _labels(dataset, datasets, label_column, column, where)
    captions = None
    if caption_column:
        if caption_column not in dataset.features or caption_column == column:
            raise unknown_column("caption", caption_column, [c for c in dataset.features if c != column], where)
        values = dataset.data.column(caption_column).to_pylist()
        captions = captions_from_values(values, [f"row {i}" for i in range(len(values))], caption_column, where)
    return SavedIndex(reader, _channels(reader, mode), labels, captions, class_names)


def _channels(reader: SavedReader, mode: str | None) -> int:
    """1 if the feature's mode is greyscale, or (no mode) the first images' headers all are; else 3."""
    if mode:
        return mode_channels(mode)
    probe = []
    for i in range(min(len(reader), _CHANNEL_PROBE)):
        try:
            probe.append(_header_channels(reader.raw(i)))
        except Exception:  # a bad image is reported when it is decoded
            continue
    return 1 if probe and max(probe) == 1 else 3
