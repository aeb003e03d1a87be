"""The ledger: every tracked run in one SQLite database.

WAL mode and one transaction per write make concurrent writers safe (SQLite serialises them;
``busy_timeout`` makes a writer wait instead of failing) and a killed writer harmless: the
database is always readable and holds every committed sample. A run whose process died while
``running`` is reported as ``interrupted`` with what it had measured.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import platformdirs
import psutil

from greendiff.errors import UserInputError
from greendiff.ledger._records import (
    BadRecordError, RecordShapeError, RunRecord, Sample, WindowTotal, parse_run, parse_sample, parse_window,
)
from greendiff.numbers import MAX_ROW_ID as MAX_RUN_ID  # the largest id SQLite's INTEGER holds; one constant

logger = logging.getLogger(__name__)

ENV_LEDGER = "GREENDIFF_LEDGER"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted', 'diverged')),
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


def process_alive(host: str, pid: int, started_unix_s: float) -> bool:
    """Is the process that started at ``started_unix_s`` still running? (A reused pid started later; a
    process on another host cannot be checked and counts as alive.)"""
    if host != socket.gethostname():
        return True  # cannot tell from here; trust the recorded status
    try:
        return psutil.Process(pid).create_time() <= started_unix_s + 1.0
    except (psutil.Error, ValueError):
        return False


#: The ``'interrupted'`` of the ``runs.status`` CHECK's list, however the list is spaced.
_LAST_OLD_STATUS = re.compile(r"'interrupted'(?=\s*\))")


def _allow_diverged(cur: sqlite3.Cursor) -> None:
    """A ledger made before the ``diverged`` status (a training run whose losses went non-finite): widen the
    ``runs.status`` CHECK in place. Only a CHECK constraint changes and every row still satisfies it, which
    SQLite documents as safe to do through ``writable_schema`` (https://sqlite.org/lang_altertable.html,
    section 7); the schema version stays, so an older greendiff still opens the ledger. Raises
    ``sqlite3.Error`` where SQLite refuses (a build in defensive mode) or the CHECK is not recognised."""
    sql = cur.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()[0]
    widened, found = _LAST_OLD_STATUS.subn("'interrupted', 'diverged'", sql, count=1)
    if not found:
        raise sqlite3.DatabaseError("the runs.status CHECK is not one greendiff wrote")
    cookie = cur.execute("PRAGMA schema_version").fetchone()[0]
    cur.execute("PRAGMA writable_schema = ON")
    try:
        cur.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'runs'", (widened,))
        cur.execute(f"PRAGMA schema_version = {int(cookie) + 1}")
    finally:
        cur.execute("PRAGMA writable_schema = OFF")


def _takes_diverged(cur: sqlite3.Cursor) -> bool:
    """Whether ``runs.status`` accepts ``diverged``: a row tried and rolled back, so any spelling of the CHECK
    (or none) is judged by SQLite itself."""
    cur.execute("SAVEPOINT probe")
    try:
        cur.execute("INSERT INTO runs (name, kind, status, started_unix_s, heartbeat_unix_s, host, pid, "
                    "assumptions_json, devices_json) VALUES ('', '', 'diverged', 0, 0, '', 0, '{}', '[]')")
        return True
    except sqlite3.Error:  # the CHECK refuses it (or the table is not greendiff's: its readers will say so)
        return False
    finally:
        cur.execute("ROLLBACK TO probe")
        cur.execute("RELEASE probe")


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
        self.takes_diverged = True  # False: an older ledger that could not be widened (see finish_run)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open(busy_timeout_s)
        except (sqlite3.Error, OSError) as exc:
            raise UserInputError(f"cannot open the ledger at {self.path}: {exc}; set {ENV_LEDGER} to a writable file") from None

    def _open(self, busy_timeout_s: float) -> None:
        """Connect, switch to WAL and migrate. Two processes opening a new ledger at once can get SQLITE_BUSY
        at once, without the busy handler (SQLite's deadlock avoidance while the file is still in rollback
        mode, or the switch to WAL): so the whole opening is retried until ``busy_timeout_s``."""
        import time

        deadline = time.monotonic() + busy_timeout_s
        while True:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                         check_same_thread=False)
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")  # WAL: safe against process death
                self._conn.execute("PRAGMA foreign_keys = ON")
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                self._conn.close()
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

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
            elif not str(row[0]).isdecimal():
                raise sqlite3.DatabaseError(f"schema version {row[0]!r} is not a number; not a greendiff ledger?")
            elif int(row[0]) > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {row[0]} is newer than this greendiff ({SCHEMA_VERSION}); upgrade greendiff")
            if _takes_diverged(cur):
                return
        try:  # an older ledger: widen its CHECK, in a transaction of its own so a refusal changes nothing
            with self._transaction() as cur:
                _allow_diverged(cur)
            with self._transaction() as cur:
                self.takes_diverged = _takes_diverged(cur)
        except sqlite3.Error as exc:
            self.takes_diverged = False
            logger.info("ledger %s: the runs.status CHECK cannot take 'diverged' (%s); diverged runs are recorded "
                        "as failed with a 'diverged: ...' stop reason", self.path, exc)

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
        """Close a run. On an older ledger whose status column cannot take ``diverged``, such a run is
        ``failed`` with the stop reason ``diverged: ...``."""
        if status == "diverged" and not self.takes_diverged:
            status = "failed"
            if isinstance(summary, dict):
                summary = {**summary, "stop_reason": f"diverged: {summary.get('stop_reason') or 'non-finite training'}"}
        with self._transaction() as cur:
            cur.execute("UPDATE runs SET status = ?, ended_unix_s = ?, summary_json = ?, exit_code = ? WHERE id = ?",
                        (status, time.time(), json.dumps(summary), exit_code, run_id))

    # -- reads ----------------------------------------------------------------------------------
    # Every row goes through the parsers of ``_records``: a row another tool or an older version wrote
    # badly is named (its run id) and skipped or worked around, never a traceback for the whole ledger.

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise UserInputError(f"cannot read the ledger at {self.path}: {exc}") from None

    def _record(self, row: tuple) -> RunRecord:
        record = parse_run(row)
        if record.status == "running" and not process_alive(record.host, record.pid, record.started_unix_s):
            record = dataclasses.replace(record, status="interrupted")
        return record

    _COLUMNS = ("id, name, kind, status, started_unix_s, ended_unix_s, heartbeat_unix_s, host, pid, command, "
                "exit_code, assumptions_json, devices_json, summary_json")

    def get_run(self, run_id: int) -> RunRecord:
        """One run; a one-line error for an id that is out of range, absent or names an unreadable row."""
        if isinstance(run_id, bool) or not isinstance(run_id, int) or not 1 <= run_id <= MAX_RUN_ID:
            raise UserInputError(f"run id must be a whole number from 1 to {MAX_RUN_ID}, got {run_id!r}; "
                                 "see 'greendiff runs list'")
        rows = self._rows(f"SELECT {self._COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise UserInputError(f"no run with id {run_id} in the ledger at {self.path}; see 'greendiff runs list'")
        return self._record(rows[0])

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """The newest ``limit`` runs (all when ``None``), newest first. A row that cannot be read is
        skipped with one warning naming it."""
        limit = -1 if limit is None or limit > MAX_RUN_ID else limit
        records = []
        for row in self._rows(f"SELECT {self._COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,)):
            try:
                records.append(self._record(row))
            except BadRecordError as exc:
                logger.warning("%s; skipped", exc)
        return records

    def samples(self, run_id: int, problems: list[str] | None = None) -> list[Sample]:
        """The run's samples in time order. Unreadable ones are skipped and counted: into ``problems``
        when given, else as one warning."""
        rows = self._rows("SELECT unix_s, cpu_time_s, energy_json FROM samples WHERE run_id = ? ORDER BY unix_s",
                          (run_id,))
        return self._parsed(rows, parse_sample, run_id, "sample", problems)

    def windows(self, run_id: int, problems: list[str] | None = None) -> list[WindowTotal]:
        """The run's phase totals by name (unreadable ones skipped and counted, as :meth:`samples`)."""
        rows = self._rows("SELECT name, count, duration_s, energy_json FROM windows WHERE run_id = ? ORDER BY name",
                          (run_id,))
        return self._parsed(rows, parse_window, run_id, "phase total", problems)

    @staticmethod
    def _parsed(rows: list[tuple], parse, run_id: int, what: str, problems: list[str] | None) -> list:
        out, bad = [], []
        for row in rows:
            try:
                out.append(parse(row))
            except RecordShapeError as exc:
                bad.append(str(exc))
        if bad:
            message = f"{len(bad)} of {len(rows)} {what}s unreadable and skipped (first: {bad[0]})"
            if problems is None:
                logger.warning("ledger run %s: %s", run_id, message)
            else:
                problems.append(message)
        return out

    def count_samples(self, run_id: int) -> int:
        return self._rows("SELECT COUNT(*) FROM samples WHERE run_id = ?", (run_id,))[0][0]
