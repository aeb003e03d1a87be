"""Live intensity APIs, optional: UK Carbon Intensity (no key) and Electricity Maps (token).

Every call has a timeout, answers are cached on disk, and any failure (timeout, HTTP error,
malformed body, missing token) falls back to a static provider, with the reason recorded in the
result's notes. A run is never lost to a carbon API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import platformdirs

from greendiff.carbon._intensity import MAX_PLAUSIBLE_G_PER_KWH, Intensity, IntensityProvider, IntensitySegment, as_utc

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "GREENDIFF_CACHE_DIR"
ENV_ELECTRICITYMAPS_TOKEN = "ELECTRICITYMAPS_API_TOKEN"
UK_BASE_URL = "https://api.carbonintensity.org.uk"
ELECTRICITYMAPS_BASE_URL = "https://api.electricitymaps.com"
ELECTRICITYMAPS_MAX_RANGE = timedelta(days=10)  # past-range limit at hourly granularity


class LiveDataError(RuntimeError):
    """A live provider could not produce an answer; the message says why."""


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(ENV_CACHE_DIR) or platformdirs.user_cache_dir("greendiff")) / "intensity"


class JsonCache:
    """One JSON file per request. Answers about the past are kept; recent ones expire."""

    def __init__(self, directory: Path, recent_ttl_s: float = 3600.0) -> None:
        self.directory = directory
        self.recent_ttl_s = recent_ttl_s

    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def get(self, key: str, about_the_past: bool) -> object | None:
        path = self._path(key)
        try:
            if not about_the_past and time.time() - path.stat().st_mtime > self.recent_ttl_s:
                return None
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: object) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self._path(key).with_suffix(".tmp")
            tmp.write_text(json.dumps(value))
            tmp.replace(self._path(key))
        except OSError as exc:  # a cache that cannot be written is not an error
            logger.debug("intensity cache not written: %s", exc)


def http_get_json(url: str, headers: Mapping[str, str], timeout_s: float) -> object:
    """GET and decode JSON, mapping every failure to :class:`LiveDataError`."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - https or test URL
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise LiveDataError(f"HTTP {exc.code} from {url.split('?')[0]}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LiveDataError(f"no answer from {url.split('?')[0]} within {timeout_s:g} s: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise LiveDataError(f"malformed JSON from {url.split('?')[0]}") from None


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _cover(points: list[tuple[datetime, float]], step: timedelta, start: datetime, end: datetime) -> tuple[IntensitySegment, ...]:
    """Piecewise-constant segments over [start, end) from (period start, value) points."""
    points = sorted(points)
    if not points:
        raise LiveDataError("the API returned no data for the requested period")
    implausible = next((v for _, v in points if not (math.isfinite(v) and 0 <= v <= MAX_PLAUSIBLE_G_PER_KWH)), None)
    if implausible is not None:
        raise LiveDataError(f"the API returned an implausible intensity {implausible:g} gCO2e/kWh "
                            f"(expected 0..{MAX_PLAUSIBLE_G_PER_KWH:g})")
    segments = []
    for i, (t0, value) in enumerate(points):
        t1 = points[i + 1][0] if i + 1 < len(points) else t0 + step
        lo, hi = max(t0, start), min(t1, end)
        if i == 0:
            lo = start  # the first period stands in for any earlier part of the range
        if i == len(points) - 1:
            hi = end  # and the last for any later part
        if lo < hi:
            segments.append(IntensitySegment(lo, hi, value))
    return tuple(segments)


class LiveProvider(IntensityProvider):
    """Base of the live providers: cache, timeout and recorded fallback."""

    step = timedelta(minutes=30)

    def __init__(self, fallback: IntensityProvider, base_url: str, timeout_s: float = 5.0,
                 cache: JsonCache | None = None, get_json: Callable[..., object] = http_get_json) -> None:
        self.fallback = fallback
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.cache = cache if cache is not None else JsonCache(default_cache_dir())
        self._get_json = get_json

    def _request(self, start: datetime, end: datetime) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def _points(self, body: object) -> list[tuple[datetime, float]]:
        raise NotImplementedError

    def _source(self) -> str:
        raise NotImplementedError

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        start, end = as_utc(start), as_utc(end)
        try:
            url, headers = self._request(start, end)
            about_the_past = end < datetime.now(timezone.utc) - timedelta(days=1)
            body = self.cache.get(url, about_the_past)
            cached = body is not None
            if body is None:
                body = self._get_json(url, headers, self.timeout_s)
            segments = _cover(self._points(body), self.step, start, end)
            if not cached:
                self.cache.put(url, body)
            return Intensity(segments, self._source(), "live", None, ("from cache",) if cached else ())
        except LiveDataError as exc:
            result = self.fallback.intensity(start, end)
            note = f"{self.name} unavailable ({exc}); fell back to {result.source}"
            logger.warning(note)
            return Intensity(result.segments, result.source, result.kind, result.year, (*result.notes, note))


class UkCarbonIntensityProvider(LiveProvider):
    """National Grid ESO Carbon Intensity API (Great Britain, half-hourly, no key).

    Uses ``actual`` intensity where published and ``forecast`` otherwise.
    """

    name = "uk-carbon-intensity"

    def _request(self, start: datetime, end: datetime) -> tuple[str, dict[str, str]]:
        return f"{self.base_url}/intensity/{_iso_z(start)}/{_iso_z(end)}", {}

    def _points(self, body: object) -> list[tuple[datetime, float]]:
        try:
            points = []
            for item in body["data"]:  # type: ignore[index]
                value = item["intensity"].get("actual")
                value = item["intensity"]["forecast"] if value is None else value
                points.append((_parse_time(item["from"]), float(value)))
            return points
        except (KeyError, TypeError, ValueError, AttributeError):
            raise LiveDataError("unexpected response shape from the UK Carbon Intensity API") from None

    def _source(self) -> str:
        return "UK Carbon Intensity API (National Grid ESO), half-hourly, Great Britain"


class ElectricityMapsProvider(LiveProvider):
    """Electricity Maps v3 ``carbon-intensity/past-range`` for a zone; token from an env var."""

    name = "electricity-maps"
    step = timedelta(hours=1)

    def __init__(self, zone: str, fallback: IntensityProvider, base_url: str = ELECTRICITYMAPS_BASE_URL,
                 token: str | None = None, **kwargs) -> None:
        super().__init__(fallback, base_url, **kwargs)
        self.zone = zone
        self.token = token if token is not None else os.environ.get(ENV_ELECTRICITYMAPS_TOKEN)

    def _request(self, start: datetime, end: datetime) -> tuple[str, dict[str, str]]:
        if not self.token:
            raise LiveDataError(f"no token in {ENV_ELECTRICITYMAPS_TOKEN}")
        if end - start > ELECTRICITYMAPS_MAX_RANGE:
            raise LiveDataError("past-range serves at most 10 days of hourly data per request")
        url = (f"{self.base_url}/v3/carbon-intensity/past-range?zone={self.zone}"
               f"&start={_iso_z(start)}&end={_iso_z(end + self.step)}")
        return url, {"auth-token": self.token}

    def _points(self, body: object) -> list[tuple[datetime, float]]:
        try:
            return [(_parse_time(item["datetime"]), float(item["carbonIntensity"]))
                    for item in body["data"]]  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            raise LiveDataError("unexpected response shape from Electricity Maps") from None

    def _source(self) -> str:
        return f"Electricity Maps API, hourly, zone {self.zone}"
