"""Choose the intensity provider for a location: one decision, recorded."""

from __future__ import annotations

import os
from collections.abc import Mapping

from greendiff.carbon._intensity import IntensityProvider
from greendiff.carbon._live import (
    ELECTRICITYMAPS_BASE_URL,
    ENV_ELECTRICITYMAPS_TOKEN,
    UK_BASE_URL,
    ElectricityMapsProvider,
    UkCarbonIntensityProvider,
)
from greendiff.carbon._location import Location
from greendiff.carbon._secrets import read_token
from greendiff.carbon._static import WorldAverageProvider, cloud_provider, country_provider
from greendiff.carbon._trace import TraceProvider, load_trace
from greendiff.errors import UserInputError
from greendiff.numbers import Bounds

LIVE_CHOICES = ("none", "uk", "electricitymaps")
ENV_API_TIMEOUT = "GREENDIFF_API_TIMEOUT_S"
DEFAULT_API_TIMEOUT_S = 5.0
#: Longer than 10 minutes per request would stall a run's start (a fallback is always there).
API_TIMEOUT_S = Bounds(lo=0, lo_open=True, hi=600, phrase="seconds in (0, 600]")


def api_timeout_s(env: Mapping[str, str] = os.environ) -> float:
    """Per-request timeout of the live APIs: ``$GREENDIFF_API_TIMEOUT_S`` (read by :data:`API_TIMEOUT_S`,
    the one number grammar) or 5 s."""
    text = env.get(ENV_API_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_API_TIMEOUT_S
    return API_TIMEOUT_S.parse(text, ENV_API_TIMEOUT)


def resolve_provider(location: Location, live: str = "none", zone: str | None = None,
                     timeout_s: float | None = None, env: Mapping[str, str] = os.environ) -> IntensityProvider:
    """Grid trace > cloud region > country table > world average; a live API in front if asked.

    Args:
        location: Where the hardware is.
        live: ``"uk"`` (GB only), ``"electricitymaps"`` (zone and token needed) or ``"none"``.
        zone: Electricity Maps zone key (``"FR"``, ``"US-CAL-CISO"``).
        timeout_s: Per-request timeout of a live API (default :func:`api_timeout_s`).
    """
    if live not in LIVE_CHOICES:
        raise UserInputError(f"--live must be one of {', '.join(LIVE_CHOICES)}, got {live!r}")
    timeout_s = api_timeout_s(env) if timeout_s is None else timeout_s
    if location.grid:
        static: IntensityProvider = TraceProvider(load_trace(location.grid))
    elif location.cloud:
        static = cloud_provider(location.cloud)
    elif location.country:
        static = country_provider(location.country)
    else:
        static = WorldAverageProvider()
    if live == "uk":
        if location.country not in (None, "GBR"):
            raise UserInputError(f"--live uk covers Great Britain only; the location is {location.describe()}")
        fallback = static if location.is_known else country_provider("GBR")
        return UkCarbonIntensityProvider(fallback, env.get("GREENDIFF_UK_API_URL", UK_BASE_URL), timeout_s)
    if live == "electricitymaps":
        if not zone:
            raise UserInputError("--live electricitymaps needs --zone (an Electricity Maps zone key such as FR)")
        token = read_token("electricitymaps", ENV_ELECTRICITYMAPS_TOKEN, env)
        return ElectricityMapsProvider(zone, static, env.get("GREENDIFF_ELECTRICITYMAPS_URL", ELECTRICITYMAPS_BASE_URL),
                                       token=token or "", timeout_s=timeout_s)
    return static
