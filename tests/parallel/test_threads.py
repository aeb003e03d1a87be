"""CoreShare: each greendiff process takes its share of the cores, rebalanced as others start and end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greendiff.errors import UserInputError
from greendiff.parallel import CoreShare, thread_setting

CHILD = """
import sys, time
from pathlib import Path
from greendiff.parallel import CoreShare
folder, out, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
seen = []
with CoreShare(folder, cores=4, env={}, set_threads=seen.append, get_threads=lambda: 4, recheck_s=0) as share:
    out.write_text(str(share.threads))
    while not stop.exists():
        time.sleep(0.02)
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def share(folder: Path, env: dict | None = None, **kwargs) -> tuple[CoreShare, list[int]]:
    applied: list[int] = []
    return CoreShare(folder, cores=4, env=env or {}, set_threads=applied.append, get_threads=lambda: 4,
                     **kwargs), applied


def test_two_processes_split_the_cores_and_the_survivor_takes_them_back(tmp_path):
    folder, out, stop = tmp_path / "procs", tmp_path / "child-threads", tmp_path / "stop"
    with share(folder, recheck_s=0)[0] as mine:
        assert mine.threads == 4  # alone
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(out), str(stop)])
        try:
            deadline = time.monotonic() + 60
            while not out.exists() or not out.read_text():
                assert time.monotonic() < deadline and child.poll() is None
                time.sleep(0.05)
            assert out.read_text() == "2"  # the newcomer counted this process
            assert mine.rebalance() == 2  # and this one sees the newcomer
            assert mine.live_processes() == 2
        finally:
            stop.touch()
            child.wait(timeout=60)
        assert mine.rebalance() == 4  # its entry is gone
    assert list(folder.iterdir()) == []  # leaving removes the entry
    assert mine.threads == 4  # the original count is restored on exit


def test_an_entry_of_a_dead_process_is_not_counted_and_is_removed(tmp_path):
    folder = tmp_path / "procs"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / dead.stdout.strip()
    stale.write_text("12345.0")
    reused = folder / str(os.getppid())  # a live pid, but started at another time: a reused pid
    reused.write_text("1.0")
    with share(folder)[0] as mine:
        assert mine.threads == 4
    assert not stale.exists() and not reused.exists()


def test_rebalance_looks_at_the_registry_at_most_every_recheck_s(tmp_path):
    clock = Clock()
    folder = tmp_path / "procs"
    with share(folder, recheck_s=2.0, clock=clock)[0] as mine:
        (folder / str(os.getppid())).write_text("garbage")  # unreadable entries are skipped, not fatal
        calls = []
        mine.live_processes = lambda: calls.append(1) or 2
        clock.now = 1.0
        assert mine.rebalance() == 4 and calls == []
        clock.now = 2.5
        assert mine.rebalance() == 2 and calls


def test_overrides(tmp_path):
    fixed, applied = share(tmp_path / "a", env={"GREENDIFF_THREADS": "3"})
    with fixed:
        assert fixed.threads == 3
    assert applied == [3, 4]
    left_alone, applied = share(tmp_path / "b", env={"GREENDIFF_THREADS": "all"})
    with left_alone:
        assert left_alone.threads is None and left_alone.rebalance() is None
        assert [p.name for p in (tmp_path / "b").iterdir()] == [str(os.getpid())]  # still counted by others
    assert applied == []
    launcher, applied = share(tmp_path / "c", env={"OMP_NUM_THREADS": "1"})  # torchrun's per-process setting
    with launcher:
        assert launcher.threads is None
    assert applied == []


@pytest.mark.parametrize("raw", ["0", "-1", "two", "٣", "1.5", "99999", " 2", "2 ", " all", "  "])
def test_a_bad_thread_setting_is_one_line(raw):
    with pytest.raises(UserInputError, match="GREENDIFF_THREADS must be a number of threads") as err:
        thread_setting({"GREENDIFF_THREADS": raw})
    assert ("remove the spaces" in str(err.value)) == (raw != raw.strip()), err.value
    assert thread_setting({"GREENDIFF_THREADS": "2"}) == 2 and thread_setting({"GREENDIFF_THREADS": "ALL"}) == "all"
    assert thread_setting({}) is None and thread_setting({"GREENDIFF_THREADS": ""}) is None


def test_an_entry_being_written_or_unreadable_is_neither_counted_nor_deleted(tmp_path):
    folder = tmp_path / "procs"
    with share(folder)[0] as mine:
        empty = folder / str(os.getppid())
        empty.write_text("")  # a peer that reads mid-write must not delete a live process's entry
        assert mine.live_processes() == 1 and empty.exists()
        (folder / f".{os.getppid()}.x.tmp").write_text("1.0")  # a write in progress
        assert mine.live_processes() == 1


@pytest.mark.parametrize("attack", ["symlink", "group-writable"])
def test_a_registry_another_user_could_have_planted_is_not_used(tmp_path, attack, caplog):
    victim = tmp_path / "victim"
    victim.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (victim / dead.stdout.strip()).write_text("5.0")  # would be removed as a dead process's entry
    base = tmp_path / "greendiff-0"
    base.mkdir(mode=0o700)
    if attack == "symlink":
        (base / "processes").symlink_to(victim)
    else:
        (base / "processes").mkdir()
        (base / "processes").chmod(0o777)
    with share(base / "processes")[0] as mine:
        assert mine.threads == 4 and mine._entry is None  # no sharing, a warning, nothing touched
        assert mine.live_processes() == 1
    assert (victim / dead.stdout.strip()).read_text() == "5.0"
    assert "will not share cores" in caplog.text
