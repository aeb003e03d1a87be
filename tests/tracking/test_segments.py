"""``combine_segments``: a resumed run's segments as one run (totals, devices and phases summed by key)."""

from __future__ import annotations

import pytest

from greendiff.tracking import RunSummary, combine_segments, run_name
from tests.ledger.summaries import COUNTRY, resumed_ledger


def test_segments_combine_into_the_whole_run(tmp_path):
    ledger, _ = resumed_ledger(tmp_path)
    first, second = (RunSummary.from_dict(ledger.get_run(i).summary) for i in (2, 3))
    whole = combine_segments([first, second])
    assert (whole.name, whole.run_id, whole.started) == ("intr", 3, first.started)
    assert whole.energy_kwh == pytest.approx(0.75) and whole.emissions_kg == pytest.approx(0.042)
    assert (whole.energy_kwh_low, whole.energy_kwh_high) == pytest.approx((0.675, 0.825))
    assert whole.duration_s == 8100.0 and whole.cpu_time_s == 7500.0
    assert {d.key: d.energy_kwh for d in whole.devices} == pytest.approx(
        {d["key"]: d["energy_kwh"] * 1.5 for d in COUNTRY["devices"]})
    assert [(p.name, p.count, p.energy_j) for p in whole.phases] == [("train", 150, 2.43e6), ("eval", 1, 0.09e6)]
    assert whole.notes == ("cpu estimated", "resumed from step 28")
    assert whole.intensity.mean_g_per_kwh == pytest.approx(56.0)
    assert whole.extra["ledger_run_ids"] == [2, 3] and "prior_energy_kwh" not in whole.extra
    assert combine_segments([second]) is second and run_name("intr (resumed)") == "intr"
