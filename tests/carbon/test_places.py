from __future__ import annotations

import pytest

import greendiff.carbon as carbon
from greendiff.carbon import BUNDLED_GRIDS, CLOUD_NAMES, CLOUD_PUE, Location, cloud_table, country_of, place_name


def test_place_names_of_stored_locations():
    assert place_name({"country": "FRA"}) == "France"
    assert place_name({"cloud": "gcp:europe-west1", "country": "BEL"}) == "Google Cloud europe-west1 (Belgium)"
    assert place_name({"grid": "CISO"}) == "California (grid CISO), United States"
    assert place_name({"grid": "/data/my-grid.csv", "country": "DEU"}) == "the grid of intensity trace my-grid.csv, Germany"
    assert place_name({"cloud": "aws:nowhere-9"}) == "AWS nowhere-9" and place_name({}) == "" and place_name(None) == ""


def test_place_names_with_the_code_that_names_them():
    assert place_name(Location(country="DEU"), with_code=True) == "Germany (DEU)"
    assert place_name(Location(grid="ciso"), with_code=True) == "California (grid CISO), United States"
    assert place_name(Location(cloud="gcp:europe-west1"), with_code=True) == (
        "Google Cloud europe-west1 (Belgium; gcp:europe-west1)")
    assert place_name(Location(grid="/data/trace.csv"), with_code=True) == (
        "the grid of intensity trace trace.csv (/data/trace.csv)")
    assert place_name(Location(), with_code=True) == ""
    # a Location and its stored form name the same place
    for loc in (Location(country="FRA"), Location(cloud="aws:eu-west-2"), Location(grid="PJM", country="USA")):
        assert place_name(loc) == place_name({"country": loc.country, "cloud": loc.cloud, "grid": loc.grid})


def test_country_of_a_country_a_cloud_region_and_a_grid():
    assert country_of({"country": "fra"}) == ("France", "FRA")
    assert country_of({"country": "United Kingdom"}) == ("United Kingdom", "GBR")  # a name, through iso3_of
    assert country_of({"cloud": "gcp:europe-west1"}) == ("Belgium", "BEL")
    assert country_of({"grid": "CISO"}) == ("United States", "USA") and country_of({}) == ("", "")


def test_one_table_of_place_names():
    """Grid regions are the bundled grids' own table, provider names sit beside the PUE table, and every
    provider of the cloud table has a name (no second list to fall out of step)."""
    assert BUNDLED_GRIDS["PJM"] == "Mid-Atlantic" and len(BUNDLED_GRIDS) == 9
    assert set(CLOUD_PUE) <= set(CLOUD_NAMES)
    assert {key.split(":")[0] for key in cloud_table()} <= set(CLOUD_NAMES)
    from greendiff.ledger import _export

    for copy in ("_GRID_REGIONS", "_CLOUD_NAMES", "_country_codes", "place_name", "country_of"):
        assert not hasattr(_export, copy) or getattr(_export, copy) is getattr(carbon, copy, None), copy


@pytest.mark.parametrize("name", ["ENV_COUNTRY", "ENV_CLOUD", "ENV_GRID", "ENV_PUE", "unsourced_cloud_regions",
                                  "place_name", "country_of", "INDUSTRY_PUE"])
def test_names_other_packages_use_are_public(name):
    assert name in carbon.__all__ and hasattr(carbon, name)
