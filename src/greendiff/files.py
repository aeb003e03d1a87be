"""The one way greendiff writes a file in place: atomically.

A file is written beside its destination under a hidden temporary name and renamed over it only once
complete, so a reader (or a resume after a kill or a full disk) sees the old file or the new one,
never half of one. Every file greendiff rewrites (``emissions.json``, ``config.toml``,
``train_state.json``, reports, exports, study files, caches) goes through here.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "out.json"
>>> atomic_write_text(path, '{"a": 1}')
>>> path.read_text()
'{"a": 1}'
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    The folder must exist. On any error the temporary file is removed and the destination is left as
    it was; the ``OSError`` propagates for the caller to turn into a one-line message.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if path.exists():  # keep the destination's permissions (mkstemp creates 0600)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` for text (UTF-8 by default)."""
    atomic_write_bytes(path, text.encode(encoding))


def read_json_object(path: Path, name: str, fail: Callable[[str], Exception], max_bytes: int = 1_000_000,
                     large_as: str = "a config", object_as: str = "a JSON object") -> dict:
    """The JSON object in ``path``, a small config file read whole; otherwise ``fail(why)`` is raised, ``why``
    one phrase starting with ``name`` (how messages call the file): it cannot be read, is larger than
    ``max_bytes`` (not ``large_as``), is not valid JSON, or holds another value (not ``object_as``)."""
    import json

    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise fail(f"{name} is larger than {max_bytes:,} bytes, not {large_as}")
        data = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise fail(f"{name} cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise fail(f"{name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise fail(f"{name} holds {type(data).__name__}, not {object_as}")
    return data


@contextlib.contextmanager
def staged_folder(output: Path, flag: str = "--output-dir") -> Iterator[Path]:
    """A new hidden folder beside ``output`` (its missing parents made) to fill inside the block; renamed to
    ``output`` when the block ends normally. If the block raises (an error, Ctrl-C), the folder and the parents
    it made are removed, so nothing is left half-made. ``flag`` names ``output`` in the one-line errors."""
    from greendiff.errors import UserInputError
    from greendiff.names import display_path

    output = Path(os.path.abspath(output))
    made = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = output.parent / f".tmp-{output.name}-{secrets.token_hex(4)}"
        staging.mkdir()  # with the umask's permissions (mkdtemp's are 0700), as the renamed folder keeps them
    except OSError as exc:
        remove_empty(made)
        raise UserInputError(f"cannot create {flag} {display_path(output)}: {exc.strerror or exc}") from None
    try:
        yield staging
        try:
            os.replace(staging, output)  # over an empty folder, or none
        except OSError as exc:
            raise UserInputError(f"cannot move the result into {flag} {display_path(output)} "
                                 f"({exc.strerror or exc}): was it filled meanwhile?") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty(made)
        raise


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
