"""A study folder's ``study.toml`` read as untrusted input: one reader, checked keys, storage only inside."""

from __future__ import annotations

import os

import pytest

from greendiff.errors import UserInputError
from greendiff.tune import read_study_file, write_study_file
from greendiff.tune._folder import StudyFolder


def folder_with(tmp_path, text: str, files=("study.db",)):
    folder = tmp_path / "study"
    folder.mkdir()
    for name in files:
        (folder / name).touch()
    (folder / "study.toml").write_text(text)
    return folder


def test_a_study_file_round_trips_and_names_its_own_storage(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "study.journal").touch()
    write_study_file(folder, "lr", f"journal:{folder / 'study.journal'}", "study.journal")
    record = read_study_file(folder)
    assert record == StudyFolder(folder, "lr", storage_file="study.journal")
    assert record.local_storage() == f"journal:{folder.resolve() / 'study.journal'}"
    write_study_file(folder, "lr", "postgresql://alice:s3cret@db.example.org/studies", None)
    assert "s3cret" not in (folder / "study.toml").read_text()
    record = read_study_file(folder)
    assert record.storage == "postgresql://***@db.example.org/studies" and record.local_storage() is None
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # written atomically, nothing left over


@pytest.mark.parametrize("storage", ["sqlite:///{f}/s.db", "journal:{f}/s.journal", "{f}/s.journal", "journal:s.journal",
                                     "sqlite:///{f}/sub/../s.db"])
def test_a_recorded_storage_inside_the_folder_is_used(tmp_path, storage):
    folder = folder_with(tmp_path, "", files=("s.db", "s.journal"))
    (folder / "sub").mkdir()
    url = storage.format(f=folder)
    (folder / "study.toml").write_text(f'name = "x"\nstorage = "{url}"\n')
    expected = folder.resolve() / ("s.db" if "s.db" in url else "s.journal")
    assert read_study_file(folder).local_storage() in (f"sqlite:///{expected}", f"journal:{expected}")


@pytest.mark.parametrize("storage", [
    "postgresql://u:p@db.example.org/x", "mysql://db/x", "sqlite:////etc/x.db", "sqlite:///{f}/../out.db",
    "journal:/tmp/other.journal", "sqlite:///{f}/s.db?mode=rw", "sqlite:///{f}/s.journal", "journal:{f}/s.db",
    "sqlite:///{f}/link.db", "sqlite://", "sqlite:///:memory:",
])
def test_a_recorded_storage_outside_the_folder_is_not_used(tmp_path, storage):
    folder = folder_with(tmp_path, "", files=("s.db", "s.journal"))
    os.symlink(tmp_path / "elsewhere.db", folder / "link.db")
    (folder / "study.toml").write_text(f'name = "x"\nstorage = "{storage.format(f=folder)}"\n')
    assert read_study_file(folder).local_storage() is None


@pytest.mark.parametrize(("text", "message"), [
    ("name = \n", "study.toml: invalid TOML: "),
    ('name = "x"\nname = "y"\n', "study.toml: invalid TOML: "),
    ('storage_file = "study.db"\n', "study.toml: name is missing"),
    ('name = "../../escaped"\nstorage_file = "study.db"\n', "study.toml: name '../../escaped' is not a usable name: it contains '/'"),
    ('name = 5\nstorage_file = "study.db"\n', "study.toml: name must be a string, got 5"),
    ('name = "x"\nstorage_file = "../x.db"\n', "study.toml: storage_file '../x.db' is not a usable name: it contains '/'"),
    ('name = "x"\nstorage_file = "/tmp/x.db"\n', "study.toml: storage_file '/tmp/x.db' is not a usable name"),
    ('name = "x"\nstorage_file = ".."\n', "study.toml: storage_file '..' is not a usable name"),
    ('name = "x"\nstorage_file = "study.toml"\n', "study.toml: storage_file 'study.toml' must end in .db"),
    ('name = "x"\nstorage_file = "missing.db"\n', "study.toml: storage_file 'missing.db' is not a file in the folder"),
    ('name = "x"\nstorage_file = "link.db"\n', "study.toml: storage_file 'link.db' is a symbolic link"),
    ('name = "x"\n', "study.toml: give exactly one of storage_file"),
    ('name = "x"\nstorage_file = "study.db"\nstorage = "sqlite:///y.db"\n', "study.toml: give exactly one of storage_file"),
    ('name = "x"\nstorage = ["a"]\n', "study.toml: storage must be a storage URL, got ['a']"),
    ('name = "x"\nstorage_file = "study.db"\nextra = 1\n', "study.toml: unknown key 'extra'"),
    ('name = "x"\nstorage_file = "study.db"\nn = ' + "1" * 5000 + "\n", "study.toml: cannot read it ("),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "study.toml: invalid TOML: nested too deeply"),
    (b"name = \"\xff\"\n", "study.toml: not UTF-8 text"),
])
def test_a_hostile_study_file_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    folder = folder_with(tmp_path, "")
    os.symlink(tmp_path / "elsewhere.db", folder / "link.db")
    (folder / "study.toml").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserInputError) as err:
        read_study_file(folder)
    assert str(err.value).startswith(f"{folder / 'study.toml'}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]  # nothing created beside it


def test_a_folder_without_a_study_file_is_not_a_study(tmp_path):
    with pytest.raises(UserInputError, match="not a study folder"):
        read_study_file(tmp_path)
