"""The order of every step's images, the in-memory batches, and the labels of the bundled sources."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from greendiff.data import Batch, ImageSet, batch_indices, load_dataset, reference_indices
from greendiff.data._batches import step_indices
from greendiff.data._sources import read_idx_labels
from greendiff.errors import UserInputError


def test_batch_indices_are_the_trainers_order():
    """The values train._loop.batch_indices gave before the order moved to data: existing seeds keep their batches."""
    assert batch_indices(0, 10, 4, 7).tolist() == [3, 1, 8, 7]
    assert batch_indices(3, 10, 4, 7).tolist() == [2, 5, 8, 3]  # epoch 1 (2 steps an epoch)
    assert batch_indices(5, 10, 3, 0).tolist() == [9, 3, 7]


def test_each_rank_takes_its_slice_of_the_global_batch():
    whole = batch_indices(4, 50, 3 * 4, seed=1)
    assert torch.cat([step_indices(4, 50, 3, 4, rank, 1) for rank in range(4)]).tolist() == whole.tolist()
    with pytest.raises(ValueError, match="rank"):
        step_indices(0, 50, 3, 2, 2, 1)


def _numbered(n: int) -> ImageSet:
    """Image i is filled with i; label i % 3; caption f'c{i}'."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageSet(images, "numbered", labels=torch.arange(n) % 3, captions=tuple(f"c{i}" for i in range(n)),
                    class_names=("a", "b", "c"))


def test_in_memory_batches_follow_the_order_with_labels_and_captions():
    data = _numbered(20)
    batches = list(data.batches(start_step=2, batch_size=4, world_size=2, rank=1, seed=5, stop_step=5))
    assert len(batches) == 3
    for step, batch in zip(range(2, 5), batches):
        idx = step_indices(step, 20, 4, 2, 1, 5)
        assert batch.images[:, 0, 0, 0].tolist() == idx.tolist()
        assert batch.labels.tolist() == (idx % 3).tolist() and batch.labels.dtype == torch.int64
        assert batch.captions == [f"c{i}" for i in idx.tolist()]
    assert data.num_classes == 3 and data.num_images == 20


def test_resume_at_step_k_gives_the_rest_of_the_stream():
    data = _numbered(17)
    whole = [b.images for b in data.batches(0, 4, seed=3, stop_step=10)]
    resumed = [b.images for b in data.batches(6, 4, seed=3, stop_step=10)]
    assert all(torch.equal(a, b) for a, b in zip(whole[6:], resumed)) and len(resumed) == 4


def test_reference_images_are_all_up_to_the_limit_else_a_seeded_sorted_sample():
    data = _numbered(30)
    assert data.reference_images(30) is data.images
    sample = data.reference_images(8, seed=2)
    want = reference_indices(30, 8, 2)
    assert sample[:, 0, 0, 0].tolist() == want.tolist() == sorted(set(want.tolist())) and len(want) == 8
    assert torch.equal(data.reference_images(8, seed=2), sample)


def test_bundled_sets_have_their_labels():
    mnist = load_dataset("mnist", 8)
    assert mnist.labels.shape == (10_000,) and mnist.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist.num_classes == 10 and torch.bincount(mnist.labels).tolist()[0] == 980
    digits = load_dataset("digits", 8)
    assert digits.labels[:5].tolist() == [0, 1, 2, 3, 4] and digits.class_names[3] == "3"
    assert "in memory" in mnist.placement and "10,000 images" in mnist.placement


def test_idx_label_header_checks():
    with pytest.raises(UserInputError, match="not an IDX label file .magic 2051"):
        read_idx_labels(struct.pack(">II", 2051, 0), "x")
    with pytest.raises(UserInputError, match="truncated: 1 labels of 2"):
        read_idx_labels(struct.pack(">II", 2049, 2) + b"\x01", "x")


def test_npz_labels(tmp_path):
    images = np.zeros((4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "l.npz", labels=np.array([3, 0, 1, 3]), images=images)  # labels first: still the images
    data = load_dataset(str(tmp_path / "l.npz"), 8)
    assert data.images.shape == (4, 1, 8, 8) and data.labels.tolist() == [3, 0, 1, 3] and data.num_classes == 4
    np.savez(tmp_path / "f.npz", images=images, labels=np.array([0.5] * 4))
    with pytest.raises(UserInputError, match=r"its 'labels' array is \(4,\) float64; expected 4 integers"):
        load_dataset(str(tmp_path / "f.npz"), 8)
    assert load_dataset(str(tmp_path / "f.npz").replace("f.npz", "l.npz"), 8, label_column="label").num_classes == 4


def test_columns_a_bundled_set_lacks():
    with pytest.raises(UserInputError, match=r"captions requested \(caption_column 'text'\) but dataset 'digits' has none"):
        load_dataset("digits", 8, caption_column="text")
    for column in ("kind", "label"):  # "label" was silently ignored: the bundled sets have their own labels
        with pytest.raises(UserInputError, match=rf"label_column '{column}': the bundled digits has its own labels"):
            load_dataset("digits", 8, label_column=column)


def test_batch_size():
    assert Batch(torch.zeros(3, 1, 2, 2, dtype=torch.uint8)).size == 3


def test_the_bundled_label_file_is_idx1():
    from importlib import resources

    raw = gzip.decompress((resources.files("greendiff.data") / "tables" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert struct.unpack(">II", raw[:8]) == (2049, 10_000)


def test_npz_labels_past_the_class_cap(tmp_path):
    np.savez(tmp_path / "l.npz", images=np.zeros((2, 8, 8), dtype=np.uint8), labels=np.array([0, 100_000]))
    with pytest.raises(UserInputError, match=r"its 'labels' array holds 100000; class ids are 0\.\.99,999"):
        load_dataset(str(tmp_path / "l.npz"), 8)
