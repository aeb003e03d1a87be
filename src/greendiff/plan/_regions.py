"""Where to run: bundled cloud regions and countries ranked by the emissions of a given amount of energy.

One basis for every row: location-based emissions, IT energy x PUE x the yearly intensity of the grid the
place sits on (:func:`greendiff.carbon.cloud_table`): Google's own 2024 figures for GCP regions, the 2022 mean of
the bundled US balancing authority a US region is in (``grid PJM``), else the country's Our World in Data / Ember
row, with its year, for every other cloud region and for each country.
A GCP region's carbon-free energy share (Google's hourly matched clean energy) is shown beside it, not
subtracted, and no market-based claim ("100 % carbon-free") prices a row. A country row is your own hardware
moved there, so it is priced at your PUE: the place you run now, priced by the same rule, compares at 0 %.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from greendiff.carbon import (
    CLOUD_PUE, INDUSTRY_PUE, Location, Pue, TableRow, cloud_table, continent_table, country_table, resolve_provider,
    resolve_pue, unsourced_cloud_regions,
)
from greendiff.display import fixed_point
from greendiff.errors import UserInputError
from greendiff.units import G_PER_KG

CONTINENTS = ("Africa", "Asia", "Europe", "North America", "Oceania", "South America")

_GCP_PREFIX_CONTINENT = {"africa": "Africa", "asia": "Asia", "australia": "Oceania", "europe": "Europe", "me": "Asia",
                         "northamerica": "North America", "southamerica": "South America", "us": "North America"}


@dataclass(frozen=True)
class RegionOption:
    """One place to run, priced for the planned energy.

    ``grid_figure`` says whose figure prices the row (the table row's ``basis``): ``"GCP"`` (Google's 2024 region
    data), ``"grid PJM"`` (a US balancing authority's 2022 mean) or the ISO-3 code of the country-table row of the
    grid it sits on; ``year`` is that figure's year and ``source`` cites it.
    """

    key: str  # "gcp:europe-north1" or "country:FRA"
    provider: str  # "gcp", "aws", "azure", ... or "country"
    name: str
    continent: str
    intensity_g_per_kwh: float
    pue: float
    pue_source: str
    emissions_kg: float
    source: str
    year: int | None = None
    cfe_share: float | None = None
    grid_figure: str = ""

    @property
    def data(self) -> str:
        """Whose figure and its year, in a few characters: ``"GCP 2024"``, ``"grid BPAT 2022"``, ``"GBR 2023"``."""
        return f"{self.grid_figure} {self.year}" if self.year is not None else self.grid_figure

    def to_dict(self) -> dict:
        return asdict(self)


def cloud_continent(row: TableRow) -> str:
    """Continent of a cloud region: from its country, else from a GCP region name's prefix."""
    if row.country in continent_table():
        return continent_table()[row.country]
    provider, region = row.key.split(":", 1)
    if provider == "gcp":
        return _GCP_PREFIX_CONTINENT.get(region.split("-", 1)[0], "unknown")
    return "unknown"


def cloud_pue(row: TableRow) -> Pue:
    """The provider's fleet PUE; else the row's own published PUE; else the industry average."""
    provider = row.key.split(":", 1)[0]
    if provider in CLOUD_PUE:
        return Pue(*CLOUD_PUE[provider])
    if row.pue:
        return Pue(row.pue, f"{provider} PUE {fixed_point(row.pue)} published with the ML CO2 Impact table")
    return Pue(INDUSTRY_PUE.value, f"no published PUE for {provider}; " + INDUSTRY_PUE.source)


def _checked_filters(providers: tuple[str, ...], continent: str | None) -> str | None:
    """``continent`` in its table spelling; a one-line error for an unknown continent or provider."""
    if continent is not None:
        match = [c for c in CONTINENTS if c.lower() == continent.strip().lower()]
        if not match:
            raise UserInputError(f"unknown continent {continent!r}; use one of {', '.join(CONTINENTS)}")
        continent = match[0]
    known = {key.split(":", 1)[0] for key in (*cloud_table(), *unsourced_cloud_regions())} | {"country"}
    unknown = [p for p in providers if p not in known]
    if unknown:
        raise UserInputError(f"unknown provider {unknown[0]!r}; use one of {', '.join(sorted(known))}")
    return continent


def rank_regions(energy_kwh: float, providers: tuple[str, ...] = (), continent: str | None = None,
                 country_pue: Pue | None = None) -> list[RegionOption]:
    """Every bundled region and country with a citable grid figure, lowest emissions first (cleaner grids first:
    the year of a figure never ranks a row). Cloud regions no figure prices
    (:func:`greendiff.carbon.unsourced_cloud_regions`) are left out.

    Args:
        energy_kwh: IT energy of the job.
        providers: Keep only these (``gcp``, ``aws``, ``azure``, ..., ``country``); empty keeps all.
        continent: Keep only this continent (case-insensitive, one of :data:`CONTINENTS`).
        country_pue: The PUE of a country row: your own hardware moved there, so your PUE (None: the on-premise
            default 1.0, as for a location given without ``--pue``).
    """
    continent = _checked_filters(providers, continent)
    country_pue = country_pue or resolve_pue(None, Location(), env={})
    options = []
    for row in cloud_table().values():
        pue = cloud_pue(row)
        options.append(RegionOption(row.key, row.key.split(":", 1)[0], row.name, cloud_continent(row),
                                    row.intensity_g_per_kwh, pue.value, pue.source,
                                    job_emissions_kg(energy_kwh, pue.value, row.intensity_g_per_kwh), row.source, row.year,
                                    row.cfe_share, row.basis))
    for code, row in country_table().items():
        options.append(RegionOption(f"country:{code}", "country", row.name, continent_table().get(code, "unknown"),
                                    row.intensity_g_per_kwh, country_pue.value, country_pue.source,
                                    job_emissions_kg(energy_kwh, country_pue.value, row.intensity_g_per_kwh), row.source,
                                    row.year, None, row.basis))
    kept = [o for o in options if (not providers or o.provider in providers) and (continent is None or o.continent == continent)]
    return sorted(kept, key=lambda o: (o.emissions_kg, o.key))


def job_emissions_kg(energy_kwh: float, pue: float, intensity_g_per_kwh: float) -> float:
    """Location-based emissions (kg CO2e) of ``energy_kwh`` of IT energy at a PUE and a mean grid intensity
    (g/kWh): the one rule every place in the ranking, and the user's own location, is priced by.

    Example:
        >>> job_emissions_kg(10.0, 1.5, 200.0)
        3.0
    """
    return energy_kwh * pue * intensity_g_per_kwh / G_PER_KG


@dataclass(frozen=True)
class LocalCost:
    """The job priced where the user runs now, by the ranking's rule: ``emissions_kg``, the mean
    ``intensity_g_per_kwh`` and its ``year``, the intensity's ``source`` and the ``pue`` used."""

    emissions_kg: float
    source: str
    pue: Pue
    intensity_g_per_kwh: float = 0.0
    year: int | None = None

    def to_dict(self) -> dict:
        return {"emissions_kg": self.emissions_kg, "intensity_g_per_kwh": self.intensity_g_per_kwh, "year": self.year,
                "source": self.source, "pue": self.pue.value, "pue_source": self.pue.source}


def local_cost(location: Location, pue: Pue, energy_kwh: float) -> LocalCost | None:
    """``energy_kwh`` priced at ``location`` by :func:`job_emissions_kg` at its mean intensity over a year (a trace
    shorter than a year: over its own span), or None when the location is unknown.

    Args:
        location: Where the user runs now.
        pue: The user's PUE (:func:`greendiff.carbon.resolve_pue`), the one country rows are priced at too.
        energy_kwh: IT energy of the job.
    """
    if not location.is_known:
        return None
    provider = resolve_provider(location)
    first, last = provider.coverage()
    start = first or datetime(2022, 1, 1, tzinfo=timezone.utc)
    intensity = provider.intensity(start, last or start + timedelta(days=365))
    mean = intensity.mean_g_per_kwh()
    return LocalCost(job_emissions_kg(energy_kwh, pue.value, mean), intensity.source, pue, mean, intensity.year)
