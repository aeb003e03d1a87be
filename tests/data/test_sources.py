from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from greendiff.data import load_dataset, read_idx_images, resize_square
from greendiff.errors import UserInputError


def test_bundled_mnist_is_the_full_test_set():
    data = load_dataset("mnist", 16)
    assert data.images.shape == (10_000, 1, 16, 16) and data.images.dtype == torch.uint8
    assert "MNIST" in data.source and data.images.float().mean() > 10  # digits, not blank


def test_sklearn_digits():
    data = load_dataset("digits", 8)
    assert data.images.shape == (1797, 1, 8, 8) and int(data.images.max()) == 255


def test_idx_header_checks():
    with pytest.raises(UserInputError, match="not an IDX image file"):
        read_idx_images(b"\x00" * 16, "x")
    with pytest.raises(UserInputError, match="truncated"):
        read_idx_images(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2 + b"\x00", "x")


def test_resize_square_crops_the_centre():
    img = torch.zeros(1, 1, 8, 16, dtype=torch.uint8)
    img[..., 4:12] = 255  # a white centre band
    out = resize_square(img, 8)
    assert out.shape == (1, 1, 8, 8) and int(out.min()) == 255


def _png(path, mode="L", size=(12, 10), value=128):
    Image.new(mode, size, value if mode in ("L", "I;16") else (value, 0, 0)).save(path)


def test_folder_skips_a_few_bad_files_and_counts_them(tmp_path):
    for i in range(30):
        _png(tmp_path / f"{i:02d}.png")
    (tmp_path / "zz-corrupt.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    data = load_dataset(str(tmp_path), 8)
    assert data.images.shape == (30, 1, 8, 8) and data.skipped == 1


def test_folder_with_too_many_bad_files_names_one(tmp_path):
    for i in range(8):
        _png(tmp_path / f"{i}.png")
    good = (tmp_path / "0.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserInputError, match=r"2 of 10 images .* unreadable .*(truncated|empty)"):
        load_dataset(str(tmp_path), 8)


def test_folder_of_only_bad_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="no readable image"):
        load_dataset(str(tmp_path), 8)


def test_folder_mixed_modes_become_rgb(tmp_path):
    _png(tmp_path / "gray.png", "L")
    _png(tmp_path / "rgb.png", "RGB")
    Image.new("P", (9, 9), 3).save(tmp_path / "palette.png")
    Image.fromarray(np.full((9, 9), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    data = load_dataset(str(tmp_path), 8)
    assert data.images.shape == (4, 3, 8, 8)


@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 8, 8, 3), (5, 3, 8, 8), (5, 1, 8, 8)])
def test_arrays_in_common_layouts(tmp_path, shape):
    path = tmp_path / "a.npy"
    np.save(path, np.random.default_rng(0).random(shape).astype(np.float32))
    data = load_dataset(str(path), 8)
    assert data.images.shape[0] == 5 and data.images.shape[2:] == (8, 8)
    np.savez(tmp_path / "b.npz", x=np.zeros(shape, dtype=np.uint8))
    assert load_dataset(str(tmp_path / "b.npz"), 8).images.shape == data.images.shape


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((5, 8)), "expected images shaped"),
    (np.full((2, 8, 8), 1000.0), "values span"),
    (np.full((2, 8, 8), np.nan), "finite"),
])
def test_bad_arrays(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(UserInputError, match=message):
        load_dataset(str(tmp_path / "bad.npy"), 8)


def test_unknown_dataset():
    with pytest.raises(UserInputError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", 8)
