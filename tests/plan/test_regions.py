from __future__ import annotations

import pytest

from greendiff.carbon import Pue, cloud_table, country_table
from greendiff.errors import UserInputError
from greendiff.plan import rank_regions
from greendiff.plan._regions import CONTINENTS


def test_ranking_is_energy_times_pue_times_intensity_lowest_first():
    options = rank_regions(10.0)
    assert len(options) == len(cloud_table()) + len(country_table())
    assert [o.emissions_kg for o in options] == sorted(o.emissions_kg for o in options)
    for o in options:
        assert o.emissions_kg == pytest.approx(10.0 * o.pue * o.intensity_g_per_kwh / 1000)
        assert o.continent in CONTINENTS, o.key


def test_provider_pue_and_gcp_2024_figures():
    by_key = {o.key: o for o in rank_regions(1.0)}
    finland = by_key["gcp:europe-north1"]
    assert finland.pue == 1.10 and finland.year == 2024 and finland.cfe_share == pytest.approx(0.98)
    assert by_key["aws:eu-west-3"].pue == 1.15 and by_key["aws:eu-west-3"].continent == "Europe"
    assert by_key["azure:westeurope"].pue == 1.18
    assert by_key["country:FRA"].pue == 1.0 and by_key["country:FRA"].continent == "Europe"  # your PUE: 1.0 by default
    assert by_key["country:FRA"].intensity_g_per_kwh == country_table()["FRA"].intensity_g_per_kwh
    assert by_key["gcp:us-central1"].continent == "North America"
    assert by_key["gcp:australia-southeast1"].continent == "Oceania"


def test_filters_by_provider_and_continent():
    europe_gcp = rank_regions(1.0, providers=("gcp",), continent="europe")
    assert europe_gcp and all(o.provider == "gcp" and o.continent == "Europe" for o in europe_gcp)
    assert {o.key for o in europe_gcp} >= {"gcp:europe-north1", "gcp:europe-west1"}
    countries = rank_regions(1.0, providers=("country",), continent="South America")
    assert {o.key for o in countries} >= {"country:BRA", "country:ARG"} and "country:FRA" not in {o.key for o in countries}
    assert rank_regions(1.0, country_pue=Pue(1.2, "x"), providers=("country",))[0].pue == 1.2


@pytest.mark.parametrize("kwargs, message", [({"continent": "Atlantis"}, "unknown continent"),
                                             ({"providers": ("ibm",)}, "unknown provider 'ibm'")])
def test_bad_filters(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        rank_regions(1.0, **kwargs)


def test_every_row_states_its_figure_s_year_and_source():
    for o in rank_regions(1.0):
        assert o.year is not None and o.source and o.data == f"{o.grid_figure} {o.year}", o.key
    by_key = {o.key: o for o in rank_regions(1.0)}
    assert by_key["aws:eu-west-2"].data == f"GBR {country_table()['GBR'].year}"
    assert by_key["gcp:europe-west2"].data == "GCP 2024" and by_key["country:DEU"].data.startswith("DEU 20")


def test_no_market_based_figure_ranks():
    options = rank_regions(1.0)
    seeweb = next(o for o in options if o.key == "seeweb:fro2")  # "100% carbon-free": 0 g in the ML CO2 Impact table
    assert seeweb.intensity_g_per_kwh == country_table()["ITA"].intensity_g_per_kwh
    assert options.index(seeweb) > 50  # no longer #2: Italy's grid is not among the cleanest
    for o in options:  # every row is a grid's location-based figure: Google's 2024 data, a US grid's or a country's
        assert o.grid_figure == "GCP" or o.grid_figure.startswith("grid ") or \
            o.intensity_g_per_kwh == country_table()[o.grid_figure].intensity_g_per_kwh


def test_plan_regions_tells_oregon_from_virginia():
    by_key = {o.key: o for o in rank_regions(1.0, providers=("aws", "azure"))}
    oregon, virginia = by_key["aws:us-west-2"], by_key["aws:us-east-1"]
    assert (oregon.data, virginia.data) == ("grid BPAT 2022", "grid PJM 2022")
    assert oregon.emissions_kg < virginia.emissions_kg / 5  # Columbia hydro against PJM's coal and gas
    assert by_key["azure:southcentralus"].data == "grid ERCO 2022"


def test_whose_figure_a_row_is_comes_from_the_table_row_s_basis(monkeypatch):
    from greendiff.carbon import _static

    row = _static.TableRow("acme:oregon-1", "Oregon", 50.0, 2022, "a grid", "grid BPAT", country="USA")
    monkeypatch.setattr(_static, "_cloud_rows", lambda: ({"acme:oregon-1": row}, {}))
    (option,) = rank_regions(1.0, providers=("acme",))
    assert (option.grid_figure, option.data) == ("grid BPAT", "grid BPAT 2022")  # not the country: no CFE share


def test_the_ranking_rewards_cleaner_grids_not_newer_data():
    by_key = {o.key: o for o in rank_regions(1.0, providers=("aws", "gcp"))}
    # London: AWS's row was 623 g (an undated snapshot), GCP's 2024 figure far lower; both now priced from data with a year
    assert by_key["aws:eu-west-2"].intensity_g_per_kwh < 400
    aws = [o for o in by_key.values() if o.provider == "aws"]
    cleanest = ["aws:eu-north-1", "aws:us-west-2", "aws:eu-west-3"]  # Sweden, Oregon's hydro (BPAT), France
    assert [o.key for o in sorted(aws, key=lambda o: o.intensity_g_per_kwh)][:3] == cleanest


def test_a_region_no_figure_prices_is_left_out_of_the_ranking(monkeypatch):
    from greendiff.carbon import _static

    rows, unsourced = _static._cloud_rows()
    monkeypatch.setattr(_static, "_cloud_rows", lambda: ({k: v for k, v in rows.items() if k != "ovh:gra"},
                                                          {**unsourced, "ovh:gra": "no grid figure"}))
    keys = {o.key for o in rank_regions(1.0)}
    assert "ovh:gra" not in keys and "ovh:bhs" in keys
