from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from greendiff.data import load_dataset
from greendiff.data._sources import read_idx_images, resize_square
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
    with pytest.raises(UserInputError, match=r"no readable image .*a\.png: not an image: its content looks like text"):
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


# -- issue 18: images and arrays of every class ------------------------------------------------------------

def test_an_extreme_aspect_ratio_is_cropped_before_it_is_resized(tmp_path, monkeypatch):
    """A 4 KB PNG of 4,000,000 x 1 pixels: resizing its shorter side first asked for a 64,000,000 x 16
    float image (12 GB in RGB). Now the centre square is cut first: nothing larger than the output is
    ever interpolated, whatever the aspect ratio."""
    import greendiff.data._sources as sources

    strip = np.zeros((1, 4_000_000), dtype=np.uint8)
    strip[0, 1_999_999] = 200  # the centre pixel ((4,000,000 - 1) // 2) is the one kept
    Image.fromarray(strip).save(tmp_path / "strip.png")
    assert (tmp_path / "strip.png").stat().st_size < 10_000
    _png(tmp_path / "normal.png", size=(20, 10), value=90)
    real = sources.F.interpolate
    sizes = []

    def guarded(x, size=None, **kwargs):
        sizes.append((tuple(x.shape), size))
        assert x.numel() <= 20 * 20 and size == (16, 16), f"interpolating {tuple(x.shape)} to {size}"
        return real(x, size=size, **kwargs)

    monkeypatch.setattr(sources.F, "interpolate", guarded)
    data = load_dataset(str(tmp_path), 16)
    assert data.images.shape == (2, 1, 16, 16)
    assert int(data.images[1].min()) == int(data.images[1].max()) == 200  # the strip's centre, upscaled
    assert int(data.images[0].min()) == int(data.images[0].max()) == 90
    assert sizes == [((1, 1, 10, 10), (16, 16)), ((1, 1, 1, 1), (16, 16))]


def test_resize_square_memory_is_bounded_by_the_output():
    tall = torch.zeros(1, 3, 50_000, 2, dtype=torch.uint8)
    tall[:, :, 24_999:25_001] = 255
    out = resize_square(tall, 4)
    assert out.shape == (1, 3, 4, 4) and int(out.min()) == 255


def test_exif_orientation_is_applied_as_other_libraries_do(tmp_path):
    """A JPEG stored landscape with orientation 6 (rotate 90 degrees clockwise to display), as phones
    write: the pixels greendiff trains on are the displayed ones, as with ImageOps.exif_transpose."""
    from PIL import ImageOps

    stored = np.zeros((16, 16), dtype=np.uint8)
    stored[:8] = 255  # top half white as stored; displayed, the white half is on the right
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    image = load_dataset(str(tmp_path), 16).images[0, 0].float()
    assert image[:, :6].mean() < 20 and image[:, 10:].mean() > 235  # left dark, right white
    with Image.open(tmp_path / "phone.jpg") as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    assert np.abs(image.numpy() - expected).max() <= 1


def test_a_broken_exif_block_keeps_the_pixels(tmp_path, monkeypatch):
    import PIL.ImageOps

    _png(tmp_path / "a.png", size=(8, 8), value=77)
    monkeypatch.setattr(PIL.ImageOps, "exif_transpose", lambda img: (_ for _ in ()).throw(SyntaxError("bad EXIF")))
    assert int(load_dataset(str(tmp_path), 8).images.max()) == 77


def test_hidden_files_and_folders_are_left_out_everywhere(tmp_path):
    """One rule: any file or folder whose name starts with '.' (and __MACOSX) is not part of the
    dataset, with everything inside it, however deep; broken files there never stop a strict run."""
    from greendiff.data import image_files

    (tmp_path / "sub").mkdir()
    for name in ("0.png", "sub/1.png", "sub/2.png"):
        _png(tmp_path / name)
    garbage = b"\x00\x05\x16\x07AppleDouble resource fork, not an image"
    for hidden in (".DS_Store", "._0.png", "sub/._1.png", ".ipynb_checkpoints/0-checkpoint.png",
                   "__MACOSX/sub/._2.png", "__MACOSX/photo.png", ".git/objects/ab.png", "sub/.thumbs/1.jpg", ".hidden.png"):
        (tmp_path / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / hidden).write_bytes(garbage)
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)] == ["0.png", "sub/1.png", "sub/2.png"]
    assert load_dataset(str(tmp_path), 8).images.shape == (3, 1, 8, 8)


