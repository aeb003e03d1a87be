"""Image sources, loaded once into memory as tensors (small sets: no loader can stall the step).

Every source ends as ``uint8`` images ``(N, C, H, W)`` at the training resolution; the trainer
scales them to ``[-1, 1]``.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from greendiff.data._batches import ImageSet
from greendiff.data._constants import BUILTIN, DIGIT_CLASSES
from greendiff.data._labels import CLASS_ID_RANGE, MAX_CLASSES, FolderIndex, index_folder
from greendiff.errors import UserInputError
from greendiff.names import display_path, first_line

logger = logging.getLogger(__name__)

_TABLES = resources.files("greendiff.data") / "tables"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
T = TypeVar("T")


def read_idx_images(raw: bytes, where: str) -> np.ndarray:
    """Decode an IDX3 image file (big-endian magic 2051, count, rows, cols, then uint8 pixels)."""
    if len(raw) < 16:
        raise UserInputError(f"{where}: truncated IDX header")
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise UserInputError(f"{where}: not an IDX image file (magic {magic}, expected 2051)")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if pixels.size != count * rows * cols:
        raise UserInputError(f"{where}: truncated: {pixels.size} pixels for {count}x{rows}x{cols}")
    return pixels.reshape(count, 1, rows, cols)


def read_idx_labels(raw: bytes, where: str) -> np.ndarray:
    """Decode an IDX1 label file (big-endian magic 2049, count, then one uint8 label each) as int64."""
    if len(raw) < 8:
        raise UserInputError(f"{where}: truncated IDX header")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != 2049:
        raise UserInputError(f"{where}: not an IDX label file (magic {magic}, expected 2049)")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if labels.size != count:
        raise UserInputError(f"{where}: truncated: {labels.size} labels of {count}")
    return labels.astype(np.int64)


def resize_square(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Centre-crop to a square, then resize it to ``resolution`` (antialiased): uint8 in, uint8 out.

    Cropping first keeps memory bounded by the input and the output: an extreme aspect ratio (a
    4,000,000 x 1 image) never becomes a huge intermediate (resizing the shorter side first made it
    64,000,000 x 16 floats, 12 GB per RGB image)."""
    _, _, h, w = images.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = images[:, :, top:top + side, left:left + side]
    if side == resolution:
        return square.contiguous()
    out = F.interpolate(square.float(), size=(resolution, resolution), mode="bilinear", antialias=True,
                        align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


#: Working memory of one batch of images being converted and resized (:func:`_batch_size`).
BATCH_BYTES = 64 * 2**20
#: Working bytes per output pixel of ``resize_square``: the float interpolation (4), its rounded and
#: clamped copies (4 + 4, as the uint8 result is made from them) and that result (1), rounded up.
_RESIZE_BYTES_PER_PIXEL = 16


def _resize_bytes(channels: int, resolution: int) -> int:
    """Working bytes of resizing one image to ``resolution`` (its output side; the input side is the caller's)."""
    return channels * resolution * resolution * _RESIZE_BYTES_PER_PIXEL


def check_fits_in_memory(images: int, channels: int, resolution: int, where: str, batch_bytes: int,
                         data_bytes: int = 0, copies: int = 1) -> None:
    """Refuse, before anything is allocated, a dataset whose uint8 images at ``resolution`` (``copies``
    of them), the data as read (``data_bytes``) and the working batch (``batch_bytes``) would not fit in
    free memory. The one memory check of every dataset kind (bundled, folders, arrays)."""
    need = copies * images * channels * resolution * resolution + data_bytes + batch_bytes
    available = psutil.virtual_memory().available
    if need > available:
        data = f", {data_bytes / 1e9:.1f} GB of it the data as read" if data_bytes else ""
        raise UserInputError(f"{where}: the dataset at {resolution} px would need {need / 1e9:.1f} GB ({images:,} "
                             f"images x {channels} channel(s) and the working batch{data}); free memory is "
                             f"{available / 1e9:.1f} GB; lower --resolution" + (" or use fewer images" if data_bytes else ""))


def _resize_all(images: torch.Tensor, resolution: int, where: str) -> torch.Tensor:
    """``resize_square`` of a uint8 ``(N, C, H, W)`` set a batch at a time, after the memory check."""
    n, c, h, w = images.shape
    per_image = c * min(h, w) ** 2 * 4 + _resize_bytes(c, resolution)
    batch = _batch_size(n, 1, per_image)
    check_fits_in_memory(n, c, resolution, where, batch * per_image)
    out = torch.empty((n, c, resolution, resolution), dtype=torch.uint8)
    for start in range(0, n, batch):
        out[start:start + batch] = resize_square(images[start:start + batch], resolution)
    return out


def load_mnist(resolution: int) -> ImageSet:
    """The bundled MNIST test set (10,000 digits; see tables/SOURCES.md)."""
    raw = gzip.decompress((_TABLES / "t10k-images-idx3-ubyte.gz").read_bytes())
    images = torch.from_numpy(read_idx_images(raw, "bundled MNIST").copy())
    labels = read_idx_labels(gzip.decompress((_TABLES / "t10k-labels-idx1-ubyte.gz").read_bytes()), "bundled MNIST labels")
    return ImageSet(_resize_all(images, resolution, "mnist"), "MNIST test set (bundled, 10,000 digits, CC BY-SA 3.0)",
                    labels=torch.from_numpy(labels), class_names=DIGIT_CLASSES)


def load_digits(resolution: int) -> ImageSet:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)  # (1797, 8, 8) 0..16
    return ImageSet(_resize_all(images, resolution, "digits"), "scikit-learn digits (1,797 images, 8x8)",
                    labels=torch.from_numpy(bunch.target.astype(np.int64)), class_names=DIGIT_CLASSES)


