"""Cloud regions on one basis: Google's own 2024 figures for GCP, the grid each other region sits on for the rest."""

from __future__ import annotations

import csv
import re
import statistics
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import pytest

from greendiff.carbon import BUNDLED_GRIDS, bundled_trace, cloud_provider, cloud_table, country_table
from greendiff.carbon import _static
from greendiff.errors import UserInputError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_a_region_without_its_own_recent_figure_is_priced_from_its_country_s_grid_with_its_year():
    london, gbr = cloud_table()["aws:eu-west-2"], country_table()["GBR"]
    # the ML CO2 Impact table's undated 623 g is not used; GBR's Our World in Data / Ember figure is, with its year
    assert london.intensity_g_per_kwh == gbr.intensity_g_per_kwh != 623.0
    assert (london.year, london.country) == (gbr.year, "GBR") and london.year >= 2022
    assert london.source.startswith(gbr.source) and "aws:eu-west-2" in london.source
    frankfurt = cloud_table()["aws:eu-central-1"]  # a one-hour 2019 snapshot in the old table (615 g)
    assert frankfurt.intensity_g_per_kwh == country_table()["DEU"].intensity_g_per_kwh


def test_no_market_based_claim_prices_a_region():
    seeweb = cloud_table()["seeweb:fro2"]  # "100% carbon-free energy", 0 g/kWh in the ML CO2 Impact table
    assert seeweb.intensity_g_per_kwh == country_table()["ITA"].intensity_g_per_kwh > 0
    assert seeweb.pue == 1.2  # its published PUE is kept


def test_every_region_has_a_year_and_a_location_based_source():
    for key, row in cloud_table().items():
        assert row.year is not None and row.year >= 2022, key
        if key.startswith("gcp:"):
            assert row.year == 2024 and "location-based" in row.source and row.basis == "GCP", key
        elif row.basis.startswith("grid "):  # a US region in a bundled balancing authority: its 2022 mean
            trace = bundled_trace(row.basis.removeprefix("grid "))
            assert row.intensity_g_per_kwh == pytest.approx(statistics.fmean(trace.values_g_per_kwh)), key
            assert row.year == 2022 and row.country == "USA" and row.source.startswith(trace.source), key
        else:  # every other region: exactly its country's grid figure
            assert row.basis == row.country, key
            assert row.intensity_g_per_kwh == country_table()[row.country].intensity_g_per_kwh, key


def test_every_bundled_region_is_priced_none_is_left_out():
    assert _static.unsourced_cloud_regions() == {}
    assert len(cloud_table()) == 105  # 44 GCP regions (2024) + 61 others of the ML CO2 Impact table
    assert sum(key.startswith("gcp:") for key in cloud_table()) == 44


def test_us_regions_are_priced_from_the_balancing_authority_they_sit_in():
    oregon, virginia = cloud_table()["aws:us-west-2"], cloud_table()["aws:us-east-1"]
    assert (oregon.basis, virginia.basis) == ("grid BPAT", "grid PJM")
    assert oregon.intensity_g_per_kwh == pytest.approx(54.7, abs=0.05)  # Columbia hydro
    assert virginia.intensity_g_per_kwh == pytest.approx(362.6, abs=0.05)
    expected = {"azure:southcentralus": "ERCO", "azure:centralus": "MISO", "azure:eastus": "PJM", "azure:westus": "CISO",
                "aws:us-west-1": "CISO", "coreweave:ord1": "PJM"}
    assert {key: cloud_table()[key].basis for key in expected} == {k: f"grid {g}" for k, g in expected.items()}
    # a region in no bundled authority keeps the USA's country row, and says so
    quincy = cloud_table()["azure:westus2"]  # Grant County PUD, its own authority
    assert (quincy.basis, quincy.intensity_g_per_kwh) == ("USA", country_table()["USA"].intensity_g_per_kwh)


def test_a_measured_run_in_a_us_region_is_priced_as_plan_regions_prices_it():
    start, end = datetime(2025, 3, 1, tzinfo=timezone.utc), datetime(2025, 3, 2, tzinfo=timezone.utc)
    intensity = cloud_provider("aws:us-west-2").intensity(start, end)
    assert intensity.mean_g_per_kwh() == cloud_table()["aws:us-west-2"].intensity_g_per_kwh
    assert intensity.year == 2022 and "BPAT" in intensity.source


def test_every_us_region_outside_gcp_is_in_the_grid_table_with_why():
    grids = _static.us_cloud_grids()
    us = {key for key, row in cloud_table().items() if row.country == "USA" and not key.startswith("gcp:")}
    assert set(grids) == us
    for key, grid in grids.items():
        assert grid.grid is None or grid.grid in BUNDLED_GRIDS, key
        assert grid.site and grid.why, key
    with (resources.files("greendiff.carbon") / "tables" / "SOURCES.md").open() as f:
        assert "us-cloud-grids.csv" in f.read()


def test_a_region_in_hong_kong_is_on_hong_kong_s_grid():
    assert cloud_table()["aws:ap-east-1"].country == "HKG"  # filed under China in the ML CO2 Impact table


def test_a_region_no_figure_prices_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(_static, "unsourced_cloud_regions", lambda: {"acme:moon-1": "no grid figure for the Moon"})
    with pytest.raises(UserInputError, match=r"'acme:moon-1' has no citable grid intensity \(no grid figure for the Moon\); "
                                             r"give its grid's figures as a 'timestamp,intensity' CSV with --grid FILE.csv$"):
        cloud_provider("acme:moon-1")  # not "--country" of a country that has no figure either


def test_a_region_whose_country_has_no_figure_is_left_out():
    assert _static._grid_row("acme:moon-1", "Moon", "XXX", None) is None
    assert _static._grid_row("acme:paris", "Paris", "FRA", 1.3).intensity_g_per_kwh == country_table()["FRA"].intensity_g_per_kwh


def test_carbon_md_states_the_country_table_s_real_years():
    years = sorted({row.year for row in country_table().values()})
    text = (DOCS / "carbon.md").read_text()
    assert f"{years[0]}–{years[-1]}" in text, (years[0], years[-1])
    most = max(set(years), key=lambda y: sum(r.year == y for r in country_table().values()))
    assert re.search(rf"\b{most}\b", text)


def test_carbon_md_lists_every_us_region_s_grid_and_the_quebec_caveat():
    text = (DOCS / "carbon.md").read_text()
    for key, grid in _static.us_cloud_grids().items():
        assert f"`{key}`" in text, key
        if grid.grid is not None:
            row = next(line for line in text.splitlines() if f"`{key}`" in line and line.startswith("|"))
            assert row.endswith(f"| {grid.grid} | {cloud_table()[key].intensity_g_per_kwh:.0f} |"), key
    quebec = text[text.index("the Quebec regions"):]
    assert all(f"`{k}`" in quebec[:200] for k in ("aws:ca-central-1", "azure:canadaeast", "ovh:bhs"))
    assert "overstates" in quebec[:400] and "--grid my_grid.csv" in quebec[:600]
