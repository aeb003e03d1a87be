"""Grid carbon intensity and emissions accounting.

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

from greendiff.carbon._accounting import CarbonAccount, SegmentAccount, account, emissions_g, energy_between
from greendiff.carbon._intensity import (
    EARLIEST_SUPPORTED,
    LATEST_SUPPORTED,
    MAX_PLAUSIBLE_G_PER_KWH,
    WORLD_AVERAGE_G_PER_KWH,
    Intensity,
    IntensityProvider,
    IntensitySegment,
    as_utc,
    check_supported,
)
from greendiff.carbon._live import (
    ElectricityMapsProvider,
    JsonCache,
    LiveDataError,
    UkCarbonIntensityProvider,
    default_cache_dir,
)
from greendiff.carbon._location import (
    CLOUD_PUE,
    MAX_PUE,
    Location,
    Pue,
    parse_positive,
    pue_bounds,
    resolve_location,
    resolve_pue,
)
from greendiff.carbon._resolve import LIVE_CHOICES, resolve_provider
from greendiff.carbon._static import (
    TableProvider,
    WorldAverageProvider,
    cloud_provider,
    cloud_table,
    country_provider,
    country_table,
)
from greendiff.carbon._trace import (
    BUNDLED_GRIDS,
    HourlyTrace,
    TraceCoverageError,
    TraceProvider,
    bundled_trace,
    load_trace,
    parse_trace_csv,
)

__all__ = [
    "BUNDLED_GRIDS",
    "CLOUD_PUE",
    "LIVE_CHOICES",
    "WORLD_AVERAGE_G_PER_KWH",
    "CarbonAccount",
    "ElectricityMapsProvider",
    "HourlyTrace",
    "Intensity",
    "IntensityProvider",
    "IntensitySegment",
    "JsonCache",
    "LiveDataError",
    "Location",
    "Pue",
    "SegmentAccount",
    "TableProvider",
    "TraceCoverageError",
    "TraceProvider",
    "UkCarbonIntensityProvider",
    "WorldAverageProvider",
    "account",
    "as_utc",
    "check_supported",
    "EARLIEST_SUPPORTED",
    "LATEST_SUPPORTED",
    "MAX_PLAUSIBLE_G_PER_KWH",
    "bundled_trace",
    "cloud_provider",
    "cloud_table",
    "country_provider",
    "country_table",
    "default_cache_dir",
    "emissions_g",
    "energy_between",
    "load_trace",
    "parse_positive",
    "pue_bounds",
    "MAX_PUE",
    "parse_trace_csv",
    "resolve_location",
    "resolve_provider",
    "resolve_pue",
]