def test_a_symlink_loop_in_an_image_folder_ends(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "loop").symlink_to(tmp_path)
    assert load_dataset(str(tmp_path), 8).images.shape[0] == 1


@pytest.mark.parametrize("name", ["bad\nname.png", "\x1b[2Jclear.png", "tab\tname.png", "rtl\u202egnp.png"])
def test_a_file_name_with_control_characters_is_quoted_in_one_line(tmp_path, name):
    from greendiff.names import display_path

    _png(tmp_path / "good.png")
    (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(UserInputError) as info:
        load_dataset(str(tmp_path), 8)
    message = str(info.value)
    assert message.isprintable() and repr(str(tmp_path / name)) in message
    assert display_path(tmp_path / name) == repr(str(tmp_path / name))
    assert display_path(tmp_path / "good.png") == str(tmp_path / "good.png")  # plain names as typed


@pytest.mark.parametrize(("array", "expected"), [
    (np.asfortranarray(np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8) % 200), None),
    (np.arange(2 * 8 * 8, dtype=">f4").reshape(2, 8, 8) / 128.0 / 2, None),  # big-endian floats in [0, 1]
    (np.arange(2 * 8 * 8, dtype=np.float16).reshape(2, 8, 8) / np.float16(128), None),
    (np.arange(2 * 8 * 8, dtype=">i2").reshape(2, 8, 8) % 200, None),
    (np.eye(8, dtype=bool)[None].repeat(2, axis=0), "bool"),
])
def test_arrays_of_every_byte_order_layout_and_dtype_load_correctly(tmp_path, array, expected):
    np.save(tmp_path / "a.npy", array)
    images = load_dataset(str(tmp_path / "a.npy"), 8).images
    if expected == "bool":
        want = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f":
        want = np.clip(np.round(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    else:
        want = array.astype(np.uint8)
    assert images.shape == (2, 1, 8, 8) and np.array_equal(images[:, 0].numpy(), want)


def test_an_array_larger_than_the_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    import types

    import greendiff.data._sources as sources

    np.save(tmp_path / "a.npy", np.zeros((64, 8, 8), dtype=np.uint8))
    monkeypatch.setattr(sources.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=1000))
    monkeypatch.setattr(sources.np, "load", lambda *a, **k: pytest.fail("the data was loaded"))
    with pytest.raises(UserInputError, match=r"a\.npy \(\(64, 8, 8\) uint8\): the dataset at 8 px would need 0\.0 GB .*free memory is 0\.0 GB; lower --resolution or use fewer images"):
        load_dataset(str(tmp_path / "a.npy"), 8)


class _CreatesAFile:
    """Unpickling this creates the file ``path``: a stand-in for code a pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_object_arrays_are_never_unpickled(tmp_path):
    """A pickled payload that would create a file when loaded, in a .npy and inside a .npz."""
    marker = tmp_path / "pwned"
    array = np.empty(2, dtype=object)
    array[0] = _CreatesAFile(marker)
    np.save(tmp_path / "a.npy", array, allow_pickle=True)
    np.savez(tmp_path / "b.npz", images=array)
    for name in ("a.npy", "b.npz"):
        with pytest.raises(UserInputError, match="holds Python objects"):
            load_dataset(str(tmp_path / name), 8)
    assert not marker.exists()
    np.load(tmp_path / "a.npy", allow_pickle=True)  # the payload is real: loading it with pickle runs it
    assert marker.exists()


def test_an_array_is_converted_and_resized_a_batch_at_a_time(tmp_path, monkeypatch):
    """Converting and resizing the whole (N, C, H, W) array at once made float32 copies of all of it (a
    peak of 5-8x the data); a batch at a time, memory holds the data, the output and one batch."""
    import tracemalloc
    import types

    import greendiff.data._sources as sources

    array = np.linspace(-1.0, 1.0, 64 * 32 * 32).reshape(64, 32, 32)  # float64 in [-1, 1]: 512 KiB
    np.save(tmp_path / "a.npy", array)
    want = sources.resize_square(torch.from_numpy(np.clip(np.round((array.astype(np.float32) + 1.0) * 127.5), 0, 255)
                                                  .astype(np.uint8)[:, None]), 8)
    monkeypatch.setattr(sources, "BATCH_BYTES", 64 * 1024)  # (8 + 12) B x 1,024 px = 20 KiB an image: 3 a batch
    batches, resize = [], sources.resize_square
    monkeypatch.setattr(sources, "resize_square", lambda images, res: (batches.append(images.shape[0]), resize(images, res))[1])
    tracemalloc.start()
    try:
        images = load_dataset(str(tmp_path / "a.npy"), 8).images
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(images, want)
    assert max(batches) == 3 and sum(batches) == 64
    assert peak < array.nbytes + 2 * 64 * 1024, peak  # the loaded data and about one batch (was ~2x the data)
    # and the check before loading counts the output and a batch besides the data
    monkeypatch.setattr(sources.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=array.nbytes + 1000))
    with pytest.raises(UserInputError, match=r"a\.npy \(\(64, 32, 32\) float64\): the dataset at 8 px would need 0\.0 GB"):
        load_dataset(str(tmp_path / "a.npy"), 8)


@pytest.mark.parametrize(("content", "kind"), [
    (b"import http.client\nTOKEN = 'SECRETSECRET'\n", "text"), (b"<!DOCTYPE html><html>SECRETSECRET", "HTML"),
    (b"%PDF-1.4 SECRETSECRET", "PDF"), (b"PK\x03\x04SECRETSECRET", "ZIP archive"),
    (b"\x00\x01\x02SECRETSECRET\xff", "unknown binary data")])
def test_a_non_image_is_named_by_kind_and_its_content_never_shown(tmp_path, content, kind):
    """A file named .png that is not an image (here a symlink to a token file beside the images) is described
    by kind; none of its bytes reach the message."""
    folder = tmp_path / "images"
    secret = folder / "notes" / "token.txt"  # not an image by its name: only the link is listed
    secret.parent.mkdir(parents=True)
    secret.write_bytes(content)
    _png(folder / "a.png")
    (folder / "s.png").symlink_to(secret)
    with pytest.raises(UserInputError) as err:
        load_dataset(str(folder), 8)
    message = str(err.value)
    assert f"s.png: not an image: its content looks like " in message and kind in message, message
    assert "a symlink to a file named 'token.txt'" in message, message
    assert "SECRET" not in message and "import" not in message and "\n" not in message, message


def _no_memory(monkeypatch, available_bytes):
    import types

    import greendiff.data._sources as sources

    monkeypatch.setattr(sources.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=available_bytes))
    monkeypatch.setattr(sources, "resize_square", lambda *a: pytest.fail("resized before the memory check"))
    monkeypatch.setattr(sources.np, "load", lambda *a, **k: pytest.fail("the data was loaded"))


@pytest.mark.parametrize(("dataset", "gb"), [("digits", 30.4), ("mnist", 168.0)])
def test_a_bundled_dataset_at_a_huge_resolution_is_refused_before_allocating(monkeypatch, dataset, gb):
    _no_memory(monkeypatch, 8 * 10**9)
    with pytest.raises(UserInputError, match=rf"^{dataset}: the dataset at 4096 px would need {gb} GB .*free memory "
                                             r"is 8\.0 GB; lower --resolution$"):
        load_dataset(dataset, 4096)


def test_an_image_folder_at_a_huge_resolution_is_refused_before_decoding(tmp_path, monkeypatch):
    for i in range(100):
        _png(tmp_path / f"{i:03d}.png")
    _no_memory(monkeypatch, 2 * 10**9)
    with pytest.raises(UserInputError, match=r"the dataset at 4096 px would need 4\.2 GB \(100 images"):
        load_dataset(str(tmp_path), 4096)


def test_a_small_npz_whose_member_inflates_to_gigabytes_is_refused_from_its_header(tmp_path, monkeypatch):
    """A zip bomb: 64 MB of zeros compress to ~60 KB; the check counts the declared 64 MB of data."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((1000, 256, 256), dtype=np.uint8))
    assert path.stat().st_size < 1_000_000
    _no_memory(monkeypatch, 50 * 10**6)
    with pytest.raises(UserInputError, match=r"bomb\.npz \(\(1000, 256, 256\) uint8\): the dataset at 8 px would "
                                             r"need 0\.1 GB .*0\.1 GB of it the data as read"):
        load_dataset(str(path), 8)


def test_bundled_datasets_still_load_a_batch_at_a_time(monkeypatch):
    import greendiff.data._sources as sources

    monkeypatch.setattr(sources, "BATCH_BYTES", 200 * 1024)
    images = load_dataset("digits", 16).images
    assert images.shape == (1797, 1, 16, 16) and images.dtype == torch.uint8 and int(images.max()) == 255


def _linked_out(tmp_path):
    """A folder with two images and, as its third, a link to an image outside it (``../`` is refused in
    metadata; a link must be too)."""
    outside = tmp_path / "outside.png"
    _png(outside, value=200)
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    _png(folder / "a" / "1.png", value=10)
    _png(folder / "a" / "2.png", value=20)
    (folder / "a" / "3.png").symlink_to(outside)
    return folder


@pytest.mark.parametrize("budget", [None, 0])
def test_a_link_leading_outside_the_folder_is_refused(tmp_path, budget):
    folder = _linked_out(tmp_path)
    with pytest.raises(UserInputError, match=r"images/a/3\.png: a symbolic link leading outside the dataset folder "
                                             r"\(to a file named 'outside\.png'\); .*--skip-bad-images") as err:
        load_dataset(str(folder), 8, cache_max_gb=budget, workers=0)
    assert "\n" not in str(err.value)
    data = load_dataset(str(folder), 8, skip_bad_images=True, cache_max_gb=budget, workers=0)
    assert data.num_images == 2 and data.skipped == 1
    assert sorted(next(data.batches(0, 2)).images[:, 0, 0, 0].tolist()) == [10, 20]


def test_a_metadata_row_naming_a_link_out_is_refused_and_skipped_with_its_label(tmp_path):
    folder = _linked_out(tmp_path)
    (folder / "metadata.jsonl").write_text("".join(f'{{"file_name": "a/{i}.png", "label": {i}}}\n' for i in (1, 2, 3)))
    with pytest.raises(UserInputError, match=r"a/3\.png: a symbolic link leading outside the dataset folder"):
        load_dataset(str(folder), 8, label_column="label")
    data = load_dataset(str(folder), 8, label_column="label", skip_bad_images=True)
    assert data.skipped == 1 and sorted(zip(data.images[:, 0, 0, 0].tolist(), data.labels.tolist())) == [(10, 1), (20, 2)]


def test_a_class_folder_linked_from_outside_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _png(elsewhere / "x.png", value=30)
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    _png(folder / "cat" / "1.png", value=10)
    (folder / "dog").symlink_to(elsewhere)
    with pytest.raises(UserInputError, match=r"images/dog/x\.png: a symbolic link leading outside the dataset folder"):
        load_dataset(str(folder), 8)
    assert load_dataset(str(folder), 8, skip_bad_images=True).skipped == 1


def test_links_inside_the_folder_are_followed(tmp_path):
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    _png(folder / "cat" / "1.png", value=10)
    (folder / "dog").mkdir()
    (folder / "dog" / "1.png").symlink_to(folder / "cat" / "1.png")
    data = load_dataset(str(folder), 8)
    assert data.skipped == 0 and data.labels.tolist() == [0, 1] and data.images[:, 0, 0, 0].tolist() == [10, 10]