@dataclass(frozen=True)
class _ArrayHeader:
    """What a ``.npy`` header declares, read before any of the data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_bytes: int  # the bytes of data after the header, in the file (or the zip member)

    @property
    def declared_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _npy_header(fp, total_bytes: int) -> _ArrayHeader:
    """The header of a ``.npy`` stream of ``total_bytes`` bytes (ValueError if it is not one)."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(fp)
    reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, _fortran, dtype = reader(fp)
    return _ArrayHeader(tuple(shape), dtype, total_bytes - fp.tell())


def _array_header(path: Path) -> tuple[_ArrayHeader, str | None]:
    """The header of a ``.npy`` file, or of the first array of a ``.npz`` other than ``labels`` (and that array's key)."""
    if path.suffix.lower() == ".npy":
        with path.open("rb") as f:
            return _npy_header(f, path.stat().st_size), None
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if m.filename != LABELS_MEMBER] or archive.infolist()
        if not members:
            raise ValueError("the archive holds no arrays")
        first = members[0]  # the images: the first array but the labels
        key = first.filename[:-4] if first.filename.endswith(".npy") else first.filename  # as np.load names it
        with archive.open(first) as f:
            try:
                return _npy_header(f, first.file_size), key
            except ValueError as exc:
                raise ValueError(f"its first member {first.filename!r} is not a .npy array ({exc})") from None


#: The member of an ``.npz`` that holds the images' class ids (``np.savez(f, images=..., labels=...)``).
LABELS_MEMBER = "labels.npy"


def _npz_labels(path: Path, n: int, where: str) -> torch.Tensor | None:
    """The ``labels`` array of an ``.npz``: ``None`` without one, else ``n`` non-negative integers as int64."""
    if path.suffix.lower() != ".npz":
        return None
    with zipfile.ZipFile(path) as archive:
        if LABELS_MEMBER not in archive.namelist():
            return None
        with archive.open(LABELS_MEMBER) as f:
            header = _npy_header(f, archive.getinfo(LABELS_MEMBER).file_size)
    if header.dtype.kind not in "iu" or header.shape != (n,):
        raise UserInputError(f"{where}: its 'labels' array is {header.shape} {header.dtype}; expected {n} integers "
                             "(one class id per image)")
    with np.load(path, allow_pickle=False) as loaded:
        labels = loaded["labels"].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
        raise UserInputError(f"{where}: its 'labels' array holds {labels.min() if labels.min() < 0 else labels.max()}; "
                             f"{CLASS_ID_RANGE}")
    return torch.from_numpy(labels)


