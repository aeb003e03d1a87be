"""Each greendiff process uses its share of the machine's cores, not all of them.

PyTorch sizes its intra-op thread pool to every core. Two such processes on one machine (two runs,
parallel tuning workers, ``--nproc``) each run that many threads, and their OpenMP workers spin
against each other: on 2 cores two nano trainings ran at 19-40 images/s each instead of ~2,000.
So every training process registers in a per-user folder of live greendiff processes and sets
``torch.set_num_threads(cores // processes)``; it looks again every few seconds, so a process that
starts or ends later rebalances the others (BENCHMARKS.md, "Two runs at once").

Overrides (environment): ``GREENDIFF_THREADS=N`` fixes this process at N threads;
``GREENDIFF_THREADS=all`` leaves PyTorch's thread count alone (the behaviour before this module).
An ``OMP_NUM_THREADS`` set by the user or a launcher (torchrun sets 1 per process) is respected too.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> threads = []
    >>> with CoreShare(folder, cores=8, env={}, set_threads=threads.append, get_threads=lambda: 8) as share:
    ...     share.threads, share.live_processes()
    (8, 1)
"""

from __future__ import annotations

import logging
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from greendiff.files import atomic_write_text

logger = logging.getLogger(__name__)

ENV_THREADS = "GREENDIFF_THREADS"
RECHECK_S = 2.0  # how often a process looks for others that started or ended


def thread_setting(env: Mapping[str, str] = os.environ) -> int | str | None:
    """``GREENDIFF_THREADS`` parsed: a positive int, ``"all"`` (leave PyTorch alone), or ``None`` (unset:
    take a share; also when set empty). A bad value is a one-line error, checked by the CLI before anything
    starts; spaces around the value are refused, as in every number greendiff reads (``GREENDIFF_PUE``)."""
    raw = env.get(ENV_THREADS, "")
    if not raw:
        return None
    if raw.lower() == "all":
        return "all"
    from greendiff.numbers import Bounds, parse_int  # the one number grammar, as for every flag

    threads = Bounds(integer=True, lo=1, hi=4096, phrase="a number of threads (1-4096) or 'all'")
    return threads.check(parse_int(raw, ENV_THREADS, expected=threads.phrase), ENV_THREADS, raw)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, as containers and ``taskset`` set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_registry() -> Path:
    """A per-user folder of live greendiff processes (on this machine's temporary file system)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"greendiff-{uid}" / "processes"


def private_folder(folder: Path) -> None:
    """Make ``folder`` and its parent (mode 0700) if missing, and check that both are real folders of
    this user that nobody else can write: on a shared ``/tmp`` another user could otherwise plant a
    symlink and have this process delete files elsewhere. ``PermissionError`` if not."""
    for level in (folder.parent, folder):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            pass
        info = level.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise PermissionError(f"{level} is not a folder (a symlink?)")
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
            raise PermissionError(f"{level} belongs to another user or others can write to it")


def _started_at(pid: int) -> float | None:
    """The process's start time (to tell it from a later process with the same pid), or ``None`` if gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


class CoreShare:
    """This process's share of the cores among the greendiff processes running on this machine.

    Args:
        registry: Folder of live processes (default: :func:`default_registry`); one file per process,
            named by its pid, holding its start time.
        cores: Cores to share (default: this process's affinity).
        env: Where the overrides are read (``GREENDIFF_THREADS``, ``OMP_NUM_THREADS``).
        set_threads: Applies a thread count (default ``torch.set_num_threads``; it must run on the
            thread that runs the model, so :meth:`rebalance` is called from the training loop).
        get_threads: Reads it (default ``torch.get_num_threads``); restored on exit.
        recheck_s: Seconds between looks at the registry.
    """

    def __init__(self, registry: Path | None = None, cores: int | None = None, env: Mapping[str, str] = os.environ,
                 set_threads: Callable[[int], None] | None = None, get_threads: Callable[[], int] | None = None,
                 recheck_s: float = RECHECK_S,
                 clock: Callable[[], float] = time.monotonic, pid: int | None = None) -> None:
        self.registry = registry or default_registry()
        self.cores = cores or available_cores()
        self.setting = thread_setting(env)
        self.launcher_threads = env.get("OMP_NUM_THREADS", "").strip()
        self._set_threads, self._get_threads = set_threads, get_threads
        self.recheck_s, self._clock = recheck_s, clock
        self.pid = pid or os.getpid()
        self.threads: int | None = None  # what this process runs now (None: left alone)
        self._original: int | None = None
        self._entry: Path | None = None
        self._checked_at = -float("inf")

    @property
    def managed(self) -> bool:
        """Whether this process's thread count is greendiff's to set (no override, no launcher setting)."""
        return self.setting != "all" and not (self.setting is None and self.launcher_threads)

    def __enter__(self) -> CoreShare:
        self._entry = self._register()  # also when not managed: the others count this process
        if self.managed:
            if self._get_threads is None:
                import torch

                self._original = torch.get_num_threads()
            else:
                self._original = self._get_threads()
            self.rebalance(force=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._entry is not None:
            self._entry.unlink(missing_ok=True)
            self._entry = None
        if self._original is not None:
            self._apply(self._original)

    def rebalance(self, force: bool = False) -> int | None:
        """Look at the registry (at most every ``recheck_s``) and set this process's threads to its
        share; returns the thread count (``None`` when not managed). Cheap enough to call every step."""
        if not self.managed:
            return None
        now = self._clock()
        if not force and now - self._checked_at < self.recheck_s:
            return self.threads
        self._checked_at = now
        want = self.setting if isinstance(self.setting, int) else max(1, self.cores // self.live_processes())
        if want != self.threads:
            if self.threads is not None:
                logger.info("%d greendiff processes on %d cores: %d threads for this one",
                            self.live_processes(), self.cores, want)
            self._apply(want)
        return self.threads

    def live_processes(self) -> int:
        """Registered processes still alive, this one included; stale entries are removed."""
        live = 1
        if self._entry is None:  # not registered (an unsafe or unusable folder): never look inside it
            return live
        try:
            entries = list(self.registry.iterdir())
        except OSError:
            return live
        for entry in entries:
            if not entry.name.isascii() or not entry.name.isdigit() or int(entry.name) == self.pid:
                continue  # temporary files of a write in progress start with "."
            try:
                recorded = float(entry.read_text())
            except (OSError, ValueError):
                continue  # unreadable: not ours to judge (entries are written atomically, so never half)
            started = _started_at(int(entry.name))
            if started is not None and abs(started - recorded) < 1.0:
                live += 1
            elif started is None or math.isfinite(recorded):
                entry.unlink(missing_ok=True)  # a process that died without leaving (killed), or a reused pid
        return live

    def _register(self) -> Path | None:
        """This process's entry; ``None`` (no sharing, a warning) where the folder is not usable."""
        try:
            private_folder(self.registry)
            entry = self.registry / str(self.pid)
            atomic_write_text(entry, repr(_started_at(self.pid) or 0.0))
            return entry
        except OSError as exc:
            logger.warning("cannot register in %s (%s); this process will not share cores with other runs",
                           self.registry, exc)
            return None

    def _apply(self, threads: int) -> None:
        if self._set_threads is None:
            import torch

            torch.set_num_threads(threads)
        else:
            self._set_threads(threads)
        self.threads = threads
