"""Cloud regions on one basis: Google's own 2024 figures for GCP, the grid each other region sits on for the rest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from greendiff.carbon import cloud_provider, cloud_table, country_table
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
            assert row.year == 2024 and "location-based" in row.source, key
        else:  # every other region: exactly its country's grid figure
            assert row.intensity_g_per_kwh == country_table()[row.country].intensity_g_per_kwh, key


def test_a_region_in_hong_kong_is_on_hong_kong_s_grid():
    assert cloud_table()["aws:ap-east-1"].country == "HKG"  # filed under China in the ML CO2 Impact table


def test_a_region_no_figure_prices_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(_static, "unsourced_cloud_regions", lambda: {"acme:moon-1": "no grid figure for the Moon"})
    with pytest.raises(UserInputError, match=r"'acme:moon-1' has no citable grid intensity \(no grid figure for the Moon\)"):
        cloud_provider("acme:moon-1")


def test_a_region_whose_country_has_no_figure_is_left_out():
    assert _static._grid_row("acme:moon-1", "Moon", "XXX", None) is None
    assert _static._grid_row("acme:paris", "Paris", "FRA", 1.3).intensity_g_per_kwh == country_table()["FRA"].intensity_g_per_kwh


def test_carbon_md_states_the_country_table_s_real_years():
    years = sorted({row.year for row in country_table().values()})
    text = (DOCS / "carbon.md").read_text()
    assert f"{years[0]}–{years[-1]}" in text, (years[0], years[-1])
    most = max(set(years), key=lambda y: sum(r.year == y for r in country_table().values()))
    assert re.search(rf"\b{most}\b", text)