def _check_array_header(header: _ArrayHeader, where: str) -> None:
    """Refuse, from the header alone, what must never be loaded or cannot be images."""
    dtype = header.dtype
    if dtype.hasobject:
        raise UserInputError(f"{where}: holds Python objects (dtype {dtype}), which greendiff never loads: "
                             "unpickling can run code; save the images as numbers")
    if dtype.names is not None or dtype.subdtype is not None:
        raise UserInputError(f"{where}: a structured array (dtype {dtype}); save the images as one numeric array")
    if dtype.kind == "c":
        raise UserInputError(f"{where}: complex numbers (dtype {dtype}); images are real numbers")
    if dtype.kind not in "biuf":
        raise UserInputError(f"{where}: not numbers (dtype {dtype}); expected uint8, integer, float or bool images")
    if header.data_bytes < header.declared_bytes:
        raise UserInputError(f"{where}: truncated: its header declares {header.shape} {dtype} "
                             f"({header.declared_bytes:,} bytes) but only {max(header.data_bytes, 0):,} bytes of data follow")


#: Working bytes per input pixel of an array batch, besides its own: a contiguous copy (the array's item
#: size), the float32 pixels (4), their uint8 result (1), and the float copy ``resize_square`` interpolates (4),
#: rounded up.
_WORK_BYTES_PER_PIXEL = 12


def _pixel_bytes(header: _ArrayHeader) -> int:
    return header.dtype.itemsize + _WORK_BYTES_PER_PIXEL


