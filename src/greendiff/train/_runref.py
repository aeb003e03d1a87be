"""A run named the way a user names it: a ledger id (``12``) or a run directory. Every command that reads a
finished run (``sample``, ``eval``, ``prune``, ``report``, ``runs show``...) resolves its argument here, the
one resolver: an id is range-checked, a ledger it opens is closed, and a number that is also a folder here
is refused as ambiguous, in one line naming both."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger, RunRecord, default_ledger_path
from greendiff.names import display_path
from greendiff.numbers import ROW_ID

#: A ref written as a number (a sign allowed, so that ``-3`` is refused as an id, not looked for as a folder).
_NUMBER = re.compile(r"\s*[+-]?[0-9]+\s*")


def run_dir_of(record: RunRecord) -> Path | None:
    """The run directory recorded with a ledger run (older runs: the one named in the command), or None."""
    recorded = record.assumptions.get("run_dir")
    if isinstance(recorded, str) and recorded and "\0" not in recorded:
        return Path(recorded)
    found = re.search(r"greendiff train \((.+)\)$", record.command)
    return Path(found.group(1)) if found else None


def is_ledger_id(ref: str) -> bool:
    """Whether ``ref`` is written as a ledger id (ASCII digits), not a path."""
    text = str(ref).strip()
    return bool(text) and text.isascii() and text.isdigit()


@contextlib.contextmanager
def _opened(ledger: Ledger | str | Path | None) -> Iterator[Ledger]:
    """``ledger`` itself when it is open; else the ledger at that path (None: ``GREENDIFF_LEDGER`` or the
    default), closed afterwards."""
    if isinstance(ledger, Ledger):
        yield ledger
        return
    opened = Ledger(ledger)
    try:
        yield opened
    finally:
        opened.close()


def _recorded(ledger: Ledger | str | Path | None, run_id: int) -> RunRecord | None:
    """Ledger run ``run_id``, or None when there is none (a ledger file that does not exist is not made)."""
    if not isinstance(ledger, Ledger):
        path = Path(ledger) if ledger is not None else default_ledger_path()
        if not path.is_file():
            return None
    try:
        with _opened(ledger) as db:
            return db.get_run(run_id)
    except UserInputError:
        return None


def ledger_id(ref: str | Path, ledger: Ledger | str | Path | None) -> int | None:
    """The ledger id ``ref`` names, or None when it names a folder.

    A number is an id (checked: ``0`` or ``-3`` is one line), unless a folder of that name is here: then it is
    that folder when the ledger has no such run, and refused as ambiguous, naming both, when it has.
    """
    if not isinstance(ref, str) or not _NUMBER.fullmatch(ref):
        return None
    text = ref.strip()
    if Path(ref).exists():
        try:
            run_id = ROW_ID.parse(text, "run id")
        except UserInputError:
            return None
        record = _recorded(ledger, run_id)
        if record is None:
            return None
        recorded = run_dir_of(record)
        other = f" or {display_path(recorded)} for the ledger run" if recorded is not None else ""
        raise UserInputError(f"{display_path(ref)} names both ledger run {run_id} ({record.name}, {record.kind}) and "
                             f"the folder {display_path(ref)} here: write ./{text} for the folder{other}")
    return ROW_ID.parse(text, "run id")


def resolve_run(ref: str | Path, ledger: Ledger | str | Path | None) -> tuple[RunRecord, Path | None]:
    """The ledger run and run directory that ``ref`` names: a ledger id (:func:`ledger_id`), or a run
    directory (its latest ledger run, from ``emissions.json``). One-line :class:`UserInputError` when it names
    neither. ``ledger``: an open :class:`Ledger`, or the path of one (None: the default), opened and closed here.
    """
    with _opened(ledger) as db:
        run_id = ledger_id(ref, db)
        if run_id is not None:
            record = db.get_run(run_id)
            return record, run_dir_of(record)
        path = Path(ref)
        emissions = path / "emissions.json"
        if path.is_dir() and emissions.is_file():
            from greendiff.train._artifacts import read_emissions_json

            ids = read_emissions_json(emissions).ledger_run_ids
            if not ids:
                raise UserInputError(f"{emissions}: names no ledger run")
            return db.get_run(ids[-1]), path
    if path.is_dir():
        raise UserInputError(f"{path} is not a finished run directory (no emissions.json); give a ledger id "
                             "from 'greendiff runs list'")
    raise UserInputError(f"unknown run {str(ref)!r}: give a ledger id (see 'greendiff runs list') or a run directory")


def resolve_run_dir(ref: str | Path, ledger: Ledger | str | Path | None = None) -> Path:
    """The run directory ``ref`` names: a directory as given (not checked here: the job checks its contents;
    the ledger is not opened), or the directory recorded with ledger run ``ref`` (:func:`ledger_id`).
    ``ledger``: an open :class:`Ledger`, or the path of one (None: the default), opened and closed here.
    One-line :class:`UserInputError` when a ledger run has no directory or it is gone."""
    run_id = ledger_id(ref, ledger)
    if run_id is None:
        return Path(ref)
    with _opened(ledger) as db:
        record = db.get_run(run_id)
    run_dir = run_dir_of(record)
    if run_dir is None:
        raise UserInputError(f"ledger run {run_id} ({record.name}, {record.kind}) records no run directory; give the "
                             "run directory itself")
    if not run_dir.is_dir():
        raise UserInputError(f"ledger run {run_id}'s run directory {run_dir} is gone; give the run directory's "
                             "new place")
    return run_dir
