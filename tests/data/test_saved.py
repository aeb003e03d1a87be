"""A folder written by ``datasets``' ``save_to_disk``: images, ClassLabel labels, captions, streamed or not."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from greendiff.data import ImageSet, StreamedSet, load_dataset
from greendiff.data._hf import is_saved_dataset
from greendiff.errors import UserInputError


def _images(n: int, mode: str = "RGB") -> list:
    rng = np.random.default_rng(1)
    shape = (9, 9, 3) if mode == "RGB" else (9, 9)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def saved(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "kind": datasets.ClassLabel(names=["cat", "dog"]),
                                  "text": datasets.Value("string"), "score": datasets.Value("float32")})
    ds = datasets.Dataset.from_dict({"image": _images(10), "kind": [i % 2 for i in range(10)],
                                     "text": [f"photo {i}" for i in range(10)], "score": [0.5] * 10}, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_images_classlabel_and_captions_flow_to_the_batch(saved):
    assert is_saved_dataset(saved)
    data = load_dataset(str(saved), 9, caption_column="text")
    assert isinstance(data, ImageSet) and data.images.shape == (10, 3, 9, 9)
    assert data.class_names == ("cat", "dog") and data.labels.tolist() == [i % 2 for i in range(10)]
    want = torch.from_numpy(np.array(_images(10)[3])).permute(2, 0, 1)
    assert torch.equal(data.images[3], want)
    batch = next(data.batches(0, 4, seed=2))
    assert [int(c.split()[1]) % 2 for c in batch.captions] == batch.labels.tolist()


def test_streamed_equals_in_memory(saved):
    memory = load_dataset(str(saved), 8, caption_column="text")
    streamed = load_dataset(str(saved), 8, caption_column="text", cache_max_gb=0, workers=2)
    assert isinstance(streamed, StreamedSet) and "streamed from disk with 2 workers" in streamed.placement
    for a, b in zip(memory.batches(1, 3, seed=9, stop_step=6), streamed.batches(1, 3, seed=9, stop_step=6)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.captions == b.captions


def test_columns_are_checked(saved):
    with pytest.raises(UserInputError, match=r"label_column 'species': .* no such column \(columns: kind, text, score\)"):
        load_dataset(str(saved), 8, label_column="species")
    with pytest.raises(UserInputError, match=r"label column 'score' .* holds a float"):
        load_dataset(str(saved), 8, label_column="score")
    with pytest.raises(UserInputError, match=r"caption column 'kind' .* holds a int"):
        load_dataset(str(saved), 8, caption_column="kind")


def test_a_greyscale_image_feature_is_one_channel(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": _images(3, "L")}, features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "grey"))
    data = load_dataset(str(tmp_path / "grey"), 8)
    assert data.channels == 1 and data.labels is None


def test_without_the_package_one_line_names_the_extra(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets raises ImportError
    with pytest.raises(UserInputError, match=r"saved by Hugging Face datasets; .* pip install 'greendiff\[datasets\]'"):
        load_dataset(str(saved), 8)


def test_an_empty_saved_dataset_has_no_rows(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
    datasets.Dataset.from_dict({"image": [], "label": []}, features=features).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(UserInputError, match=r"^the saved dataset .*empty has no rows$"):
        load_dataset(str(tmp_path / "empty"), 8)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [], "label": []}, features=features)}
                         ).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(UserInputError, match=r"^the saved dataset .*dict has no rows$"):
        load_dataset(str(tmp_path / "dict"), 8)


def test_what_gives_a_saved_dataset_labels_lists_its_columns(tmp_path):
    from greendiff.data import label_sources

    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": _images(2), "cls": [0, 1], "text": ["a", "b"]},
                                    features=datasets.Features({"image": datasets.Image(), "cls": datasets.Value("int64"),
                                                                "text": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "unlabelled"))
    assert load_dataset(str(tmp_path / "unlabelled"), 8).labels is None
    assert label_sources(str(tmp_path / "unlabelled")) == ("a ClassLabel feature, or --label-column naming one of its "
                                                           "columns (cls, text)")
    assert "class subfolders" not in label_sources(str(tmp_path / "unlabelled"))
    assert label_sources(str(tmp_path)) == "class subfolders, or a metadata.jsonl/.csv column named by --label-column"


def test_a_class_label_id_past_the_cap(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": _images(2), "cls": [0, 10**12]})
    ds.save_to_disk(str(tmp_path / "big"))
    with pytest.raises(UserInputError, match=r"label column 'cls' of .*big holds 1000000000000 \('row 1'\); class ids are "
                                             r"0\.\.99,999"):
        load_dataset(str(tmp_path / "big"), 8, label_column="cls")
