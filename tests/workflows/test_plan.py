"""Planning from Python: regions ranked against the user's location, and the cleanest window."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from greendiff.errors import UserInputError
from greendiff.plan import job_emissions_kg
from greendiff.workflows import RegionsJob, WindowJob, run_plan_regions, run_plan_window

T0 = datetime(2022, 6, 1, tzinfo=timezone.utc)


def test_run_plan_regions_prices_the_user_s_country_by_the_ranking_s_rule():
    outcome = run_plan_regions(RegionsJob(energy_kwh=100.0, providers=("country",), country="FRA", pue="1.2"))
    fra = next(o for o in outcome.regions if o.key == "country:FRA")
    # the same yearly intensity, priced at the user's PUE by the one rule
    assert outcome.current.emissions_kg == pytest.approx(job_emissions_kg(100.0, 1.2, fra.intensity_g_per_kwh))
    assert outcome.current.pue.value == 1.2
    assert fra.pue == 1.2 and outcome.versus(fra) == pytest.approx(0.0)  # country rows are at your PUE
    assert [o.emissions_kg for o in outcome.regions] == sorted(o.emissions_kg for o in outcome.regions)
    assert outcome.to_dict()["current"] == {"emissions_kg": outcome.current.emissions_kg, "source": outcome.current.source,
                                            "pue": 1.2, "pue_source": "given by the user",
                                            "intensity_g_per_kwh": fra.intensity_g_per_kwh, "year": fra.year}


@pytest.mark.parametrize("where, key", [({"country": "DEU"}, "country:DEU"), ({"cloud": "aws:eu-west-2"}, "aws:eu-west-2"),
                                        ({"cloud": "gcp:europe-west3"}, "gcp:europe-west3"),
                                        ({"country": "DEU", "pue": "1.4"}, "country:DEU")])
def test_the_place_you_run_compares_at_zero_percent_with_its_own_row(where, key):
    outcome = run_plan_regions(RegionsJob(energy_kwh=10.0, **where))
    row = next(o for o in outcome.regions if o.key == key)
    assert outcome.versus(row) == pytest.approx(0.0, abs=1e-12)
    assert outcome.current.year == row.year and outcome.current.intensity_g_per_kwh == row.intensity_g_per_kwh


def test_run_plan_regions_without_a_location_has_nothing_to_compare(monkeypatch):
    for name in ("GREENDIFF_COUNTRY", "GREENDIFF_CLOUD", "GREENDIFF_GRID"):
        monkeypatch.delenv(name, raising=False)
    outcome = run_plan_regions(RegionsJob(energy_kwh=1.0))
    assert outcome.current is None and outcome.versus(outcome.regions[0]) is None


def test_run_plan_regions_refuses_a_pue_below_one():
    with pytest.raises(UserInputError, match=r"PUE must be >= 1.0 \(facility energy / IT energy\), got '0.9'"):
        run_plan_regions(RegionsJob(energy_kwh=1.0, pue="0.9"))


def test_the_regions_json_says_the_basis_and_each_row_s_year_and_source():
    report = run_plan_regions(RegionsJob(energy_kwh=1.0, country="GBR")).to_dict()
    assert report["basis"] == "location-based" and report["country_pue"]["value"] == 1.0 and report["dropped"] == {}
    london = next(r for r in report["regions"] if r["key"] == "aws:eu-west-2")
    assert (london["year"], london["grid_figure"]) == (report["current"]["year"], "GBR")
    assert london["source"].startswith("Our World in Data / Ember country table: GBR (United Kingdom)")


def test_run_plan_window_finds_a_window_no_dirtier_than_now_on_an_hourly_grid():
    plan = run_plan_window(WindowJob(energy_kwh=2.0, duration_h=2.0, start=T0, deadline=T0.replace(day=2), grid="CISO"))
    assert plan.now.start == T0 and plan.job.energy_kwh == 2.0
    assert plan.interruptible.emissions_g <= plan.contiguous.emissions_g <= plan.now.emissions_g
    assert plan.contiguous.emissions_g < plan.now.emissions_g  # a June day in California has a cleaner noon


@pytest.mark.parametrize("job, message", [
    (WindowJob(1.0, 2.0, T0, T0.replace(day=2)), "give exactly one hourly series"),
    (WindowJob(1.0, 2.0, T0, T0.replace(day=2), grid="CISO", live="electricitymaps"), "only 'uk' offers a forecast"),
    (WindowJob(1.0, 30.0, T0, T0.replace(day=2), grid="CISO"), "the job needs 30.0 h but --start to --deadline is 24.0 h"),
])
def test_run_plan_window_bad_jobs_are_one_line(job, message):
    with pytest.raises(UserInputError, match=message):
        run_plan_window(job)
