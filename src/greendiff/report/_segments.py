"""Which ledger runs a reference to a run covers: a run directory means the whole run (every segment of a
resumed run, from its ``emissions.json``), a ledger id that one ledger run (and whether it is one segment of
a run with more). ``runs show``, ``runs export`` and ``report`` read runs through :func:`run_segments`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from greendiff.ledger import BadRecordError, Ledger, RunRecord
from greendiff.tracking import RunSummary, combine_segments, run_summary

logger = logging.getLogger(__name__)


def _ids_text(ids) -> str:
    return ", ".join(map(str, ids))


@dataclass(frozen=True)
class RunSegments:
    """The ledger runs a reference names, oldest first, and the segments of the whole run they belong to.

    Attributes:
        records: The ledger runs reported: every segment for a run directory, the one run for a ledger id.
        run_dir: The run directory, when known.
        run_ids: The ledger ids of all the run's segments (``emissions.json``), else those of ``records``.
    """

    records: tuple[RunRecord, ...]
    run_dir: Path | None
    run_ids: tuple[int, ...]

    @property
    def record(self) -> RunRecord:
        """The last ledger run reported (its command, status and assumptions are the run's latest)."""
        return self.records[-1]

    @property
    def ids(self) -> tuple[int, ...]:
        """The ledger ids of :attr:`records`."""
        return tuple(r.id for r in self.records)

    def summary(self, ledger: Ledger) -> RunSummary:
        """The summary of what is reported: the segments' summaries combined
        (:func:`greendiff.tracking.combine_segments`)."""
        return combine_segments([run_summary(ledger, r) for r in self.records])

    def note(self) -> str | None:
        """One line on the segments (``"2 segments (ledger runs 7, 8)"``; for one ledger run of a longer run,
        that it is one segment of it); None for a run in one segment."""
        if len(self.records) > 1:
            return f"{len(self.records)} segments (ledger runs {_ids_text(self.ids)})"
        if len(self.run_ids) > 1:
            where = f" in {self.run_dir}" if self.run_dir is not None else ""
            return (f"ledger run {self.record.id} is one segment of the run{where}, which has {len(self.run_ids)} "
                    f"(ledger runs {_ids_text(self.run_ids)}); name the run directory for the whole run")
        return None


def _segment_ids(run_dir: Path | None) -> tuple[int, ...]:
    """The ledger ids ``run_dir/emissions.json`` lists (none when there is no readable file)."""
    if run_dir is None or not (run_dir / "emissions.json").is_file():
        return ()
    from greendiff.train import read_emissions_json  # torch: imported when a run is read, not for --help

    try:
        return read_emissions_json(run_dir / "emissions.json").ledger_run_ids
    except BadRecordError as exc:
        logger.warning("%s; its run is read as ledger run alone", exc)
        return ()


def _segment_records(ledger: Ledger, ids: tuple[int, ...], last: RunRecord) -> tuple[RunRecord, ...]:
    """The ledger runs of ``ids`` before ``last``, then ``last``; one missing from this ledger (or another
    run's) is left out with a warning naming it."""
    records = []
    for run_id in ids[:ids.index(last.id)]:
        try:
            records.append(ledger.get_run(run_id))
        except Exception as exc:  # noqa: BLE001 - a missing segment narrows the total, with a warning
            logger.warning("segment ledger run %s of %s cannot be read (%s); the total leaves it out", run_id,
                           last.name, exc)
    return (*records, last)


def run_segments(ref: str | Path, ledger: Ledger) -> RunSegments:
    """The ledger runs ``ref`` names (``greendiff.train.resolve_run``): for a run directory, all the segments
    its ``emissions.json`` lists up to the latest; for a ledger id, that ledger run alone. One-line
    :class:`~greendiff.errors.UserInputError` when ``ref`` names no run."""
    from greendiff.train import is_ledger_id, resolve_run

    record, run_dir = resolve_run(ref, ledger)
    ids = _segment_ids(run_dir)
    if record.id not in ids:
        ids = ()
    by_id = is_ledger_id(str(ref)) and not Path(ref).exists()  # as resolve_run reads it: a number, no such folder
    if by_id or not ids:
        return RunSegments((record,), run_dir, ids or (record.id,))
    return RunSegments(_segment_records(ledger, ids, record), run_dir, ids)
