"""Image sources, loaded once into memory as tensors (small sets: no loader can stall the step).

Every source ends as ``uint8`` images ``(N, C, H, W)`` at the training resolution; the trainer
scales them to ``[-1, 1]``.
"""

from __future__ import annotations

import gzip
import logging
import struct
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
MAX_BAD_FRACTION = 0.05
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
    except (OSError, ValueError, IndexError) as exc:
        raise UserInputError(f"cannot read array {path}: {exc}") from None
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[0] == 0:
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


def _decode(path: Path):
    """Fully decode one image to mode ``L`` or ``RGB`` (16-bit scaled to 8, palettes and alpha dropped)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # full decode: truncated files fail here, not later
        if img.mode.startswith("I"):  # 16/32-bit integer greyscale
            arr = np.asarray(img, dtype=np.float64)
            return Image.fromarray((arr * (255.0 / max(arr.max(), 1.0))).astype(np.uint8))
        if img.mode in ("L", "RGB"):
            return img.copy()
        return img.convert("L" if img.mode == "LA" else "RGB")


def load_folder(folder: Path, resolution: int) -> ImageSet:
    """Every image under ``folder`` (recursively); corrupt files are skipped and counted.

    More than 5 % bad files, or none left, is an error naming a bad file.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    candidates = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not candidates:
        raise UserInputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    decoded, bad = [], []
    for path in candidates:
        try:
            decoded.append(_decode(path))
        except Exception as exc:  # PIL raises many types for broken files
            bad.append((path, exc))
    if bad:
        logger.warning("skipped %d of %d image files that could not be decoded (first: %s: %s)",
                       len(bad), len(candidates), bad[0][0], bad[0][1])
    if not decoded:
        raise UserInputError(f"no readable image under {folder}: e.g. {bad[0][0]} ({bad[0][1]})")
    if len(bad) > MAX_BAD_FRACTION * len(candidates):
        raise UserInputError(f"{len(bad)} of {len(candidates)} images under {folder} are unreadable (more than 5%); "
                             f"e.g. {bad[0][0]}: {bad[0][1]}")
    gray = all(img.mode == "L" for img in decoded)
    tensors = []
    for img in decoded:
        arr = np.array(img.convert("L" if gray else "RGB"), dtype=np.uint8)
        arr = arr[None] if gray else arr.transpose(2, 0, 1)
        tensors.append(resize_square(torch.from_numpy(np.ascontiguousarray(arr))[None], resolution)[0])
    return ImageSet(torch.stack(tensors), f"image folder {folder} ({len(decoded)} images)", skipped=len(bad))


def load_dataset(spec: str, resolution: int) -> ImageSet:
    """``mnist`` (bundled), ``digits`` (scikit-learn), an image folder, or a ``.npy``/``.npz`` file."""
    if resolution < 4:
        raise UserInputError(f"resolution must be at least 4 pixels, got {resolution}")
    if spec.lower() == "mnist":
        return load_mnist(resolution)
    if spec.lower() == "digits":
        return load_digits(resolution)
    path = Path(spec)
    if path.is_dir():
        return load_folder(path, resolution)
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        return load_array(path, resolution)
    raise UserInputError(f"unknown dataset {spec!r}: use mnist, digits, an image folder, or a .npy/.npz file")
