"""One greendiff process at a time in a run directory.

A training owns its run directory: before a resume, ``recover`` deletes unfinished checkpoint folders
(``.tmp-step-N``), and the run appends to ``metrics.jsonl`` and rotates checkpoints. A second process in
the same directory (a second ``train --resume``, or a resume while the run still trains) would delete the
first one's checkpoint mid-write and interleave both runs' files. So the process that trains holds an
exclusive lock on ``RUN_DIR/.lock`` (``flock``, non-blocking) from before it touches anything until it
ends, and a second one is refused with one line. The kernel releases the lock when its process ends,
however it ends (a kill included), so a lock is never left behind; the file stays, holding the pid of
its last holder (for the message). Readers (``report``, ``sample``, ``eval``) take no lock, and
checkpoint readers never look at it: it is a hidden file beside ``checkpoints/``, not inside it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import display_path

logger = logging.getLogger(__name__)

#: The lock's file name inside a run directory.
LOCK_FILE = ".lock"


class RunDirLock:
    """An exclusive lock on a run directory for as long as a process trains in it.

    Args:
        run_dir: The run directory (it must exist).

    Example:
        >>> import tempfile, pathlib
        >>> run_dir = pathlib.Path(tempfile.mkdtemp())
        >>> with RunDirLock(run_dir) as lock:
        ...     lock.held, (run_dir / LOCK_FILE).read_text() == str(os.getpid())
        (True, True)
        >>> lock.held
        False
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunDirLock:
        """Take the lock, or a one-line :class:`UserInputError` naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # no flock on this platform: nothing to hold
            return self
        shown = display_path(self.run_dir)
        try:
            file = open(self.run_dir / LOCK_FILE, "a+", encoding="ascii", errors="replace")
        except OSError as exc:
            raise UserInputError(f"cannot lock run directory {shown}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read(20).strip()
            file.close()
            raise UserInputError(f"run directory {shown} is in use by another greendiff process "
                                 f"(pid {holder if holder.isdecimal() else 'unknown'}); wait for it to end or stop it, "
                                 "then try again") from None
        except OSError as exc:  # a file system without locks (some network ones): go on, unprotected
            file.close()
            logger.warning("run directory %s cannot be locked (%s); do not run two greendiff processes in it at once",
                           shown, exc.strerror or exc)
            return self
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        """Let the lock go (closing the file does; a process that ends lets it go too)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
