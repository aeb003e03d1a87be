"""Labels and captions of an image folder in the ``datasets`` imagefolder layout, and every bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from greendiff.data import load_dataset
from greendiff.errors import UserInputError


def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (6, 6), value).save(path)


def _jsonl(folder, rows) -> None:
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _pixel_to(data) -> dict:
    """Each image's value (a flat grey image) -> its (label, caption)."""
    captions = data.captions or [None] * data.num_images
    return {int(img[0, 0, 0]): (int(lab), cap) for img, lab, cap in zip(data.images, data.labels, captions)}


def test_class_subfolders_are_labels_sorted_by_name(tmp_path):
    _png(tmp_path / "dog" / "a.png", 10)
    _png(tmp_path / "cat" / "b.png", 20)
    _png(tmp_path / "cat" / "deep" / "c.png", 30)  # the first folder is the class
    _png(tmp_path / "loose.png", 40)
    data = load_dataset(str(tmp_path), 6)
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert _pixel_to(data) == {10: (1, None), 20: (0, None), 30: (0, None), 40: (-1, None)}
    batch = next(data.batches(0, 4, seed=0))
    assert sorted(zip(batch.images[:, 0, 0, 0].tolist(), batch.labels.tolist())) == [(10, 1), (20, 0), (30, 0), (40, -1)]


def test_a_flat_folder_has_no_labels(tmp_path):
    _png(tmp_path / "a.png", 1)
    data = load_dataset(str(tmp_path), 6)
    assert data.labels is None and data.num_classes == 0 and next(data.batches(0, 1)).labels is None


def test_jsonl_labels_by_name_and_captions(tmp_path):
    for i, name in enumerate(["x.png", "sub/y.png", "z.png"]):
        _png(tmp_path / name, 10 * (i + 1))
    _jsonl(tmp_path, [{"file_name": "x.png", "kind": "owl", "text": "an owl"},
                      {"file_name": "./sub/y.png", "kind": "bat", "text": "a bat"},
                      {"file_name": "z.png", "kind": "owl", "text": "another owl"}])
    data = load_dataset(str(tmp_path), 6, label_column="kind", caption_column="text")
    assert data.class_names == ("bat", "owl")
    assert _pixel_to(data) == {10: (1, "an owl"), 20: (0, "a bat"), 30: (1, "another owl")}
    batch = next(data.batches(0, 3, seed=4))
    assert {(int(i[0, 0, 0]), c) for i, c in zip(batch.images, batch.captions)} == {(10, "an owl"), (20, "a bat"),
                                                                                     (30, "another owl")}


def test_csv_integer_labels(tmp_path):
    _png(tmp_path / "a.png", 5)
    _png(tmp_path / "b.png", 6)
    (tmp_path / "metadata.csv").write_text('file_name,label,text\na.png,3,"one, with a comma"\nb.png,0,two\n')
    data = load_dataset(str(tmp_path), 6, label_column="label", caption_column="text")
    assert _pixel_to(data) == {5: (3, "one, with a comma"), 6: (0, "two")} and data.class_names == ()
    assert data.num_classes == 4


def test_labels_of_skipped_bad_files_are_dropped_with_them(tmp_path):
    _png(tmp_path / "a.png", 5)
    (tmp_path / "b.png").write_bytes(b"not a png")
    _png(tmp_path / "c.png", 7)
    _jsonl(tmp_path, [{"file_name": n, "label": i} for i, n in enumerate(["a.png", "b.png", "c.png"])])
    data = load_dataset(str(tmp_path), 6, skip_bad_images=True, label_column="label")
    assert _pixel_to(data) == {5: (0, None), 7: (2, None)} and data.skipped == 1


def _three(tmp_path):
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        _png(tmp_path / name, i)


