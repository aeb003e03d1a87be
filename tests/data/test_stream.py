"""Streaming from disk: the same batches as in memory, resume at step k, the placement line, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from greendiff.data import ImageSet, StreamedSet, load_dataset
from greendiff.data._stream import placement
from greendiff.errors import UserInputError


def _folder(root, n: int = 23, rgb_every: int = 5):
    """``n`` 10x7 images in two class folders, a few in colour, with captions; every pixel differs."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"{'ab'[i % 2]}/{i:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shape = (7, 10, 3) if i % rgb_every == 0 else (7, 10)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name)
        rows.append(f'{{"file_name": "{name}", "text": "image {i}"}}\n')
    (root / "metadata.jsonl").write_text("".join(rows))
    return root


def _take(data, start: int, stop: int, **kw):
    return list(data.batches(start, 4, kw.get("world_size", 1), kw.get("rank", 0), 11, stop_step=stop))


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels) and x.captions == y.captions


def test_streamed_batches_equal_in_memory_ones_and_resume_at_step_k(tmp_path):
    folder = _folder(tmp_path)
    memory = load_dataset(str(folder), 8, caption_column="text")
    streamed = load_dataset(str(folder), 8, caption_column="text", cache_max_gb=0.0, workers=2)
    assert isinstance(memory, ImageSet) and isinstance(streamed, StreamedSet)
    assert (streamed.channels, streamed.num_images, streamed.class_names) == (3, 23, ("a", "b"))
    whole = _take(streamed, 0, 9)  # past an epoch (5 steps of 4 of 23)
    _same(whole, _take(memory, 0, 9))
    _same(whole[6:], _take(streamed, 6, 9))  # a fresh loader started at step 6
    assert whole[0].images.dtype == torch.uint8 and whole[0].images.shape == (4, 3, 8, 8)
    _same(_take(streamed, 2, 4, world_size=2, rank=1), _take(memory, 2, 4, world_size=2, rank=1))
    assert torch.equal(streamed.reference_images(7, seed=3), memory.reference_images(7, seed=3))


def test_streaming_without_workers_is_the_same(tmp_path):
    folder = _folder(tmp_path, n=9)
    _same(_take(load_dataset(str(folder), 8, cache_max_gb=0, workers=0), 0, 4), _take(load_dataset(str(folder), 8), 0, 4))


def test_the_budget_decides_and_says_so(tmp_path):
    folder = _folder(tmp_path, n=6, rgb_every=100)  # one colour image (the first): 3 channels
    decoded = 6 * 3 * 8 * 8  # 1,152 bytes
    assert isinstance(load_dataset(str(folder), 8, cache_max_gb=decoded / 1e9), ImageSet)
    data = load_dataset(str(folder), 8, cache_max_gb=(decoded - 1) / 1e9, workers=3)
    assert isinstance(data, StreamedSet)
    assert data.placement == f"data: 6 images, 0.0 MB decoded > cache_max_gb {(decoded - 1) / 1e9:g}: streamed from disk with 3 workers"
    assert placement(12_000, 3, 256, 1.0, 2)[1] == ("data: 12,000 images, 2.4 GB decoded > cache_max_gb 1: streamed from "
                                                   "disk with 2 workers")
    assert placement(100, 1, 8, None, 2) == (False, "data: 100 images, 0.0 MB decoded: in memory")
    assert placement(10_000, 1, 64, 0.01, 2, streamable=False)[1].endswith("in memory all the same (only image "
                                                                          "folders and saved datasets stream)")


def test_grey_folders_are_counted_by_their_headers(tmp_path):
    """Counted as colour (3 x 384 B) a grey folder is over a 1,000-byte budget; by its headers (1 x 384) it fits."""
    for i in range(6):
        Image.new("L", (8, 8), i).save(tmp_path / f"{i}.png")
    data = load_dataset(str(tmp_path), 8, cache_max_gb=1e-6)
    assert isinstance(data, ImageSet) and "<= cache_max_gb 1e-06: in memory" in data.placement


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_bad_budget(tmp_path, value):
    with pytest.raises(UserInputError, match="cache_max_gb must be a number of GB, 0 or more"):
        load_dataset("digits", 8, cache_max_gb=value)


def _with_truncated(tmp_path):
    folder = _folder(tmp_path, n=8, rgb_every=100)
    good = (folder / "a/004.png").read_bytes()
    (folder / "a/004.png").write_bytes(good[: len(good) // 2])  # a header that parses, pixels that do not
    return folder


def test_a_file_failing_to_decode_while_streaming_is_one_line_naming_it(tmp_path):
    folder = _with_truncated(tmp_path)
    data = load_dataset(str(folder), 8, cache_max_gb=0, workers=2)  # the header check passes it
    with pytest.raises(UserInputError, match=r"a/004\.png: corrupt or truncated PNG .*--skip-bad-images") as err:
        _take(data, 0, 4)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def test_with_skip_bad_images_a_late_failure_is_replaced_by_the_next_file(tmp_path):
    folder = _with_truncated(tmp_path)
    data = load_dataset(str(folder), 8, skip_bad_images=True, cache_max_gb=0, workers=0)
    names = [p.name for p in data.decode_set.reader.files]
    broken, after = names.index("004.png"), names.index("004.png") + 1
    batch = data.decode_set.__getitems__([broken, 0])
    want = data.decode_set.__getitems__([after, 0])
    assert torch.equal(batch.images, want.images) and batch.labels.tolist() == want.labels.tolist()


def test_a_bad_header_is_found_up_front(tmp_path):
    folder = _folder(tmp_path, n=6, rgb_every=100)
    (folder / "b" / "zz.png").write_bytes(b"<html>not an image</html>")
    with pytest.raises(UserInputError, match=r"zz\.png: not an image: its content looks like HTML"):
        load_dataset(str(folder), 8, cache_max_gb=0)
    data = load_dataset(str(folder), 8, skip_bad_images=True, cache_max_gb=0, workers=0)
    assert data.num_images == 6 and data.skipped == 1
