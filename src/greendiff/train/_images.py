"""Image grids for previews."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from greendiff.files import atomic_write_bytes


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images -> float32 in [-1, 1]: what every network greendiff trains sees (the inverse of
    :func:`to_uint8`, which also moves the channels last)."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, path: Path, scale: int = 2, columns: int | None = None) -> Path:
    """A grid PNG of the images (N, C, H, W) in [-1, 1], row-major, each upscaled ``scale`` times (nearest),
    2-pixel gaps; ``columns`` per row (None: a square-ish grid)."""
    from PIL import Image

    arr = to_uint8(images)
    n, h, w, c = arr.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    gap = 2
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[gap + r * (h + gap):gap + r * (h + gap) + h, gap + k * (w + gap):gap + k * (w + gap) + w] = arr[i]
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())  # the rename replaces a planted link itself, never its target
    return path
