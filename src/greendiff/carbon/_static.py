"""Providers from the yearly tables bundled in the package (see tables/SOURCES.md)."""

from __future__ import annotations

import csv
import difflib
import functools
import json
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from greendiff.carbon._intensity import (
    WORLD_AVERAGE_G_PER_KWH,
    WORLD_AVERAGE_SOURCE,
    Intensity,
    IntensityProvider,
    constant,
)
from greendiff.carbon._trace import bundled_trace
from greendiff.errors import UserInputError

_TABLES = resources.files("greendiff.carbon") / "tables"


@dataclass(frozen=True)
class TableRow:
    """One entry of a static table: a location-based grid intensity with its year and source.

    ``basis`` says whose figure it is, in a few characters: ``"GCP"`` (Google's own region data), an ISO-3 code
    (that country's row of :func:`country_table`) or ``"grid PJM"`` (a bundled US balancing authority's mean).
    """

    key: str
    name: str
    intensity_g_per_kwh: float
    year: int | None
    source: str
    basis: str
    country: str | None = None  # ISO-3 code of the country a cloud region is in (None: not known)
    cfe_share: float | None = None  # Google's hourly carbon-free energy share (GCP 2024 rows)
    pue: float | None = None  # data-centre PUE published with the row, where there is one


@functools.cache
def country_table() -> dict[str, TableRow]:
    """ISO-3 code -> yearly grid intensity (Our World in Data / Ember; each row's own year, mostly 2022-2023)."""
    with (_TABLES / "country-energy-mix.json").open() as f:
        raw = json.load(f)
    return {
        code: TableRow(code, row.get("country_name", code), float(row["carbon_intensity"]), int(row["year"]),
                       f"Our World in Data / Ember country table: {code} ({row.get('country_name', code)}), {row['year']}",
                       code)
        for code, row in raw.items()
        if row.get("carbon_intensity") is not None
    }


@functools.cache
def continent_table() -> dict[str, str]:
    """ISO-3 code -> continent (UN M49 regions, the Americas split in two; see tables/SOURCES.md)."""
    with (_TABLES / "continents.csv").open() as f:
        return {row["iso3"]: row["continent"] for row in csv.DictReader(f)}


#: Country names of the cloud-region table that are not the country table's names. A region in Hong Kong is on
#: Hong Kong's grid, whichever country the table files it under.
_COUNTRY_ALIASES = {"usa": "USA", "south korea": "KOR", "hong kong": "HKG", "taiwan": "TWN", "china": "CHN"}


def iso3_of(place: str | None) -> str | None:
    """ISO-3 code of a country name (``"United Kingdom"`` -> ``"GBR"``), or None when there is none."""
    if not place:
        return None
    wanted = place.strip().lower()
    if wanted in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[wanted]
    return next((code for code, row in country_table().items() if row.name.lower() == wanted), None)


@dataclass(frozen=True)
class UsCloudGrid:
    """Where a US cloud region draws its power: the bundled balancing authority (``grid``, None: none bundled, so
    the USA's country row), the ``site`` and ``why`` (tables/us-cloud-grids.csv)."""

    region: str
    grid: str | None
    site: str
    why: str


@functools.cache
def us_cloud_grids() -> dict[str, UsCloudGrid]:
    """``provider:region`` -> the grid of each US cloud region outside GCP (tables/us-cloud-grids.csv)."""
    with (_TABLES / "us-cloud-grids.csv").open() as f:
        return {row["region"]: UsCloudGrid(row["region"], row["grid"] or None, row["site"], row["why"])
                for row in csv.DictReader(f)}


def _grid_row(key: str, place: str, iso3: str | None, pue: float | None) -> TableRow | None:
    """A cloud region priced from the grid it sits on, with that figure's year: the 2022 mean of the bundled
    US balancing authority it is in (:func:`us_cloud_grids`), else its country's row of :func:`country_table`
    (None: no country with a figure)."""
    grid = us_cloud_grids().get(key)
    if grid is not None and grid.grid is not None:
        trace = bundled_trace(grid.grid)
        mean = sum(trace.values_g_per_kwh) / len(trace.values_g_per_kwh)
        return TableRow(key, place, mean, trace.start.year,
                        f"{trace.source}, mean of its {len(trace.values_g_per_kwh):,} hours: the grid of {key} "
                        f"({grid.site}), in balancing authority {grid.grid}",
                        f"grid {grid.grid}", country=iso3, pue=pue)
    country = country_table().get(iso3 or "")
    if country is None:
        return None
    return TableRow(key, place, country.intensity_g_per_kwh, country.year,
                    f"{country.source}: the grid of {key} ({place})", country.basis, country=iso3, pue=pue)


