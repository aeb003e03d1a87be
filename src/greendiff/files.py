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

import os
import tempfile
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
