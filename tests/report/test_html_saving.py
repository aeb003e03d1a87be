"""The report's carbon-aware saving (issue 20: a run that never paused showed "saved 0.00000182 mg (0.0%)")."""

from __future__ import annotations

from greendiff.report._html import _carbon_aware_saving


def test_a_run_that_never_paused_reports_no_carbon_aware_saving_whatever_rounding_left():
    assert _carbon_aware_saving({"pauses": 0, "saved_g": 1.82e-9, "saved_frac": 1e-12}) == "none: no pause, the run went straight through"


def test_a_paused_run_reports_its_carbon_aware_saving_in_fixed_point_with_its_share():
    assert _carbon_aware_saving({"pauses": 2, "saved_g": 12.5, "saved_frac": 0.1234}) == "12.5 g (12.3 %)"
    assert "e-" not in _carbon_aware_saving({"pauses": 1, "saved_g": 1.82e-9, "saved_frac": 1.5e-7})