@functools.cache
def _cloud_rows() -> tuple[dict[str, TableRow], dict[str, str]]:
    rows: dict[str, TableRow] = {}
    unsourced: dict[str, str] = {}
    with (_TABLES / "cloud-regions-impact.csv").open() as f:
        for row in csv.DictReader(f):
            key = f"{row['provider'].strip().lower()}:{row['region'].strip().lower()}"
            place = ", ".join(p for p in (row.get("city"), row.get("state"), row.get("country")) if p)
            iso3 = iso3_of(row.get("city")) if (row.get("city") or "").lower() == "hong kong" else iso3_of(row.get("country"))
            priced = _grid_row(key, place, iso3, float(row["PUE"]) if row.get("PUE") else None)
            if priced is None:
                unsourced[key] = f"no grid figure for {row.get('country') or 'its country'}"
            else:
                rows[key] = priced
    with (_TABLES / "gcp-region-carbon-2024.csv").open() as f:
        for row in csv.DictReader(f):
            key = f"gcp:{row['Google Cloud Region'].strip().lower()}"
            older = rows.get(key)
            unsourced.pop(key, None)
            rows[key] = TableRow(key, row["Location"], float(row["Grid carbon intensity (gCO2eq / kWh)"]), 2024,
                                 f"Google Cloud region carbon data 2024: {key} ({row['Location']}), location-based grid "
                                 f"intensity; carbon-free energy share {float(row['Google CFE']):.0%}", "GCP",
                                 country=older.country if older else None, cfe_share=float(row["Google CFE"]))
    return rows, unsourced


def cloud_table() -> dict[str, TableRow]:
    """``provider:region`` -> location-based grid intensity with its year, on one basis:

    - GCP regions: Google's own 2024 figures (grid intensity; the CFE share is kept beside it, not subtracted);
    - a US region outside GCP in one of the bundled balancing authorities (:func:`us_cloud_grids`: AWS us-west-2
      in BPAT, us-east-1 in PJM, ...): that authority's 2022 EIA-930 mean, the mean of its hourly trace;
    - every other region (AWS, Azure, OVH, Scaleway, CoreWeave, Seeweb): the grid it sits on, its country's row of
      :func:`country_table` (Our World in Data / Ember, that row's year). The ML CO2 Impact table gives the place
      and any published PUE; its own figures (undated snapshots, a "100 % carbon-free" market-based claim) are
      not used.
    """
    return _cloud_rows()[0]


def unsourced_cloud_regions() -> dict[str, str]:
    """Cloud regions of the bundled tables that no citable grid figure prices, and why (left out of
    :func:`cloud_table`)."""
    return _cloud_rows()[1]


def suggest(wanted: str, table: dict[str, TableRow], n: int = 3) -> str:
    """'did you mean ...' from close codes and names."""
    wanted_l = wanted.lower()
    by_prefix = [k for k in table if k.lower().startswith(wanted_l)]
    by_code = difflib.get_close_matches(wanted_l, [k.lower() for k in table], n=n, cutoff=0.5)
    names = {row.name.lower(): key for key, row in table.items()}
    by_name = [names[m] for m in difflib.get_close_matches(wanted_l, list(names), n=n, cutoff=0.6)]
    lower_to_key = {k.lower(): k for k in table}
    by_code_keys = [lower_to_key[c] for c in by_code]
    ordered = [*by_prefix, *by_name, *by_code_keys] if len(wanted) > 3 else [*by_prefix, *by_code_keys, *by_name]
    picks = list(dict.fromkeys(ordered))[:n]
    if not picks:
        return ""
    return "; did you mean " + ", ".join(f"{k} ({table[k].name})" for k in picks) + "?"


class TableProvider(IntensityProvider):
    """A constant yearly figure from a bundled table."""

    name = "table"

    def __init__(self, row: TableRow) -> None:
        self.row = row

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        return constant(start, end, self.row.intensity_g_per_kwh, self.row.source, "static", self.row.year)

    def describe(self) -> str:
        return self.row.source


def _provider_from(table: dict[str, TableRow], key: str, given: str, what: str, hint: str = "") -> TableProvider:
    row = table.get(key)
    if row is None:
        raise UserInputError(f"unknown {what} {given!r}{hint}{suggest(key, table)}")
    return TableProvider(row)


def country_provider(code: str) -> TableProvider:
    """Provider for an ISO-3 country code; unknown codes get close-match suggestions."""
    return _provider_from(country_table(), code.upper(), code, "country code", " (use ISO 3166-1 alpha-3)")


def cloud_provider(cloud: str) -> TableProvider:
    """Provider for ``provider:region``; unknown regions get close-match suggestions."""
    why = unsourced_cloud_regions().get(cloud.lower())
    if why is not None:
        raise UserInputError(f"cloud region {cloud!r} has no citable grid intensity ({why}); give its grid's "
                             "figures as a 'timestamp,intensity' CSV with --grid FILE.csv")
    return _provider_from(cloud_table(), cloud.lower(), cloud, "cloud region")


class WorldAverageProvider(IntensityProvider):
    """475 g/kWh with a loud note: used only when no location was given.

    The note states the fact only (it travels into summaries, statements and exports); the CLI adds how to
    give a location when it shows it.
    """

    name = "world-average"
    NOTE = "LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x."

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        return constant(start, end, WORLD_AVERAGE_G_PER_KWH, WORLD_AVERAGE_SOURCE, "static", 2019, (self.NOTE,))

    def describe(self) -> str:
        return WORLD_AVERAGE_SOURCE