@pytest.mark.parametrize("rows, args, message", [
    ([{"file_name": "a.png", "label": 1}], {"label_column": "label"},
     r"labels missing for 2 of 3 images \(e\.g\. 'b\.png'\): each needs a 'label' value in .*metadata\.jsonl"),
    ([{"file_name": n, "label": 0.5} for n in "abc"], {"label_column": "label"},
     r"label column 'label' of .*metadata\.jsonl holds a float \('a\.png': 0\.5\); labels are integers or class names"),
    ([{"file_name": n, "label": [1]} for n in "abc"], {"label_column": "label"}, r"holds a list"),
    ([{"file_name": n, "label": -2} for n in "abc"], {"label_column": "label"},
     r"holds -2 \('a\.png'\); class ids are 0\.\.99,999"),
    ([{"file_name": "gone.png", "label": 0}], {}, r"line 1: file_name 'gone\.png': no such file in "),
    ([{"file_name": "../x.png"}], {}, r"line 1: file_name '\.\./x\.png' leads outside the folder"),
    ([{"file_name": "/etc/passwd"}], {}, r"file_name '/etc/passwd' leads outside the folder"),
    ([{"file_name": "sub/../../x.png"}], {}, r"leads outside the folder"),
    ([{"file_name": n, "kind": 1, "text": "t"} for n in "abc"], {"label_column": "klass"},
     r"label_column 'klass': .*metadata\.jsonl has no such column \(columns: kind, text\)"),
    ([{"file_name": n, "kind": 1} for n in "abc"], {"caption_column": "text"},
     r"caption_column 'text': .* no such column \(columns: kind\)"),
    ([{"file_name": n, "text": 3} for n in "abc"], {"caption_column": "text"}, r"caption column 'text' .* holds a int"),
    ([{"file_name": "a.png", "text": "x"}], {"caption_column": "text"}, r"captions missing for 2 of 3 images"),
    ([{"file_name": "a.png"}, {"file_name": "a.png"}], {}, r"line 2: file_name 'a\.png' is already on line 1"),
    ([{"name": "a.png"}], {}, r"no file_name column \(columns: name\)"),
])
def test_bad_metadata_is_one_line(tmp_path, rows, args, message):
    rows = [dict(r, file_name=r["file_name"] + ".png") if r.get("file_name") in ("a", "b", "c") else r for r in rows]
    _three(tmp_path)
    _jsonl(tmp_path, rows)
    with pytest.raises(UserInputError, match=message) as err:
        load_dataset(str(tmp_path), 6, **args)
    assert "\n" not in str(err.value)


def test_metadata_that_is_not_jsonl_or_csv_names_the_line(tmp_path):
    _three(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n{"file_name": "b.png",\n')
    with pytest.raises(UserInputError, match=r"metadata\.jsonl line 2: not valid JSON"):
        load_dataset(str(tmp_path), 6)
    (tmp_path / "metadata.jsonl").write_text('["a.png"]\n')
    with pytest.raises(UserInputError, match=r"line 1: a JSON list, expected an object"):
        load_dataset(str(tmp_path), 6)
    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / "metadata.csv").write_text("file_name,label\na.png,1\nb.png,1,extra\n")
    with pytest.raises(UserInputError, match=r"metadata\.csv line 3: 3 fields, the header has 2"):
        load_dataset(str(tmp_path), 6)
    (tmp_path / "metadata.csv").write_text('file_name,label\n"a.png\n')
    with pytest.raises(UserInputError, match=r"metadata\.csv line \d: not valid CSV"):
        load_dataset(str(tmp_path), 6)
    (tmp_path / "metadata.jsonl").write_text("")
    with pytest.raises(UserInputError, match="holds both metadata.jsonl and metadata.csv"):
        load_dataset(str(tmp_path), 6)


def test_a_row_naming_a_non_image_file(tmp_path):
    _three(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    _jsonl(tmp_path, [{"file_name": "notes.txt"}])
    with pytest.raises(UserInputError, match=r"file_name 'notes\.txt' is not one of the folder's image files"):
        load_dataset(str(tmp_path), 6)


def test_captions_requested_without_any_metadata(tmp_path):
    _three(tmp_path)
    with pytest.raises(UserInputError, match=r"caption_column 'text': .* has no metadata\.jsonl or metadata\.csv; "
                                             r"captions come from a column of"):
        load_dataset(str(tmp_path), 6, caption_column="text")
    with pytest.raises(UserInputError, match=r"label_column 'label': .* has no metadata\.jsonl or metadata\.csv; "
                                             r"labels come from class subfolders or a column"):
        load_dataset(str(tmp_path), 6, label_column="label")


def test_nothing_is_decoded_before_the_metadata_is_checked(tmp_path, monkeypatch):
    import greendiff.data._sources as sources

    _three(tmp_path)
    _jsonl(tmp_path, [{"file_name": "a.png", "label": 1}])
    monkeypatch.setattr(sources, "_decode", lambda *a, **k: pytest.fail("decoded before the labels were checked"))
    with pytest.raises(UserInputError, match="labels missing"):
        load_dataset(str(tmp_path), 6, label_column="label")
