"""CPU time and resident memory of a process tree (a process and all its descendants).

Each process's CPU time is counted in exactly one place: a live process by its own
``user + system`` plus the ``children_*`` time of descendants it has already reaped; a reaped
process through its reaper's ``children_*``. Summing those over the live tree gives a total that
only grows, except for the instant a child is dead but not yet reaped, which the monotonic clamp
covers.

The descendant list is refreshed at most every ``rescan_interval_s``. On Linux the refresh walks
only the tree itself through ``/proc/<pid>/task/<tid>/children`` (~50 µs); elsewhere psutil scans
every process of the machine (~2 ms with 60 processes). Either way a read stays cheap enough
for per-step windows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

_PROC = Path("/proc")


def _child_pids(pid: int) -> list[int] | None:
    """Direct children from ``/proc/<pid>/task/*/children``; ``None`` where the kernel has no such file."""
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return None
    children: list[int] = []
    for task in tasks:
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            if not (task / "stat").exists():
                continue  # the thread exited during the walk
            return None  # kernel built without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return children


def descendant_pids(pid: int) -> list[int] | None:
    """All descendants of ``pid`` by walking ``/proc`` children files; ``None`` if unsupported."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = _child_pids(frontier.pop())
        if children is None:
            return None
        found.extend(children)
        frontier.extend(children)
    return found


class ProcessTreeClock:
    """Cumulative CPU seconds and current RSS of the tree rooted at ``pid``.

    Args:
        pid: Root process; ``None`` for this process.
        include_children: Count descendants (DataLoader workers, a wrapped command).
        rescan_interval_s: Minimum time between two scans for new descendants.
    """

    def __init__(self, pid: int | None = None, include_children: bool = True,
                 rescan_interval_s: float = 1.0) -> None:
        self._is_self = pid is None or pid == os.getpid()
        self._root = psutil.Process(pid)
        self._include_children = include_children
        self._rescan_interval_s = rescan_interval_s
        self._children: dict[int, psutil.Process] = {}
        self._last_scan_s = float("-inf")
        self._last_cpu_s = 0.0

    def _descendants(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._last_scan_s >= self._rescan_interval_s:
            self._last_scan_s = now
            pids = descendant_pids(self._root.pid)
            if pids is None:  # no /proc children files: let psutil scan the whole process table
                try:
                    self._children = {p.pid: p for p in self._root.children(recursive=True)}
                except psutil.Error:
                    self._children = {}
            else:  # keep the Process objects we have (psutil caches their identity), add new ones
                known = self._children
                self._children = {}
                for pid in pids:
                    try:
                        self._children[pid] = known.get(pid) or psutil.Process(pid)
                    except psutil.Error:
                        continue
        return list(self._children.values())

    def _root_cpu_s(self) -> float:
        if self._is_self:  # os.times is a single syscall; psutil would read /proc
            t = os.times()
            own = t.user + t.system
            return own + (t.children_user + t.children_system if self._include_children else 0.0)
        try:
            t = self._root.cpu_times()
        except psutil.Error:
            return 0.0
        own = t.user + t.system
        return own + (t.children_user + t.children_system if self._include_children else 0.0)

    def cpu_time_s(self) -> float:
        """Total CPU seconds used by the tree since each process started (monotonic)."""
        total = self._root_cpu_s()
        if self._include_children and (self._children or time.monotonic() - self._last_scan_s >= self._rescan_interval_s):
            for child in self._descendants():
                try:
                    t = child.cpu_times()
                except psutil.Error:  # exited since the scan; its time moves to its reaper
                    continue
                total += t.user + t.system + t.children_user + t.children_system
        self._last_cpu_s = max(self._last_cpu_s, total)
        return self._last_cpu_s

    def rss_bytes(self) -> int:
        """Resident memory of the tree now (shared pages counted per process, an upper bound)."""
        procs = [self._root, *(self._descendants() if self._include_children else [])]
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total
