"""The ledger: every tracked run in one SQLite database.

WAL mode and one transaction per write make concurrent writers safe (SQLite serialises them;
``busy_timeout`` makes a writer wait instead of failing) and a killed writer harmless: the
database is always readable and holds every committed sample. A run whose process died while
``running`` is reported as ``interrupted`` with what it had measured.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import psutil

from greendiff.errors import UserInputError

ENV_LEDGER = "GREENDIFF_LEDGER"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    started_unix_s REAL NOT NULL,
    ended_unix_s REAL,
    heartbeat_unix_s REAL NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    command TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    assumptions_json TEXT NOT NULL,
    devices_json TEXT NOT NULL,
    summary_json TEXT
);
CREATE TABLE IF NOT EXISTS windows (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    count INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    energy_json TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    unix_s REAL NOT NULL,
    cpu_time_s REAL NOT NULL,
    energy_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_run ON samples (run_id, unix_s);
"""


def default_ledger_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$GREENDIFF_LEDGER`` or ``<user data dir>/greendiff/ledger.sqlite``."""
    return Path(env.get(ENV_LEDGER) or Path(platformdirs.user_data_dir("greendiff")) / "ledger.sqlite")


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``, decoded. ``status`` is the effective status (a dead writer is interrupted)."""

    id: int
    name: str
    kind: str
    status: str
    started_unix_s: float
    ended_unix_s: float | None
    heartbeat_unix_s: float
    host: str
    pid: int
    command: str
    exit_code: int | None
    assumptions: dict
    devices: list[dict]
    summary: dict | None


@dataclass(frozen=True)
class Sample:
    unix_s: float
    cpu_time_s: float
    energy_j: dict[str, float]


@dataclass(frozen=True)
class WindowTotal:
    """All windows of one name (a phase): how many, how long, how many joules per device."""

    name: str
    count: int
    duration_s: float
    energy_j: dict[str, float]


def process_alive(host: str, pid: int, started_unix_s: float) -> bool:
    """Is the process that started at ``started_unix_s`` still running? (A reused pid started later; a
    process on another host cannot be checked and counts as alive.)"""
    if host != socket.gethostname():
        return True  # cannot tell from here; trust the recorded status
    try:
        return psutil.Process(pid).create_time() <= started_unix_s + 1.0
    except (psutil.Error, ValueError):
        return False


class Ledger:
    """SQLite store of runs, phase windows and periodic samples.

    Args:
        path: Database file; default :func:`default_ledger_path`.
        busy_timeout_s: How long a writer waits for another's lock.

    Example:
        >>> import tempfile, pathlib
        >>> ledger = Ledger(pathlib.Path(tempfile.mkdtemp()) / "l.sqlite")
        >>> run_id = ledger.start_run("demo", "library", "", {}, [])
        >>> ledger.add_sample(run_id, 1.0, 0.5, {"cpu:process-tree": 2.0})
        >>> ledger.finish_run(run_id, "completed", {"energy_j": 2.0})
        >>> ledger.get_run(run_id).status
        'completed'
    """

    def __init__(self, path: Path | str | None = None, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")  # WAL: safe against process death
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise UserInputError(f"cannot open the ledger at {self.path}: {exc}; set {ENV_LEDGER} to a writable file") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as cur:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                cur.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {row[0]} is newer than this greendiff ({SCHEMA_VERSION}); upgrade greendiff")

    def close(self) -> None:
        self._conn.close()

    # -- writes ---------------------------------------------------------------------------------

    def start_run(self, name: str, kind: str, command: str, assumptions: dict, devices: list[dict],
                  started_unix_s: float | None = None) -> int:
        now = time.time() if started_unix_s is None else started_unix_s
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO runs (name, kind, status, started_unix_s, heartbeat_unix_s, host, pid, command, "
                "assumptions_json, devices_json) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (name, kind, now, now, socket.gethostname(), os.getpid(), command,
                 json.dumps(assumptions), json.dumps(devices)),
            )
            return int(cur.lastrowid)

    def add_sample(self, run_id: int, unix_s: float, cpu_time_s: float, energy_j: Mapping[str, float]) -> None:
        with self._transaction() as cur:
            cur.execute("INSERT INTO samples VALUES (?, ?, ?, ?)", (run_id, unix_s, cpu_time_s, json.dumps(dict(energy_j))))
            cur.execute("UPDATE runs SET heartbeat_unix_s = ? WHERE id = ?", (unix_s, run_id))

    def put_windows(self, run_id: int, totals: list[WindowTotal]) -> None:
        with self._transaction() as cur:
            cur.executemany(
                "INSERT INTO windows VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET "
                "count = excluded.count, duration_s = excluded.duration_s, energy_json = excluded.energy_json",
                [(run_id, w.name, w.count, w.duration_s, json.dumps(w.energy_j)) for w in totals],
            )

    def finish_run(self, run_id: int, status: str, summary: dict, exit_code: int | None = None) -> None:
        with self._transaction() as cur:
            cur.execute("UPDATE runs SET status = ?, ended_unix_s = ?, summary_json = ?, exit_code = ? WHERE id = ?",
                        (status, time.time(), json.dumps(summary), exit_code, run_id))

    # -- reads ----------------------------------------------------------------------------------

    def _record(self, row: tuple) -> RunRecord:
        (id_, name, kind, status, started, ended, heartbeat, host, pid, command, exit_code,
         assumptions, devices, summary) = row
        if status == "running" and not process_alive(host, pid, started):
            status = "interrupted"
        return RunRecord(id_, name, kind, status, started, ended, heartbeat, host, pid, command, exit_code,
                         json.loads(assumptions), json.loads(devices), json.loads(summary) if summary else None)

    _COLUMNS = ("id, name, kind, status, started_unix_s, ended_unix_s, heartbeat_unix_s, host, pid, command, "
                "exit_code, assumptions_json, devices_json, summary_json")

    def get_run(self, run_id: int) -> RunRecord:
        row = self._conn.execute(f"SELECT {self._COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserInputError(f"no run with id {run_id} in the ledger at {self.path}; see 'greendiff runs list'")
        return self._record(row)

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        rows = self._conn.execute(f"SELECT {self._COLUMNS} FROM runs ORDER BY id DESC LIMIT ?",
                                  (limit if limit is not None else -1,)).fetchall()
        return [self._record(r) for r in rows]

    def samples(self, run_id: int) -> list[Sample]:
        rows = self._conn.execute("SELECT unix_s, cpu_time_s, energy_json FROM samples WHERE run_id = ? ORDER BY unix_s",
                                  (run_id,)).fetchall()
        return [Sample(t, c, json.loads(e)) for t, c, e in rows]

    def windows(self, run_id: int) -> list[WindowTotal]:
        rows = self._conn.execute("SELECT name, count, duration_s, energy_json FROM windows WHERE run_id = ? ORDER BY name",
                                  (run_id,)).fetchall()
        return [WindowTotal(n, c, d, json.loads(e)) for n, c, d, e in rows]

    def count_samples(self, run_id: int) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM samples WHERE run_id = ?", (run_id,)).fetchone()[0]
