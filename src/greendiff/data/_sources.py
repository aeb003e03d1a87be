"""Image sources, loaded once into memory as tensors (small sets: no loader can stall the step).

Every source ends as ``uint8`` images ``(N, C, H, W)`` at the training resolution; the trainer
scales them to ``[-1, 1]``.
"""

from __future__ import annotations

import gzip
import logging
import struct
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from greendiff.errors import UserInputError

logger = logging.getLogger(__name__)

_TABLES = resources.files("greendiff.data") / "tables"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BUILTIN = ("mnist", "digits")


@dataclass(frozen=True)
class ImageSet:
    """Images in memory.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)``.
        source: What was loaded, for the run record.
        skipped: Files skipped as corrupt or not images.
    """

    images: torch.Tensor
    source: str
    skipped: int = 0

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


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


def resize_square(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize the shorter side to ``resolution`` (antialiased) and centre-crop: uint8 in, uint8 out."""
    _, _, h, w = images.shape
    if (h, w) == (resolution, resolution):
        return images
    scale = resolution / min(h, w)
    new_h, new_w = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    out = F.interpolate(images.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    out = out[:, :, top:top + resolution, left:left + resolution]
    return out.round().clamp(0, 255).to(torch.uint8)


def load_mnist(resolution: int) -> ImageSet:
    """The bundled MNIST test set (10,000 digits; see tables/SOURCES.md)."""
    raw = gzip.decompress((_TABLES / "t10k-images-idx3-ubyte.gz").read_bytes())
    images = torch.from_numpy(read_idx_images(raw, "bundled MNIST").copy())
    return ImageSet(resize_square(images, resolution), "MNIST test set (bundled, 10,000 digits, CC BY-SA 3.0)")


def load_digits(resolution: int) -> ImageSet:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16)."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits().images  # (1797, 8, 8) floats 0..16
    images = torch.from_numpy((data * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    return ImageSet(resize_square(images, resolution), "scikit-learn digits (1,797 images, 8x8)")


def load_array(path: Path, resolution: int) -> ImageSet:
    """A ``.npy`` array or the first array of a ``.npz``: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``."""
    try:
        loaded = np.load(path, allow_pickle=False)
        array = loaded[loaded.files[0]] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    except (OSError, ValueError, IndexError, EOFError) as exc:
        raise UserInputError(f"cannot read array {path}: {exc or type(exc).__name__}") from None
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim == 4 and array.shape[0] == 0:
        raise UserInputError(f"{path}: the array holds no images (shape {array.shape})")
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise UserInputError(f"{path}: expected images shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C in "
                             f"(1, 3); got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UserInputError(f"{path}: array must be numeric and finite")
    if array.dtype != np.uint8:  # floats in [0, 1] or [-1, 1], or integers in 0..255
        lo, hi = float(array.min()), float(array.max())
        if lo >= -1.0 and hi <= 1.0:
            array = (array + 1.0) * 127.5 if lo < 0 else array * 255.0
        elif lo < 0 or hi > 255:
            raise UserInputError(f"{path}: values span {lo:g}..{hi:g}; expected 0..255, 0..1 or -1..1")
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    images = torch.from_numpy(np.ascontiguousarray(array))
    return ImageSet(resize_square(images, resolution), f"array {path.name} ({array.shape[0]} images)")


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


def _decode(path: Path):
    """Fully decode one image to mode ``L`` or ``RGB`` (16-bit and float greyscale scaled to 8 bits,
    palettes expanded, alpha dropped). Raises :class:`BadImage` with a short reason for any file that
    cannot be used."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below says it in one line
            img = Image.open(path)
        with img:
            if img.width < 1 or img.height < 1:
                raise BadImage(f"image has no pixels ({img.width}x{img.height})")
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise BadImage(f"{img.width}x{img.height} pixels is over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit; "
                               "downscale it first")
            img.load()  # full decode: truncated files fail here, not later
            if img.mode in ("P", "PA") and not img.getpalette():
                raise BadImage("palette image without a palette (its PLTE chunk is missing)")
            if img.mode.startswith(("I", "F")):  # 16/32-bit integer or float greyscale
                return Image.fromarray(_deep_to_8bit(np.asarray(img, dtype=np.float64), img.mode))
            if img.mode in ("L", "RGB"):
                return img.copy()
            return img.convert("L" if img.mode in ("1", "LA") else "RGB")
    except UnidentifiedImageError:
        head = _head(path)
        if _kind(head):
            raise BadImage(f"corrupt or truncated {_kind(head)} (its header cannot be parsed)") from None
        raise BadImage(f"not an image: the content begins {head[:12]!r}, though the name ends {path.suffix}") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too many pixels ({exc})") from None
    except BadImage:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, zlib.error ... for broken files
        raise BadImage(f"corrupt or truncated {_kind(_head(path)) or 'image'} ({exc})") from None


def load_folder(folder: Path, resolution: int, skip_bad_images: bool = False) -> ImageSet:
    """Every image under ``folder`` (recursively).

    A file with an image extension that cannot be used is an error naming it (one bad file in a
    scraped folder is more often a sign of a bad download than noise to ignore); with
    ``skip_bad_images`` such files are skipped, counted and warned about instead.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    candidates = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not candidates:
        raise UserInputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    decoded, bad = [], []
    for path in candidates:
        try:
            decoded.append(_decode(path))
        except (BadImage, OSError) as exc:
            if not skip_bad_images:
                raise UserInputError(f"{path}: {exc}; fix or remove it (or pass --skip-bad-images to train on the "
                                     "rest)") from None
            bad.append((path, exc))
    if not decoded:
        raise UserInputError(f"no readable image under {folder}: e.g. {bad[0][0]}: {bad[0][1]}")
    if bad:
        logger.warning("skipped %d of %d image files that could not be used (first: %s: %s)",
                       len(bad), len(candidates), bad[0][0], bad[0][1])
    gray = all(img.mode == "L" for img in decoded)
    tensors = []
    for img in decoded:
        arr = np.array(img.convert("L" if gray else "RGB"), dtype=np.uint8)
        arr = arr[None] if gray else arr.transpose(2, 0, 1)
        tensors.append(resize_square(torch.from_numpy(np.ascontiguousarray(arr))[None], resolution)[0])
    return ImageSet(torch.stack(tensors), f"image folder {folder} ({len(decoded)} images)", skipped=len(bad))


def load_dataset(spec: str, resolution: int, skip_bad_images: bool = False) -> ImageSet:
    """``mnist`` (bundled), ``digits`` (scikit-learn), an image folder, or a ``.npy``/``.npz`` file.
    ``skip_bad_images``: skip unusable files of a folder instead of stopping (:func:`load_folder`)."""
    if resolution < 4:
        raise UserInputError(f"resolution must be at least 4 pixels, got {resolution}")
    if spec.lower() == "mnist":
        return load_mnist(resolution)
    if spec.lower() == "digits":
        return load_digits(resolution)
    path = Path(spec)
    if path.is_dir():
        return load_folder(path, resolution, skip_bad_images)
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        return load_array(path, resolution)
    if not path.exists() and (path.suffix or len(path.parts) > 1):
        raise UserInputError(f"dataset {spec!r}: no such file or folder")
    raise UserInputError(f"unknown dataset {spec!r}: use mnist, digits, an image folder, or a .npy/.npz file")
