"""Where the energy was used, and the data-centre overhead (PUE). Always explicit: no geolocation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from greendiff.errors import UserInputError
from greendiff.numbers import Bounds

ENV_COUNTRY = "GREENDIFF_COUNTRY"
ENV_CLOUD = "GREENDIFF_CLOUD"
ENV_GRID = "GREENDIFF_GRID"
ENV_PUE = "GREENDIFF_PUE"

#: Fleet-average PUE per cloud provider and the source of each figure.
CLOUD_PUE: dict[str, tuple[float, str]] = {
    "gcp": (1.10, "Google fleet-average PUE 1.10 (Google 2023 environmental report)"),
    "aws": (1.15, "AWS global PUE 1.15 (AWS 2023 sustainability report)"),
    "azure": (1.18, "Microsoft Azure design PUE ~1.18 (Microsoft datacenter fact sheet)"),
}
#: The cloud providers of the bundled tables (the ``PROVIDER`` of ``--cloud PROVIDER:REGION``), as people name them.
CLOUD_NAMES: dict[str, str] = {
    "gcp": "Google Cloud", "aws": "AWS", "azure": "Microsoft Azure", "ovh": "OVHcloud", "scaleway": "Scaleway",
    "coreweave": "CoreWeave", "seeweb": "Seeweb",
}
#: The PUE of a run that names none and no cloud: an on-premise machine, no facility overhead. The text is
#: data (it travels into summaries, statements and exports), so it tells no one what to type; a data centre
#: averages :data:`INDUSTRY_PUE`, which the CLI says beside it.
DEFAULT_PUE = (1.0, "default 1.0: no facility overhead counted (on-premise machine)")


@dataclass(frozen=True)
class Pue:
    """Power usage effectiveness (facility energy / IT energy) and where the figure comes from."""

    value: float
    source: str


#: The average data centre's PUE (tables/SOURCES.md): what a facility adds when its own figure is not known.
INDUSTRY_PUE = Pue(1.58, "industry average 1.58 (Uptime Institute Global Data Center Survey 2023)")


@dataclass(frozen=True)
class Location:
    """Explicit location of the hardware.

    Args:
        country: ISO 3166-1 alpha-3 code (``"FRA"``), for the yearly country table.
        cloud: ``"PROVIDER:REGION"`` (``"gcp:europe-west1"``), for the cloud-region tables and PUE.
        grid: A bundled US balancing authority (``"CISO"``) or a path to a ``timestamp,intensity`` CSV.

    When several are given, the most specific source of intensity wins: grid > cloud > country.
    """

    country: str | None = None
    cloud: str | None = None
    grid: str | None = None

    @property
    def is_known(self) -> bool:
        return any((self.country, self.cloud, self.grid))

    def describe(self) -> str:
        parts = [f"grid {self.grid}" if self.grid else "", f"cloud {self.cloud}" if self.cloud else "",
                 f"country {self.country}" if self.country else ""]
        return ", ".join(p for p in parts if p) or "unknown location"

    @property
    def cloud_provider(self) -> str | None:
        return self.cloud.split(":", 1)[0].lower() if self.cloud else None


def resolve_location(country: str | None = None, cloud: str | None = None, grid: str | None = None,
                     env: Mapping[str, str] = os.environ) -> Location:
    """CLI/config values override the ``GREENDIFF_COUNTRY`` / ``_CLOUD`` / ``_GRID`` env vars."""
    country = country or env.get(ENV_COUNTRY) or None
    cloud = cloud or env.get(ENV_CLOUD) or None
    grid = grid or env.get(ENV_GRID) or None
    if cloud is not None and (":" not in cloud or not all(cloud.split(":", 1))):
        raise UserInputError(f"--cloud must be PROVIDER:REGION, e.g. gcp:europe-west1 or aws:us-east-1; got {cloud!r}")
    return Location(country.upper() if country else None, cloud.lower() if cloud else None, grid)


def parse_positive(value: str | float, what: str, hi: float | None = None, why: str = "") -> float:
    """A finite, positive number (at most ``hi``; ``why`` says why), or a one-line
    :class:`UserInputError` naming ``what``; read by :class:`greendiff.numbers.Bounds` (ASCII digits)."""
    return Bounds(lo=0, lo_open=True, hi=hi, why=why).parse(value, what)


#: PUE is facility energy over IT energy. Surveys put the average near 1.6 and the least efficient
#: sites near 2.5-3 (Uptime Institute 2023); a value over 5 is a mistake (a percentage, a typo).
MAX_PUE = 5.0
PUE_WHY = "facility energy / IT energy: the least efficient data centres surveyed are near 3"


def pue_bounds(lo: float = 1.0, lo_open: bool = False) -> Bounds:
    """The accepted PUE values: from ``lo`` to :data:`MAX_PUE`."""
    return Bounds(lo=lo, lo_open=lo_open, hi=MAX_PUE, why=PUE_WHY)


def resolve_pue(pue: float | str | None, location: Location, env: Mapping[str, str] = os.environ) -> Pue:
    """Explicit value (CLI > env) > the cloud provider's fleet figure > 1.0, always with a source."""
    raw = pue if pue is not None else env.get(ENV_PUE)
    if raw is not None:
        what = "PUE" if pue is not None else f"PUE (env {ENV_PUE})"
        value = pue_bounds(lo=0, lo_open=True).parse(raw, what)
        if value < 1.0:
            raise UserInputError(f"{what} must be >= 1.0 (facility energy / IT energy), got {raw!r}")
        return Pue(value, "given by the user" if pue is not None else f"env {ENV_PUE}")
    provider = location.cloud_provider
    if provider in CLOUD_PUE:
        return Pue(*CLOUD_PUE[provider])
    if provider is not None:
        return Pue(DEFAULT_PUE[0], f"no published PUE for provider {provider!r}; " + DEFAULT_PUE[1])
    return Pue(*DEFAULT_PUE)


def is_default_pue(pue: Pue) -> bool:
    """Whether ``pue`` is :data:`DEFAULT_PUE`, chosen because nobody gave one (a reader may say how to give one)."""
    return pue.value == DEFAULT_PUE[0] and pue.source.endswith(DEFAULT_PUE[1])
