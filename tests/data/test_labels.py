"""Labels and captions of an image folder in the ``datasets`` imagefolder layout, and every bad input."""

from __future__ import annotations

import json
import re

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


# -- the hostile tester's findings (issue 19 data layer) ---------------------------------------------------------


def _sixteen(tmp_path):
    for i in range(4):
        _png(tmp_path / f"{i:03d}.png", 10 * i)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@pytest.mark.parametrize("huge", [10**30, 2**40, 100_000])
def test_a_class_id_past_the_cap_is_one_line_naming_file_row_and_value(tmp_path, kind, huge):
    _sixteen(tmp_path)
    labels = [0, 1, huge, 2]
    if kind == "jsonl":
        _jsonl(tmp_path, [{"file_name": f"{i:03d}.png", "label": v} for i, v in enumerate(labels)])
    else:
        (tmp_path / "metadata.csv").write_text("file_name,label\n" + "".join(f"{i:03d}.png,{v}\n" for i, v in enumerate(labels)))
    with pytest.raises(UserInputError, match=rf"label column 'label' of .*metadata\.{kind} holds {huge} \('002\.png'\); "
                                             r"class ids are 0\.\.99,999 \(at most 100,000 classes\)$"):
        load_dataset(str(tmp_path), 6, label_column="label")


def test_the_largest_allowed_class_id_loads(tmp_path):
    from greendiff.data import MAX_CLASSES

    _sixteen(tmp_path)
    _jsonl(tmp_path, [{"file_name": f"{i:03d}.png", "label": v} for i, v in enumerate([0, 1, MAX_CLASSES - 1, 2])])
    data = load_dataset(str(tmp_path), 6, label_column="label")
    assert MAX_CLASSES == 100_000 and data.num_classes == 100_000 and sorted(data.labels.tolist()) == [0, 1, 2, 99_999]


@pytest.mark.parametrize("values, row, message", [
    ([0, 1, "cat", 2], "002.png", r"'002\.png' holds 'cat' \(class names in 1 of 4 rows, class ids in the rest\)"),
    (["cat", 3, "dog", "owl"], "001.png", r"'001\.png' holds 3 \(class ids in 1 of 4 rows, class names in the rest\)"),
    (["cat", "dog", "7", "owl"], "002.png", r"'002\.png' holds 7 \(class ids in 1 of 4 rows"),
])
def test_a_label_column_mixing_ids_and_names_names_the_first_row_of_the_fewer_kind(tmp_path, values, row, message):
    _sixteen(tmp_path)
    _jsonl(tmp_path, [{"file_name": f"{i:03d}.png", "label": v} for i, v in enumerate(values)])
    with pytest.raises(UserInputError, match=r"label column 'label' of .*metadata\.jsonl mixes class ids and class "
                                             r"names: " + message) as err:
        load_dataset(str(tmp_path), 6, label_column="label")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("header", ["file_name,label,label", "file_name,file_name,label"])
def test_a_repeated_csv_header_column_is_refused(tmp_path, header):
    _sixteen(tmp_path)
    (tmp_path / "metadata.csv").write_text(header + "\n" + "".join(f"{i:03d}.png,{i},{i}\n" for i in range(4)))
    repeated = header.split(",")[1]
    with pytest.raises(UserInputError, match=rf"metadata\.csv: column '{repeated}' appears twice in the header"):
        load_dataset(str(tmp_path), 6, label_column="label")


def test_a_repeated_key_in_a_jsonl_row_is_refused(tmp_path):
    """json keeps the last of a repeated key silently: {"label": 1, "label": 7} would read as 7."""
    _sixteen(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "000.png", "label": 1, "label": 7}\n')
    with pytest.raises(UserInputError, match=r"metadata\.jsonl line 1: the key 'label' appears twice") as err:
        load_dataset(str(tmp_path), 6, label_column="label")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cell, shown", [("0.5", "0.5"), ("1.0", "1.0"), ("2e3", "2000.0"), ("-.5", "-0.5")])
