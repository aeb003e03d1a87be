from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger, WindowTotal
from greendiff.ledger._db import SCHEMA_VERSION


def _writer(path: str, name: str, n: int) -> None:
    ledger = Ledger(path)
    run_id = ledger.start_run(name, "test", "", {}, [])
    for i in range(n):
        ledger.add_sample(run_id, float(i), 0.0, {"cpu:x": float(i)})
    ledger.finish_run(run_id, "completed", {"n": n})


def test_two_processes_writing_concurrently_lose_no_row(tmp_path):
    path = str(tmp_path / "l.sqlite")
    Ledger(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, f"w{i}", 300)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = Ledger(path)
    runs = ledger.list_runs()
    assert sorted(r.name for r in runs) == ["w0", "w1"]
    assert all(r.status == "completed" and ledger.count_samples(r.id) == 300 for r in runs)


def test_killed_writer_leaves_a_readable_ledger_and_an_interrupted_run(tmp_path):
    path = tmp_path / "l.sqlite"
    script = textwrap.dedent(f"""
        from greendiff.ledger import Ledger
        ledger = Ledger({str(path)!r})
        run_id = ledger.start_run("victim", "test", "", {{}}, [])
        i = 0
        while True:
            ledger.add_sample(run_id, float(i), 0.0, {{"cpu:x": float(i)}})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until it is mid-stream
        if path.exists():
            try:
                runs = Ledger(path).list_runs()
                if runs and Ledger(path).count_samples(runs[0].id) > 50:
                    break
            except UserInputError:
                pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ledger = Ledger(path)
    (run,) = ledger.list_runs()
    assert run.status == "interrupted" and run.summary is None
    samples = ledger.samples(run.id)
    assert len(samples) > 50
    assert [s.energy_j["cpu:x"] for s in samples] == [float(i) for i in range(len(samples))], "no torn or lost rows"
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_running_run_of_a_live_process_stays_running(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    run_id = ledger.start_run("me", "test", "", {}, [])
    assert ledger.get_run(run_id).status == "running"


def test_windows_upsert_and_schema_version(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    run_id = ledger.start_run("r", "test", "", {"a": 1}, [{"key": "cpu:x"}])
    ledger.put_windows(run_id, [WindowTotal("train", 1, 0.5, {"cpu:x": 2.0})])
    ledger.put_windows(run_id, [WindowTotal("train", 3, 1.5, {"cpu:x": 6.0}), WindowTotal("eval", 1, 0.1, {"cpu:x": 0.2})])
    assert ledger.windows(run_id) == [WindowTotal("eval", 1, 0.1, {"cpu:x": 0.2}), WindowTotal("train", 3, 1.5, {"cpu:x": 6.0})]
    conn = sqlite3.connect(ledger.path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    with pytest.raises(UserInputError, match="schema version 99 is newer"):
        Ledger(path)


@pytest.mark.parametrize("bad", ["/proc/greendiff/ledger.sqlite", "{tmp}/file/ledger.sqlite"])
def test_unwritable_ledger_path(tmp_path, bad):
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(UserInputError, match="cannot open the ledger at .*GREENDIFF_LEDGER"):
        Ledger(bad.format(tmp=tmp_path))


def test_unknown_run_id(tmp_path):
    with pytest.raises(UserInputError, match="no run with id 7"):
        Ledger(tmp_path / "l.sqlite").get_run(7)


def _older_ledger(path, schema):
    """A ledger as greendiff wrote it before the 'diverged' status, with its CHECK spelled ``schema``'s way."""
    with sqlite3.connect(path) as conn:
        conn.executescript(schema)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")


def test_an_older_ledger_whose_check_sqlite_will_not_widen_records_a_diverged_run_as_failed(tmp_path, monkeypatch):
    """SQLite in defensive mode refuses writable_schema: the ledger still opens (every command needs it), and a
    diverged run is recorded as failed with the reason, never an IntegrityError when it is closed."""
    from greendiff.ledger import _db

    path = tmp_path / "old.sqlite"
    _older_ledger(path, _db._SCHEMA.replace(", 'diverged'", ""))

    def defensive(cur):
        raise sqlite3.OperationalError("table sqlite_master may not be modified")
    monkeypatch.setattr(_db, "_allow_diverged", defensive)
    ledger = Ledger(path)
    run_id = ledger.start_run("x", "train", "", {}, [])
    ledger.finish_run(run_id, "diverged", {"stop_reason": "20 steps in a row had a non-finite loss or gradient"})
    assert ledger.get_run(run_id).status == "failed"
    with sqlite3.connect(path) as conn:
        (summary,) = conn.execute("SELECT summary_json FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert json.loads(summary)["stop_reason"] == "diverged: 20 steps in a row had a non-finite loss or gradient"
    ledger.finish_run(run_id, "completed", {})  # other statuses as ever
    assert ledger.get_run(run_id).status == "completed"


def test_an_older_ledger_with_its_check_spaced_otherwise_takes_a_diverged_run(tmp_path):
    """The CHECK as another formatting wrote it (a space before the closing parenthesis) is still widened."""
    from greendiff.ledger import _db

    path = tmp_path / "old.sqlite"
    _older_ledger(path, _db._SCHEMA.replace(", 'diverged'", "").replace("'interrupted')", "'interrupted'\n    )"))
    ledger = Ledger(path)
    run_id = ledger.start_run("x", "train", "", {}, [])
    ledger.finish_run(run_id, "diverged", {"stop_reason": "bad"})
    assert ledger.get_run(run_id).status == "diverged"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with pytest.raises(sqlite3.IntegrityError):  # still a CHECK
            conn.execute("UPDATE runs SET status = 'bogus'")
