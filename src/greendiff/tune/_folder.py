"""A study's folder file (``study.toml``): the one reader and writer.

A study folder may come from someone else (a shared disk, an archive), so its ``study.toml`` is read
as untrusted input: every key checked, one-line errors naming the file and the key, and it can only
point at a storage file *inside* the folder. A storage anywhere else (another file on this machine, a
remote database) is used only when the user names it with ``--storage`` (or ``$GREENDIFF_TUNE_STORAGE``):
a folder must not be able to make greendiff open or create files elsewhere, or connect to a server.
The reader gives the folder's own storage (:meth:`StudyFolder.local_storage`), or None.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write_study_file(folder, "lr-search", f"sqlite:///{folder / 'study.db'}", "study.db")
>>> (folder / "study.db").touch()
>>> read_study_file(folder).name, read_study_file(folder).local_storage() == f"sqlite:///{folder.resolve() / 'study.db'}"
('lr-search', True)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import check_name, display_path, first_line, shown

STUDY_FILE = "study.toml"
#: The suffixes of the storage files greendiff makes in a study folder, and which kind each is.
JOURNAL_SUFFIXES = (".journal", ".log")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_KEYS = ("name", "storage_file", "storage")


@dataclass(frozen=True)
class StudyFolder:
    """What a study folder's ``study.toml`` says, checked.

    Args:
        path: The folder.
        name: The study's name (one folder name).
        storage_file: The study's storage, a file directly inside the folder (``study.db``,
            ``study.journal``); or None when the study lives in another storage.
        storage: That other storage's URL as recorded (password shown as ``***``), else None.
    """

    path: Path
    name: str
    storage_file: str | None = None
    storage: str | None = None

    @property
    def file(self) -> Path:
        return self.path / STUDY_FILE

    def local_storage(self) -> str | None:
        """The URL of the folder's own storage: its storage file, or a recorded SQLite or journal file that
        lies directly inside the folder; None when the study's storage is elsewhere (the caller must be
        told where by the user: a folder never leads greendiff to another file or a server)."""
        if self.storage_file is not None:
            return _file_url(self.path.resolve() / self.storage_file)
        return _inside(self.path, self.storage or "")


def _file_url(path: Path) -> str:
    return f"journal:{path}" if path.suffix in JOURNAL_SUFFIXES else f"sqlite:///{path}"


def _inside(folder: Path, url: str) -> str | None:
    """The URL of a local SQLite or journal storage that is a file directly inside ``folder`` (after
    symbolic links), else None. A relative path is relative to the folder."""
    if url.startswith("journal:"):
        text = url.removeprefix("journal:")
    elif url.startswith("sqlite:///") and "?" not in url:  # no driver options from a file
        text = url.removeprefix("sqlite:///")
    elif "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        text = url
    else:
        return None
    if not text or "\0" in text:
        return None
    path = Path(text) if Path(text).is_absolute() else folder / text
    resolved = path.resolve()
    if resolved.parent != folder.resolve() or resolved.suffix not in JOURNAL_SUFFIXES + SQLITE_SUFFIXES:
        return None
    if url.startswith("sqlite") != (resolved.suffix in SQLITE_SUFFIXES):
        return None
    return _file_url(resolved)


def read_study_file(folder: Path) -> StudyFolder:
    """The checked ``study.toml`` of ``folder``; a one-line :class:`UserInputError` naming the file (and
    the key) for a folder that is not a study, a file that is not TOML, or a key that is not usable."""
    path = folder / STUDY_FILE
    shown_path = display_path(path)
    if not path.is_file():
        raise UserInputError(f"{display_path(folder)}: not a study folder (no {STUDY_FILE}); "
                             "it is made by greendiff tune --space ...")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{shown_path}: invalid TOML: {first_line(exc)}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{shown_path}: not UTF-8 text") from None
    except RecursionError:
        raise UserInputError(f"{shown_path}: invalid TOML: nested too deeply") from None
    except (OSError, ValueError) as exc:  # unreadable; an integer of over 4,300 digits
        raise UserInputError(f"{shown_path}: cannot read it ({first_line(exc)})") from None
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise UserInputError(f"{shown_path}: unknown key {shown(unknown[0])}; a study file has {', '.join(_KEYS)}")
    if "name" not in data:
        raise UserInputError(f"{shown_path}: name is missing")
    name = check_name(data["name"], f"{shown_path}: name")
    if ("storage_file" in data) == ("storage" in data):
        raise UserInputError(f"{shown_path}: give exactly one of storage_file (a file in the folder) or storage (a URL)")
    if "storage" in data:
        if not isinstance(data["storage"], str) or not data["storage"]:
            raise UserInputError(f"{shown_path}: storage must be a storage URL, got {shown(data['storage'])}")
        return StudyFolder(folder, name, storage=data["storage"])
    return StudyFolder(folder, name, storage_file=_storage_file(folder, data["storage_file"], shown_path))


def _storage_file(folder: Path, value: object, shown_path: str) -> str:
    """``storage_file``: a plain file name inside the folder, of a storage kind greendiff makes."""
    name = check_name(value, f"{shown_path}: storage_file")  # no separators, '..', or leading '.'
    if not name.endswith(JOURNAL_SUFFIXES + SQLITE_SUFFIXES):
        raise UserInputError(f"{shown_path}: storage_file {shown(name)} must end in "
                             f"{', '.join(SQLITE_SUFFIXES)} (SQLite) or {', '.join(JOURNAL_SUFFIXES)} (journal)")
    path = folder / name
    if path.is_symlink() or not path.is_file():  # a link could lead anywhere; a missing file would be created
        why = "is a symbolic link" if path.is_symlink() else "is not a file in the folder"
        raise UserInputError(f"{shown_path}: storage_file {shown(name)} {why}")
    return name


def write_study_file(folder: Path, name: str, url: str, storage_file: str | None) -> None:
    """Write ``study.toml`` (atomically): the study's name and its storage file in the folder, or the URL
    of its storage elsewhere with the password as ``***``."""
    import tomli_w

    from greendiff.tune._study import redact

    record = {"name": name, **({"storage_file": storage_file} if storage_file else {"storage": redact(url)})}
    try:
        atomic_write_text(folder / STUDY_FILE, tomli_w.dumps(record))
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(folder / STUDY_FILE)}: {exc.strerror}") from None
