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


def test_one_bad_file_stops_with_its_name_unless_skipping_is_asked(tmp_path):
    for i in range(30):
        _png(tmp_path / f"{i:02d}.png")
    good = (tmp_path / "00.png").read_bytes()
    (tmp_path / "zz-truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    with pytest.raises(UserInputError, match=r"zz-truncated\.png: corrupt or truncated PNG .*--skip-bad-images"):
        load_dataset(str(tmp_path), 8)
    data = load_dataset(str(tmp_path), 8, skip_bad_images=True)
    assert data.images.shape == (30, 1, 8, 8) and data.skipped == 1


def test_folder_of_only_bad_files_when_skipping(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match=r"no readable image .*a\.png: not an image: the content begins b'garbage'"):
        load_dataset(str(tmp_path), 8, skip_bad_images=True)


def test_deep_and_palette_images_keep_their_values(tmp_path):
    """16-bit greyscale maps 0..65535 to 0..255 (a dark image stays dark); a palette image is expanded
    to its palette's colours, not read as indices."""
    Image.fromarray(np.full((8, 8), 257 * 40, dtype=np.uint16)).save(tmp_path / "deep.png")
    deep = load_dataset(str(tmp_path), 8)
    assert deep.images.shape == (1, 1, 8, 8) and int(deep.images.min()) == int(deep.images.max()) == 40
    (tmp_path / "deep.png").unlink()
    pal = Image.new("P", (8, 8), 3)
    pal.putpalette([0, 0, 0] * 3 + [200, 10, 20] + [0, 0, 0] * 252)
    pal.save(tmp_path / "palette.png")
    rgb = load_dataset(str(tmp_path), 8).images
    assert rgb.shape == (1, 3, 8, 8) and rgb[0, :, 0, 0].tolist() == [200, 10, 20]


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
