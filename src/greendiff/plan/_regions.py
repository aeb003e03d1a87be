"""Where to run: bundled cloud regions and countries ranked by the emissions of a given amount of energy.

Emissions are location-based: IT energy x the region's PUE x its yearly grid intensity. A GCP
region's carbon-free energy share (Google's hourly matched clean energy) is shown beside it, not
subtracted: it is a market-based figure, and mixing the two would rank Google by a different rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from greendiff.carbon import CLOUD_PUE, Location, Pue, cloud_table, country_table, resolve_provider, resolve_pue
from greendiff.carbon._static import TableRow, continent_table
from greendiff.errors import UserInputError
from greendiff.units import G_PER_KG

CONTINENTS = ("Africa", "Asia", "Europe", "North America", "Oceania", "South America")
INDUSTRY_PUE = Pue(1.58, "industry average 1.58 (Uptime Institute Global Data Center Survey 2023)")

_GCP_PREFIX_CONTINENT = {"africa": "Africa", "asia": "Asia", "australia": "Oceania", "europe": "Europe", "me": "Asia",
                         "northamerica": "North America", "southamerica": "South America", "us": "North America"}
_COUNTRY_ALIASES = {"usa": "USA", "south korea": "KOR", "hong kong": "HKG", "taiwan": "TWN", "china": "CHN"}


@dataclass(frozen=True)
class RegionOption:
    """One place to run, priced for the planned energy."""

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

    def to_dict(self) -> dict:
        return asdict(self)


def _iso3_of(country_name: str | None) -> str | None:
    if not country_name:
        return None
    wanted = country_name.strip().lower()
    if wanted in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[wanted]
    return next((code for code, row in country_table().items() if row.name.lower() == wanted), None)


def cloud_continent(row: TableRow) -> str:
    """Continent of a cloud region: from its country, else from a GCP region name's prefix."""
    code = _iso3_of(row.country)
    if code in continent_table():
        return continent_table()[code]
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
        return Pue(row.pue, f"{provider} PUE {row.pue:g} published with the ML CO2 Impact table")
    return Pue(INDUSTRY_PUE.value, f"no published PUE for {provider}; " + INDUSTRY_PUE.source)


def rank_regions(energy_kwh: float, providers: tuple[str, ...] = (), continent: str | None = None,
                 country_pue: Pue = INDUSTRY_PUE) -> list[RegionOption]:
    """Every bundled region and country, lowest emissions first.

    Args:
        energy_kwh: IT energy of the job.
        providers: Keep only these (``gcp``, ``aws``, ``azure``, ..., ``country``); empty keeps all.
        continent: Keep only this continent (case-insensitive, one of :data:`CONTINENTS`).
        country_pue: PUE assumed for a data centre in a country row.
    """
    if continent is not None:
        match = [c for c in CONTINENTS if c.lower() == continent.strip().lower()]
        if not match:
            raise UserInputError(f"unknown continent {continent!r}; use one of {', '.join(CONTINENTS)}")
        continent = match[0]
    known = {key.split(":", 1)[0] for key in cloud_table()} | {"country"}
    unknown = [p for p in providers if p not in known]
    if unknown:
        raise UserInputError(f"unknown provider {unknown[0]!r}; use one of {', '.join(sorted(known))}")
    options = []
    for row in cloud_table().values():
        pue = cloud_pue(row)
        options.append(RegionOption(row.key, row.key.split(":", 1)[0], row.name, cloud_continent(row),
                                    row.intensity_g_per_kwh, pue.value, pue.source,
                                    job_emissions_kg(energy_kwh, pue.value, row.intensity_g_per_kwh), row.source, row.year,
                                    row.cfe_share))
    for code, row in country_table().items():
        options.append(RegionOption(f"country:{code}", "country", row.name, continent_table().get(code, "unknown"),
                                    row.intensity_g_per_kwh, country_pue.value, country_pue.source,
                                    job_emissions_kg(energy_kwh, country_pue.value, row.intensity_g_per_kwh), row.source, row.year))
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
    """The job priced where the user runs now: ``emissions_kg``, the intensity's ``source`` and the ``pue`` used."""

    emissions_kg: float
    source: str
    pue: Pue

    def to_dict(self) -> dict:
        return {"emissions_kg": self.emissions_kg, "source": self.source, "pue": self.pue.value}


def local_cost(location: Location, pue: str | float | None, energy_kwh: float) -> LocalCost | None:
    """``energy_kwh`` priced at ``location`` by :func:`job_emissions_kg` at its mean intensity over a year (a trace
    shorter than a year: over its own span), or None when the location is unknown.

    Args:
        location: Where the user runs now.
        pue: The user's PUE (text or number; None: the provider's figure or 1.0).
        energy_kwh: IT energy of the job.
    """
    if not location.is_known:
        return None
    provider = resolve_provider(location)
    first, last = provider.coverage()
    start = first or datetime(2022, 1, 1, tzinfo=timezone.utc)
    intensity = provider.intensity(start, last or start + timedelta(days=365))
    resolved = resolve_pue(pue, location)
    return LocalCost(job_emissions_kg(energy_kwh, resolved.value, intensity.mean_g_per_kwh()), intensity.source, resolved)
