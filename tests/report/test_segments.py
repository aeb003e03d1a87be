"""``report``'s view of a resumed run: a run directory is the whole run, a ledger id one segment."""

from __future__ import annotations

import pytest

from greendiff.report import build_report, collect, run_segments
from tests.ledger.summaries import resumed_ledger


def test_a_report_of_a_run_directory_covers_every_segment(tmp_path):
    ledger, run_dir = resumed_ledger(tmp_path)
    whole = collect(str(run_dir), ledger)
    assert whole.label == "#2+3 intr" and whole.ledger_ids == (2, 3)
    assert whole.summary.energy_kwh == pytest.approx(0.75) and whole.summary.duration_s == 8100.0
    assert sum(len(points) for points in whole.power_w.values()) == 4 * 2  # one interval per device and segment
    page = build_report([whole], whole, "fid", "t")
    assert "2 segments (ledger runs 2, 3)" in page and "This run (intr, in 2 segments: ledger runs 2 and 3)" in page
    one = collect("3", ledger)
    assert one.ledger_ids == (3,) and one.summary.energy_kwh == pytest.approx(0.25)
    assert "is one segment of the run in" in run_segments("3", ledger).note()