def test_a_csv_number_that_is_not_an_integer_is_refused_as_jsonl_refuses_it(tmp_path, cell, shown):
    _sixteen(tmp_path)
    (tmp_path / "metadata.csv").write_text("file_name,label\n" + "".join(
        f"{i:03d}.png,{cell if i == 1 else i}\n" for i in range(4)))
    with pytest.raises(UserInputError, match=rf"label column 'label' of .*metadata\.csv holds a float "
                                             rf"\('001\.png': {re.escape(shown)}\); labels are integers or class names"):
        load_dataset(str(tmp_path), 6, label_column="label")
    (tmp_path / "metadata.csv").unlink()
    _jsonl(tmp_path, [{"file_name": f"{i:03d}.png", "label": float(cell) if i == 1 else i} for i in range(4)])
    with pytest.raises(UserInputError, match=rf"holds a float \('001\.png': {re.escape(shown)}\)"):
        load_dataset(str(tmp_path), 6, label_column="label")


def test_csv_integer_text_stays_an_integer_and_names_stay_names(tmp_path):
    _sixteen(tmp_path)
    (tmp_path / "metadata.csv").write_text("file_name,label,kind\n" + "".join(
        f"{i:03d}.png,{'+3' if i == 0 else i},{'nan' if i % 2 else 'inf'}\n" for i in range(4)))
    data = load_dataset(str(tmp_path), 6, label_column="label")
    assert data.class_names == () and _pixel_to(data) == {0: (3, None), 10: (1, None), 20: (2, None), 30: (3, None)}
    named = load_dataset(str(tmp_path), 6, label_column="kind")  # words that float() would read are names
    assert named.class_names == ("inf", "nan") and named.labels.tolist() == [0, 1, 0, 1]


def test_a_label_column_for_a_folder_without_metadata_is_refused(tmp_path):
    _png(tmp_path / "cat" / "a.png", 1)
    _png(tmp_path / "dog" / "b.png", 2)
    assert load_dataset(str(tmp_path), 6).class_names == ("cat", "dog")
    with pytest.raises(UserInputError, match=r"^label_column 'label': .* has no metadata\.jsonl or metadata\.csv; its "
                                             r"labels come from class subfolders \(drop label_column\)$"):
        load_dataset(str(tmp_path), 6, label_column="label")
    with pytest.raises(UserInputError, match=r"^caption_column 'text': .* has no metadata\.jsonl or metadata\.csv; "
                                             r"captions come from a column of a metadata\.jsonl or metadata\.csv"):
        load_dataset(str(tmp_path), 6, caption_column="text")


@pytest.mark.parametrize("name", ["mnist", "digits"])
def test_a_label_column_for_a_bundled_set_is_refused(name):
    with pytest.raises(UserInputError, match=rf"^label_column 'label': the bundled {name} has its own labels"):
        load_dataset(name, 8, label_column="label")


def test_class_counts_show_the_empty_classes_of_integer_ids(tmp_path):
    _sixteen(tmp_path)
    _jsonl(tmp_path, [{"file_name": f"{i:03d}.png", "label": v} for i, v in enumerate([3, 7, 7, 3])])
    memory = load_dataset(str(tmp_path), 6, label_column="label")
    streamed = load_dataset(str(tmp_path), 6, label_column="label", cache_max_gb=0, workers=0)
    assert type(streamed).__name__ == "StreamedSet"
    for data in (memory, streamed):
        assert data.num_classes == 8 and data.class_counts == (0, 0, 0, 2, 0, 0, 0, 2)
    assert load_dataset("digits", 8).class_counts[:3] == (178, 182, 177)


def test_class_counts_leave_out_images_without_a_class(tmp_path):
    _png(tmp_path / "cat" / "a.png", 1)
    _png(tmp_path / "cat" / "b.png", 2)
    _png(tmp_path / "loose.png", 3)
    data = load_dataset(str(tmp_path), 6)
    assert data.class_counts == (2,)
    _png(tmp_path / "z.png", 4)
    assert load_dataset(str(tmp_path / "cat"), 6).class_counts == ()
