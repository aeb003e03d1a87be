"""The demo from Python: its run and the same energy priced at each comparison location."""

from __future__ import annotations

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.workflows import DemoJob, MeasurementOptions, NullProgress, run_demo
from greendiff.workflows._demo import COMPARE


class _Steps(NullProgress):
    def __init__(self) -> None:
        self.steps = []

    def on_log(self, event) -> None:
        self.steps.append(event.step)


def test_run_demo_prices_its_energy_at_each_location_by_their_intensity(tmp_path):
    ledger, bar = tmp_path / "l.sqlite", _Steps()
    outcome = run_demo(DemoJob(seconds=0.5, measurement=MeasurementOptions(country="FRA", no_gpu=True, cpu_watts=20.0,
                                                                            ledger=ledger)), bar)
    assert outcome.steps >= 1 and bar.steps == list(range(1, outcome.steps + 1))
    assert [row.label for row in outcome.comparison] == [label for label, _ in COMPARE]
    by = {row.label: row for row in outcome.comparison}
    france, india = by["France (yearly)"], by["India (yearly)"]
    # the same energy at PUE 1.0: emissions scale with the (yearly, constant) intensity
    assert india.emissions_kg / france.emissions_kg == pytest.approx(india.intensity_g_per_kwh / france.intensity_g_per_kwh)
    assert france.intensity_g_per_kwh < india.intensity_g_per_kwh
    assert outcome.summary.phases[0].name == "step" and outcome.summary.phases[0].count == outcome.steps
    (row,) = Ledger(ledger).list_runs()
    assert (row.id, row.kind, row.status) == (outcome.run_id, "demo", "completed") and outcome.ledger_path == ledger


def test_run_demo_refuses_a_duration_out_of_range_before_the_ledger(tmp_path):
    with pytest.raises(UserInputError, match=r"--seconds must be in \(0, 3600\], got 0"):
        run_demo(DemoJob(seconds=0, measurement=MeasurementOptions(ledger=tmp_path / "l.sqlite")))
    assert not (tmp_path / "l.sqlite").exists()
