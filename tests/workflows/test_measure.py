"""Measuring a command from Python: its exit code, status and ledger run."""

from __future__ import annotations

import sys

import pytest

from greendiff.ledger import Ledger
from greendiff.tracking import CommandError
from greendiff.workflows import MeasureJob, MeasurementOptions, run_measure


def _options(ledger) -> MeasurementOptions:
    return MeasurementOptions(country="FRA", no_gpu=True, cpu_watts=20.0, ledger=ledger)


def test_run_measure_returns_the_command_s_exit_code_and_closes_its_run_failed(tmp_path):
    ledger = tmp_path / "l.sqlite"
    outcome = run_measure(MeasureJob([sys.executable, "-c", "import sys; sys.exit(3)"], name="job", sample_interval_s=0.1,
                                     measurement=_options(ledger)))
    assert (outcome.exit_code, outcome.status) == (3, "failed")
    assert outcome.summary.status == "failed" and outcome.summary.name == "job"
    (row,) = Ledger(ledger).list_runs()
    assert (row.id, row.kind, row.status, row.exit_code) == (outcome.run_id, "measure", "failed", 3)


def test_run_measure_prices_a_completed_command(tmp_path):
    busy = "import time\nend=time.process_time()+0.2\nwhile time.process_time()<end: pass"
    outcome = run_measure(MeasureJob([sys.executable, "-c", busy], measurement=_options(tmp_path / "l.sqlite")))
    assert (outcome.exit_code, outcome.status) == (0, "completed")
    assert outcome.summary.cpu_time_s >= 0.18 and outcome.summary.energy_j > 0 and outcome.summary.emissions_kg > 0


def test_run_measure_of_a_missing_program_opens_no_ledger_run(tmp_path):
    with pytest.raises(CommandError) as caught:
        run_measure(MeasureJob([str(tmp_path / "no-such-program")], measurement=_options(tmp_path / "l.sqlite")))
    assert caught.value.exit_code == 127 and not (tmp_path / "l.sqlite").exists()
