"""A run named the way a user names it: a ledger id (``12``) or a run directory. Every command that reads a
finished run (``sample``, ``eval``, ``prune``, ``report``, ``runs show``...) resolves its argument here."""

from __future__ import annotations

import re
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger, RunRecord


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


def resolve_run(ref: str | Path, ledger: Ledger) -> tuple[RunRecord, Path | None]:
    """The ledger run and run directory that ``ref`` names: a ledger id, or a run directory (its latest
    ledger run, from ``emissions.json``). One-line :class:`UserInputError` when it names neither.

    A folder named only with digits is read as a ledger id; write it ``./12`` to mean the folder.
    """
    if isinstance(ref, str) and is_ledger_id(ref):
        record = ledger.get_run(int(ref))
        return record, run_dir_of(record)
    path = Path(ref)
    emissions = path / "emissions.json"
    if path.is_dir() and emissions.is_file():
        from greendiff.train._artifacts import read_emissions_json

        ids = read_emissions_json(emissions).ledger_run_ids
        if not ids:
            raise UserInputError(f"{emissions}: names no ledger run")
        return ledger.get_run(ids[-1]), path
    if path.is_dir():
        raise UserInputError(f"{path} is not a finished run directory (no emissions.json); give a ledger id "
                             "from 'greendiff runs list'")
    raise UserInputError(f"unknown run {str(ref)!r}: give a ledger id (see 'greendiff runs list') or a run directory")


def resolve_run_dir(ref: str | Path, ledger: Ledger | None = None) -> Path:
    """The run directory ``ref`` names: a directory as given (not checked here: the job checks its contents),
    or the directory recorded with ledger run ``ref`` (``ledger`` needed then). One-line
    :class:`UserInputError` when a ledger run has no directory or it is gone."""
    if not (isinstance(ref, str) and is_ledger_id(ref)):
        return Path(ref)
    if ledger is None:
        ledger = Ledger(None)
    record = ledger.get_run(int(ref))
    run_dir = run_dir_of(record)
    if run_dir is None:
        raise UserInputError(f"ledger run {ref} ({record.name}, {record.kind}) records no run directory; give the "
                             "run directory itself")
    if not run_dir.is_dir():
        raise UserInputError(f"ledger run {ref}'s run directory {run_dir} is gone; give the run directory's "
                             "new place")
    return run_dir
