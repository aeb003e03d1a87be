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
from greendiff.errors import UserInputError

_TABLES = resources.files("greendiff.carbon") / "tables"


@dataclass(frozen=True)
class TableRow:
    """One entry of a static table."""

    key: str
    name: str
    intensity_g_per_kwh: float
    year: int | None
    source: str
    country: str | None = None  # country name (cloud rows of the ML CO2 Impact table)
    cfe_share: float | None = None  # Google's hourly carbon-free energy share (GCP 2024 rows)
    pue: float | None = None  # data-centre PUE published with the row, where there is one


@functools.cache
def country_table() -> dict[str, TableRow]:
    """ISO-3 code -> yearly grid intensity (Our World in Data / Ember)."""
    with (_TABLES / "country-energy-mix.json").open() as f:
        raw = json.load(f)
    return {
        code: TableRow(code, row.get("country_name", code), float(row["carbon_intensity"]), int(row["year"]),
                       f"Our World in Data / Ember country table: {code} ({row.get('country_name', code)}), {row['year']}")
        for code, row in raw.items()
        if row.get("carbon_intensity") is not None
    }


@functools.cache
def continent_table() -> dict[str, str]:
    """ISO-3 code -> continent (UN M49 regions, the Americas split in two; see tables/SOURCES.md)."""
    with (_TABLES / "continents.csv").open() as f:
        return {row["iso3"]: row["continent"] for row in csv.DictReader(f)}


@functools.cache
def cloud_table() -> dict[str, TableRow]:
    """``provider:region`` -> grid intensity. GCP from Google's 2024 figures, the rest from ML CO2 Impact."""
    rows: dict[str, TableRow] = {}
    with (_TABLES / "cloud-regions-impact.csv").open() as f:
        for row in csv.DictReader(f):
            key = f"{row['provider'].strip().lower()}:{row['region'].strip().lower()}"
            place = ", ".join(p for p in (row.get("city"), row.get("state"), row.get("country")) if p)
            rows[key] = TableRow(key, place, float(row["impact"]), None,
                                 f"ML CO2 Impact cloud table: {key} ({place}); original source: {row['source'].strip()}",
                                 country=row.get("country") or None, pue=float(row["PUE"]) if row.get("PUE") else None)
    with (_TABLES / "gcp-region-carbon-2024.csv").open() as f:
        for row in csv.DictReader(f):
            key = f"gcp:{row['Google Cloud Region'].strip().lower()}"
            older = rows.get(key)
            rows[key] = TableRow(key, row["Location"], float(row["Grid carbon intensity (gCO2eq / kWh)"]), 2024,
                                 f"Google Cloud region carbon data 2024: {key} ({row['Location']}), "
                                 f"carbon-free energy share {float(row['Google CFE']):.0%}",
                                 country=older.country if older else None, cfe_share=float(row["Google CFE"]))
    return rows


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
    return _provider_from(cloud_table(), cloud.lower(), cloud, "cloud region")


class WorldAverageProvider(IntensityProvider):
    """475 g/kWh with a loud note: used only when no location was given."""

    name = "world-average"
    NOTE = ("LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x. "
            "Pass --country ISO3, --cloud PROVIDER:REGION or --grid NAME.")

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        return constant(start, end, WORLD_AVERAGE_G_PER_KWH, WORLD_AVERAGE_SOURCE, "static", 2019, (self.NOTE,))

    def describe(self) -> str:
        return WORLD_AVERAGE_SOURCE