def _batch_size(images: int, pixels_per_image: int, bytes_per_pixel: int) -> int:
    """Images per batch: as many as fit in :data:`BATCH_BYTES` of working memory (at least one)."""
    return max(1, min(images, BATCH_BYTES // max(pixels_per_image * bytes_per_pixel, 1)))


def _array_image_bytes(header: _ArrayHeader, shape: tuple[int, int, int, int], resolution: int) -> int:
    """Working bytes of converting and resizing one image of an array (input and output side)."""
    _, c, h, w = shape
    return c * h * w * _pixel_bytes(header) + _resize_bytes(c, resolution)


def _check_memory(header: _ArrayHeader, shape: tuple[int, int, int, int], resolution: int, where: str) -> None:
    """Refuse, before loading, an array whose loading would not fit in free memory: the data itself
    (as its header declares it, so a small compressed .npz member that inflates to GBs counts in full),
    the uint8 images it becomes, and one batch of work (converted and resized a batch at a time)."""
    per_image = _array_image_bytes(header, shape, resolution)
    batch = _batch_size(shape[0], 1, per_image)
    check_fits_in_memory(shape[0], shape[1], resolution, f"{where} ({header.shape} {header.dtype})",
                         batch * per_image, data_bytes=header.declared_bytes)


def _image_shape(shape: tuple[int, ...], where: str) -> tuple[tuple[int, int, int, int], str]:
    """``((N, C, H, W), layout)`` of an array shaped ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``
    (``layout``: which), C in (1, 3), no empty axis; read from the header, before any data."""
    if len(shape) == 3:
        nchw, layout = (shape[0], 1, shape[1], shape[2]), "NHW"
    elif len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        nchw, layout = (shape[0], shape[3], shape[1], shape[2]), "NHWC"
    else:
        nchw, layout = shape, "NCHW"
    if len(nchw) == 4 and nchw[0] == 0:
        raise UserInputError(f"{where}: the array holds no images (shape {nchw})")
    if len(nchw) != 4 or nchw[1] not in (1, 3):
        raise UserInputError(f"{where}: expected images shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C in "
                             f"(1, 3); got {nchw}")
    if 0 in nchw[2:]:
        raise UserInputError(f"{where}: images of {nchw[2]}x{nchw[3]} pixels (an empty axis, shape {nchw})")
    return nchw, layout


def _as_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    """A view of ``array`` as ``(N, C, H, W)`` (no copy)."""
    return array[:, None] if layout == "NHW" else array.transpose(0, 3, 1, 2) if layout == "NHWC" else array


def _pixel_range(array: np.ndarray, batch: int, where: str) -> tuple[float, float]:
    """The smallest and largest value of a numeric array, a batch at a time; a NaN or inf is refused."""
    lo, hi = math.inf, -math.inf
    for start in range(0, array.shape[0], batch):
        part = array[start:start + batch]
        if part.dtype.kind == "f" and not np.isfinite(part).all():
            raise UserInputError(f"{where}: array must be numeric and finite (it holds NaN or infinite values)")
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    return lo, hi


def _to_uint8(part: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """uint8 pixels of a batch, by the whole array's range ``lo..hi``: uint8 as is, bool 0/1, integers in
    0..255, floats in [0, 1] or [-1, 1]."""
    if part.dtype == np.uint8:
        return np.ascontiguousarray(part)
    if part.dtype == np.bool_:
        return part.astype(np.uint8) * 255
    pixels = part.astype(np.float32)  # (B, C, H, W), one copy; the rest in place
    if lo >= -1.0 and hi <= 1.0:
        if lo < 0:
            pixels += 1.0
            pixels *= 127.5
        else:
            pixels *= 255.0
    np.round(pixels, out=pixels)
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)


def load_array(path: Path, resolution: int) -> ImageSet:
    """A ``.npy`` array or the first array of a ``.npz``: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``.

    The header is read and checked first (objects are never unpickled; complex, structured and text
    arrays, truncated data and arrays larger than the free memory are refused), then the data is
    loaded; any byte order, C or Fortran order, bool, integer and float16/32/64 pixels are read."""
    where = display_path(path)
    try:
        header, key = _array_header(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserInputError(f"cannot read array {where}: {first_line(exc)}") from None
    _check_array_header(header, where)
    (n, c, h, w), layout = _image_shape(header.shape, where)
    _check_memory(header, (n, c, h, w), resolution, where)
    try:
        if key is None:
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as loaded:
                array = loaded[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserInputError(f"cannot read array {where}: {first_line(exc)}") from None
    array = _as_nchw(array, layout)
    batch = _batch_size(n, 1, _array_image_bytes(header, (n, c, h, w), resolution))
    lo, hi = (0.0, 255.0) if array.dtype in (np.uint8, np.bool_) else _pixel_range(array, batch, where)
    if not (lo >= -1.0 and hi <= 1.0) and (lo < 0 or hi > 255):
        raise UserInputError(f"{where}: values span {lo:g}..{hi:g}; expected 0..255, 0..1 or -1..1")
    images = torch.empty((n, c, resolution, resolution), dtype=torch.uint8)
    for start in range(0, n, batch):  # memory: the data, the output and one batch (as load_folder, an image)
        part = _to_uint8(array[start:start + batch], lo, hi)
        images[start:start + batch] = resize_square(torch.from_numpy(part), resolution)
    try:
        labels = _npz_labels(path, n, where)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserInputError(f"cannot read the labels of {where}: {first_line(exc)}") from None
    return ImageSet(images, f"array {path.name} ({n} images)", labels=labels)


MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb warning level (~ 9,459 x 9,459)


_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"RIFF", "WEBP"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _head(path: Path) -> bytes:
    """The file's first 16 bytes (a huge non-image is not read whole)."""
    with path.open("rb") as f:
        return f.read(16)


def _kind(head: bytes) -> str | None:
    """The image format a file's first bytes announce, if any."""
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


_OTHER_MAGIC = ((b"%PDF", "PDF"), (b"PK\x03\x04", "a ZIP archive"), (b"PK\x05\x06", "a ZIP archive"),
                (b"\x1f\x8b", "gzip data"), (b"7z\xbc\xaf", "a 7z archive"), (b"\x7fELF", "a program (ELF)"))


def _content_kind(path: Path) -> str:
    """What a file that is not an image looks like (HTML, text, PDF, ZIP ...), by kind only: its bytes
    are never shown (the file may be a symlink to a key or token file)."""
    with path.open("rb") as f:
        head = f.read(512)
    kind = next((name for magic, name in _OTHER_MAGIC if head.startswith(magic)), None)
    if kind:
        return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at 512 bytes is still text
        text = head[:exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None
    if text is None or "\x00" in text:
        return "unknown binary data"
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if lowered.startswith(("<!doctype html", "<html", "<head", "<body")):
        return "HTML"
    if lowered.startswith("<?xml") or lowered.startswith("<svg"):
        return "XML (an SVG is not a supported image)" if "<svg" in lowered else "XML"
    return "text"


def _link_note(path: Path) -> str:
    """'' or, for a symlinked file, the name (only) of the file it leads to."""
    return f" (a symlink to a file named {path.resolve().name!r})" if path.is_symlink() else ""


class BadImage(ValueError):
    """An image file that cannot be used; the message is the short reason."""


def _deep_to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (and 32-bit integer holding 16-bit) greyscale to 8 bits by the full range (65535 -> 255),
    so a dark image stays dark; float greyscale in 0..1 is scaled by 255, otherwise clipped to 0..255."""
    if not np.isfinite(arr).all():
        raise BadImage("float image with NaN or infinite pixels")
    if mode.startswith("F"):
        scaled = arr * 255.0 if arr.min() >= 0 and arr.max() <= 1 else arr
    elif arr.min() < 0 or arr.max() > 65535:
        raise BadImage(f"{mode} pixels span {arr.min():g}..{arr.max():g}; expected 16-bit values 0..65535")
    else:
        scaled = arr / 257.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _upright(img, path: Path):
    """The image turned as its EXIF orientation says (a phone photo taken upright), as browsers, Pillow's
    ``ImageOps.exif_transpose`` and torchvision do; a broken EXIF block leaves the pixels as stored."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF: the pixels are still good
        logger.info("%s: EXIF orientation not applied (%s)", display_path(path), first_line(exc))
        return img


def check_size(width: int, height: int) -> None:
    """Refuse (:class:`BadImage`) an image without pixels or with more than :data:`MAX_IMAGE_PIXELS`."""
    if width < 1 or height < 1:
        raise BadImage(f"image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImage(f"{width}x{height} pixels is over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit; downscale it first")


def mode_channels(mode: str) -> int:
    """Channels a Pillow mode becomes when decoded (:func:`as_l_or_rgb`): 1 for greyscale, 3 otherwise."""
    return 1 if mode in ("1", "L", "LA") or mode.startswith(("I", "F")) else 3


def as_l_or_rgb(img, path: Path | str):
    """A loaded image, turned upright, as mode ``L`` or ``RGB`` (16-bit and float greyscale scaled to 8
    bits, palettes expanded, alpha dropped); ``img`` itself is never returned (it may be closed)."""
    from PIL import Image

    if img.mode in ("P", "PA") and not img.getpalette():
        raise BadImage("palette image without a palette (its PLTE chunk is missing)")
    upright = _upright(img, path)
    if upright.mode.startswith(("I", "F")):  # 16/32-bit integer or float greyscale
        return Image.fromarray(_deep_to_8bit(np.asarray(upright, dtype=np.float64), upright.mode))
    if upright.mode in ("L", "RGB"):
        return upright if upright is not img else img.copy()
    return upright.convert("L" if upright.mode in ("1", "LA") else "RGB")


def image_channels(path: Path) -> int:
    """The channels of an image file from its header alone (1 or 3; no pixels decoded): the cheap check
    of a streamed folder. Raises :class:`BadImage` for a file that is not a usable image by its header."""
    return _decode(path, header_only=True)


def _decode(path: Path, header_only: bool = False):
    """Fully decode one image to mode ``L`` or ``RGB`` (:func:`as_l_or_rgb`), or with ``header_only``
    read its header and return its channels. Raises :class:`BadImage` with a short reason for any file
    that cannot be used."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below says it in one line
            img = Image.open(path)
        with img:
            check_size(img.width, img.height)
            if header_only:
                return mode_channels(img.mode)
            img.load()  # full decode: truncated files fail here, not later
            return as_l_or_rgb(img, path)
    except UnidentifiedImageError:
        head = _head(path)
        if _kind(head):
            raise BadImage(f"corrupt or truncated {_kind(head)} (its header cannot be parsed)") from None
        raise BadImage(f"not an image: its content looks like {_content_kind(path)}, though the name ends "
                       f"{path.suffix}{_link_note(path)}") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too many pixels ({first_line(exc)})") from None
    except BadImage:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, zlib.error ... for broken files
        raise BadImage(f"corrupt or truncated {_kind(_head(path)) or 'image'} ({first_line(exc)})") from None


#: Folders that hold no training images by convention (macOS's resource forks in zip files).
IGNORED_FOLDERS = frozenset({"__MACOSX"})


def is_hidden(name: str) -> bool:
    """Whether a file or folder of an image folder is left out, with everything inside it: hidden names
    (``.DS_Store``, ``._photo.jpg`` resource forks, ``.ipynb_checkpoints/``, ``.git/``, ``.thumbnails/``)
    and :data:`IGNORED_FOLDERS`. The one rule of what an image folder holds."""
    return name.startswith(".") or name in IGNORED_FOLDERS


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively, symlinked folders once), sorted, hidden ones left out."""
    found, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop, or a folder linked twice
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        found += [Path(root, n) for n in names if not is_hidden(n) and Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(p for p in found if p.is_file())


def _pixels(img, resolution: int) -> torch.Tensor:
    """A decoded ``L``/``RGB`` image as ``uint8 (C, resolution, resolution)``."""
    arr = np.array(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return resize_square(torch.from_numpy(np.ascontiguousarray(arr))[None], resolution)[0]


def folder_index(folder: Path, label_column: str = "", caption_column: str = "") -> FolderIndex:
    """The images under ``folder`` (:func:`image_files`) with their labels and captions (:func:`index_folder`)."""
    candidates = image_files(folder)
    if not candidates:
        raise UserInputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {display_path(folder)}")
    return index_folder(folder, candidates, label_column, caption_column)


def bad_file_error(path: Path, exc: Exception) -> UserInputError:
    """The one line for an unusable image file when bad files are not skipped."""
    return UserInputError(f"{display_path(path)}: {exc}; fix or remove it (or pass --skip-bad-images to train on the rest)")


def check_inside(path: Path, root: str) -> None:
    """Refuse (:class:`BadImage`) a file whose resolved path is outside ``root`` (a resolved folder): a
    symlink, or a file in a symlinked folder, that leads out of the dataset, as a ``../`` file_name would."""
    if os.path.commonpath([os.path.realpath(path), root]) != root:
        raise BadImage(f"a symbolic link leading outside the dataset folder (to a file named "
                       f"{Path(os.path.realpath(path)).name!r}); greendiff reads only files inside the folder")


def read_each(folder: Path, files: Sequence[Path], read: Callable[[Path], T], skip_bad_images: bool,
              what: str) -> tuple[list[T], list[int], int]:
    """``read(file)`` of each file: ``(results, positions of the files read, files skipped)``. A file that
    cannot be used (:class:`BadImage`, ``OSError``; a link leading outside ``folder``, :func:`check_inside`)
    is an error naming it; with ``skip_bad_images`` it is skipped, counted and warned about (``what``: why,
    in the warning) and only a folder of none is an error."""
    results, kept, bad = [], [], []
    root = os.path.realpath(folder)
    for i, path in enumerate(files):
        try:
            check_inside(path, root)
            results.append(read(path))
            kept.append(i)
        except (BadImage, OSError) as exc:
            if not skip_bad_images:
                raise bad_file_error(path, exc) from None
            bad.append((path, exc))
    if not results:
        raise UserInputError(f"no readable image under {display_path(folder)}: e.g. {display_path(bad[0][0])}: {bad[0][1]}")
    if bad:
        logger.warning("skipped %d of %d image files %s (first: %s: %s)", len(bad), len(files), what,
                       display_path(bad[0][0]), bad[0][1])
    return results, kept, len(bad)


def load_folder(folder: Path, resolution: int, skip_bad_images: bool = False, index: FolderIndex | None = None) -> ImageSet:
    """Every image under ``folder`` (recursively; hidden files and folders left out, :func:`is_hidden`),
    with the labels and captions of ``index`` (default: class subfolders, :func:`folder_index`).

    A file with an image extension that cannot be used is an error naming it (one bad file in a
    scraped folder is more often a sign of a bad download than noise to ignore); with
    ``skip_bad_images`` such files are skipped, counted and warned about instead. Each image is
    resized as soon as it is decoded, so memory holds one full-size image at a time.
    """
    index = index or folder_index(folder)
    candidates = index.files
    # each image is resized as it is decoded, kept, then stacked (two copies); its channels are known
    # only once decoded, so this counts one (the least it can need)
    check_fits_in_memory(len(candidates), 1, resolution, display_path(folder), _resize_bytes(3, resolution), copies=2)
    tensors, kept, skipped = read_each(folder, candidates, lambda path: _pixels(_decode(path), resolution),
                                       skip_bad_images, "that could not be used")
    if any(t.shape[0] == 3 for t in tensors):  # greyscale among colour images: grey in all three channels
        tensors = [t.expand(3, -1, -1) for t in tensors]
    kept_index = index.subset(kept)
    return ImageSet(torch.stack(tensors), f"image folder {folder} ({len(tensors)} images)", skipped=skipped,
                    labels=kept_index.label_tensor(), captions=kept_index.captions, class_names=kept_index.class_names)
