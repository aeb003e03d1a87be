"""Grid carbon intensity and emissions accounting: where a run is (:class:`Location`), the data-centre
overhead (:class:`Pue`), the grid's intensity over time (an :class:`IntensityProvider`: a country or cloud
region table, an hourly trace, or a live service), and :func:`account`, the one function that prices energy
(each stretch at the intensity of its hour, times the PUE).

Example:
    >>> from datetime import datetime, timezone
    >>> from greendiff.carbon import Location, resolve_provider, resolve_pue, account
    >>> loc = Location(country="FRA")
    >>> provider = resolve_provider(loc)
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    >>> samples = [(t0, 0.0), (t0 + 3600, 3.6e6)]  # 1 kWh over one hour
    >>> start, end = (datetime.fromtimestamp(t, timezone.utc) for t in (t0, t0 + 3600))
    >>> acc = account(samples, provider.intensity(start, end), resolve_pue(None, loc, env={}).value)
    >>> round(acc.emissions_g, 1)
    56.0
"""

from __future__ import annotations

from greendiff.carbon._accounting import account
from greendiff.carbon._intensity import (
    INTENSITY_KINDS,
    LATEST_SUPPORTED,
    MAX_PLAUSIBLE_G_PER_KWH,
    Intensity,
    IntensityKind,
    IntensityProvider,
    IntensitySegment,
    basis_text,
    check_supported,
    resolution_label,
)
from greendiff.carbon._live import LiveDataError, LiveProvider, default_cache_dir
from greendiff.carbon._location import (
    CLOUD_NAMES,
    CLOUD_PUE,
    DEFAULT_PUE,
    ENV_CLOUD,
    ENV_COUNTRY,
    ENV_GRID,
    ENV_PUE,
    INDUSTRY_PUE,
    Location,
    Pue,
    is_default_pue,
    parse_positive,
    pue_bounds,
    resolve_location,
    resolve_pue,
)
from greendiff.carbon._places import country_of, place_name
from greendiff.carbon._resolve import resolve_provider, zone_location
from greendiff.carbon._static import (
    TableRow,
    WorldAverageProvider,
    cloud_provider,
    cloud_table,
    continent_table,
    country_provider,
    country_table,
    unsourced_cloud_regions,
)
from greendiff.carbon._trace import BUNDLED_GRIDS, HourlyTrace, TraceProvider, bundled_trace, load_trace, parse_trace_csv

__all__ = [
    # where, and with what overhead
    "Location", "Pue", "CLOUD_NAMES", "CLOUD_PUE", "DEFAULT_PUE", "INDUSTRY_PUE", "is_default_pue", "resolve_location",
    "resolve_pue", "pue_bounds", "parse_positive", "ENV_COUNTRY", "ENV_CLOUD", "ENV_GRID", "ENV_PUE",
    # where, in words
    "place_name", "country_of",
    # the grid's intensity
    "Intensity", "IntensityKind", "INTENSITY_KINDS", "IntensityProvider", "IntensitySegment", "resolve_provider", "zone_location",
    "WorldAverageProvider", "country_provider", "country_table", "cloud_provider", "cloud_table",
    "TableRow", "continent_table",
    "unsourced_cloud_regions", "check_supported", "LATEST_SUPPORTED", "MAX_PLAUSIBLE_G_PER_KWH", "default_cache_dir",
    "LiveProvider", "LiveDataError", "resolution_label", "basis_text",
    # hourly traces
    "BUNDLED_GRIDS", "HourlyTrace", "TraceProvider", "bundled_trace", "load_trace", "parse_trace_csv",
    # pricing energy
    "account",
]
