"""Live intensity APIs, optional: UK Carbon Intensity (no key) and Electricity Maps (token).

Every call has a timeout, answers are cached on disk, and any failure (timeout, HTTP error,
malformed body, missing token) falls back to a static provider, with the reason recorded in the
result's notes. A run is never lost to a carbon API.

An answer is read only if it is small (1 MB), JSON by its content type (or none given), and strict
JSON (no NaN, Infinity or out-of-range numbers). Redirects are not followed: urllib would send
every header, the token included, to the host a redirect names. A failed request is described only
by parts that cannot hold a header value: host and path, HTTP status, and the kind of error.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import platformdirs

from greendiff.carbon._intensity import (
    MAX_PLAUSIBLE_G_PER_KWH,
    Intensity,
    IntensityProvider,
    IntensitySegment,
    as_utc,
    check_supported,
    resolution_label,
)
from greendiff.carbon._secrets import clean_token
from greendiff.display import plain_number
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "GREENDIFF_CACHE_DIR"
ENV_ELECTRICITYMAPS_TOKEN = "ELECTRICITYMAPS_API_TOKEN"
UK_BASE_URL = "https://api.carbonintensity.org.uk"
ELECTRICITYMAPS_BASE_URL = "https://api.electricitymaps.com"
ELECTRICITYMAPS_MAX_RANGE = timedelta(days=10)  # past-range limit at hourly granularity
MAX_ANSWER_BYTES = 1_000_000  # ten days of hourly points are ~2 kB; anything near this is not an answer


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
            return decode_json(path.read_bytes(), str(path))
        except (OSError, LiveDataError):
            return None

    def put(self, key: str, value: object) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._path(key), json.dumps(value))
        except OSError as exc:  # a cache that cannot be written is not an error
            logger.debug("intensity cache not written: %s", exc)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib would resend all headers, the token too, to the new location."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None  # urllib then raises HTTPError with the 3xx status


_STATUS_KINDS = {3: "a redirect, not followed", 4: "client error", 5: "server error"}


def _where(url: str) -> str:
    """Host, port and path of ``url``: no query, no user name or password."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # "http://[::1", a port that is not a number: the request fails too, with this name
        return "the API (a malformed URL)"
    return f"{parts.hostname or '?'}{port}{parts.path}"


def _failure(exc: BaseException, where: str, timeout_s: float) -> LiveDataError:
    """A message about a failed request from parts that cannot hold a header value (never ``str(exc)``)."""
    if isinstance(exc, urllib.error.HTTPError):
        return LiveDataError(f"HTTP {exc.code} from {where} ({_STATUS_KINDS.get(exc.code // 100, 'unexpected status')})")
    reason = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException) else exc
    if isinstance(reason, TimeoutError):
        return LiveDataError(f"no answer from {where} within {plain_number(timeout_s, 15)} s (timed out)")
    if isinstance(reason, socket.gaierror):
        return LiveDataError(f"no answer from {where} within {plain_number(timeout_s, 15)} s (host name not resolved)")
    if isinstance(reason, OSError) and reason.errno in errno.errorcode:
        return LiveDataError(f"no answer from {where} within {plain_number(timeout_s, 15)} s ({os.strerror(reason.errno)})")
    return LiveDataError(f"request to {where} failed ({type(reason).__name__})")


def _read_capped(response, max_bytes: int, deadline: float) -> bytes:  # noqa: ANN001 - an http.client response
    """Up to ``max_bytes`` + 1 bytes, giving up at ``deadline`` (a trickle of bytes each within the socket timeout)."""
    chunks, size = [], 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise TimeoutError
        chunk = response.read1(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def http_get_json(url: str, headers: Mapping[str, str], timeout_s: float, max_bytes: int = MAX_ANSWER_BYTES) -> object:
    """GET and decode JSON, mapping every failure to :class:`LiveDataError` (redirects are failures).

    ``timeout_s`` bounds the whole request, the body included.
    """
    where = _where(url)
    deadline = time.monotonic() + timeout_s
    try:
        request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        opener = urllib.request.build_opener(_NoRedirect)
        with opener.open(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Type")
            content_type = response.headers.get_content_type() if declared else None
            body = _read_capped(response, max_bytes, deadline)
    except Exception as exc:  # noqa: BLE001 - whatever failed, its message may hold a header value: rebuild it
        raise _failure(exc, where, timeout_s) from None
    if len(body) > max_bytes:
        raise LiveDataError(f"the answer from {where} is over {plain_number(max_bytes / 1e6)} MB; not read")
    if content_type is not None and content_type != "application/json" and not content_type.endswith("+json"):
        shown = "".join(ch for ch in content_type if ch.isascii() and (ch.isalnum() or ch in "/.+-"))[:60]
        raise LiveDataError(f"the answer from {where} is not JSON (content type {shown})")
    return decode_json(body, where)


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NotJson(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"number {text[:20]} is out of range")
    return value


def decode_json(body: bytes, where: str) -> object:
    """Strict JSON: NaN, Infinity and numbers beyond a float's range are refused, as is deep nesting."""
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite)
    except _NotJson as exc:
        raise LiveDataError(f"malformed JSON from {where}: {exc}") from None
    except RecursionError:
        raise LiveDataError(f"malformed JSON from {where}: nested too deeply") from None
    except ValueError:  # JSONDecodeError, bad UTF-8, an integer of over 4,300 digits
        raise LiveDataError(f"malformed JSON from {where}") from None


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _parse_time(text: object) -> datetime:
    """An API's ISO 8601 time (naive is UTC); a time outside 1900-2199 is a :class:`UserInputError`."""
    if not isinstance(text, str):
        raise TypeError("a time must be a string")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return check_supported(moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment,
                           "the API returned a time")


def _number(value: object) -> float:
    """A JSON number as a float; booleans, strings and the rest are the wrong shape."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("not a number")
    return float(value)  # OverflowError for an integer beyond a float's range


def _cover(points: list[tuple[datetime, float]], step: timedelta, start: datetime, end: datetime) -> tuple[IntensitySegment, ...]:
    """Piecewise-constant segments over [start, end) from (period start, value) points."""
    points = sorted(points)
    if not points:
        raise LiveDataError("the API returned no data for the requested period")
    implausible = next((v for _, v in points if not (math.isfinite(v) and 0 <= v <= MAX_PLAUSIBLE_G_PER_KWH)), None)
    if implausible is not None:
        raise LiveDataError(f"the API returned an implausible intensity {implausible:g} gCO2e/kWh "
                            f"(expected 0..{plain_number(MAX_PLAUSIBLE_G_PER_KWH, 15)})")
    ends = [t for t, _ in points[1:]] + [points[-1][0] + step]
    if not any(t0 < end and t1 > start for (t0, _), t1 in zip(points, ends)):
        raise LiveDataError(f"the API's answer ({points[0][0]:%Y-%m-%d %H:%M} to {ends[-1]:%Y-%m-%d %H:%M} UTC) "
                            "does not cover the requested period")
    segments = []
    for i, ((t0, value), t1) in enumerate(zip(points, ends)):
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
    title = "the API"  # in messages: "unexpected response shape from <title>"

    def __init__(self, fallback: IntensityProvider, base_url: str, timeout_s: float = 5.0,
                 cache: JsonCache | None = None, get_json: Callable[..., object] = http_get_json,
                 fallback_why: str = "") -> None:
        """``fallback_why``: words after "fell back to <the fallback's source>" saying why that one
        (``", the grid of zone FR"``)."""
        self.fallback = fallback
        self.fallback_why = fallback_why
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.cache = cache if cache is not None else JsonCache(default_cache_dir())
        self._get_json = get_json

    def _request(self, start: datetime, end: datetime) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    def _points(self, body: object) -> list[tuple[datetime, float]]:
        """(period start, gCO2e/kWh) points of an answer; may raise any error of a wrong shape."""
        raise NotImplementedError

    def _checked_points(self, body: object) -> list[tuple[datetime, float]]:
        try:
            return self._points(body)
        except UserInputError as exc:  # a time outside the supported years
            raise LiveDataError(str(exc)) from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError):
            raise LiveDataError(f"unexpected response shape from {self.title}") from None

    def _source(self) -> str:
        raise NotImplementedError

    def fetch(self, start: datetime, end: datetime) -> Intensity:
        """The API's answer for ``[start, end)``, with no fallback.

        Raises:
            LiveDataError: No usable answer (the message says why, without any header value).
        """
        start, end = as_utc(start), as_utc(end)
        url, headers = self._request(start, end)
        about_the_past = end < datetime.now(timezone.utc) - timedelta(days=1)
        body = self.cache.get(url, about_the_past)
        cached = body is not None
        if body is None:
            body = self._get_json(url, headers, self.timeout_s)
        segments = _cover(self._checked_points(body), self.step, start, end)
        if not cached:
            self.cache.put(url, body)
        return Intensity(segments, self._source(), "live", None, ("from cache",) if cached else (),
                         resolution_label(self.step))

    def series(self, start: datetime, end: datetime) -> Intensity:
        """:meth:`fetch`, with no fallback: a yearly fallback has no hours to choose between, so the API's failure
        is the error, said once (never "fell back" and then an error).

        Raises:
            UserInputError: The API gave no usable answer (one line, with why).
        """
        try:
            return self.fetch(start, end)
        except LiveDataError as exc:
            raise UserInputError(f"no hourly series for the window: {self.title} gave none ({exc}); "
                                 "plan on --grid NAME|FILE.csv instead") from None

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        """:meth:`fetch`, or the fallback's figure with the reason in its notes.

        The fallback is not logged as a warning here (only at debug level): a run asks for many ranges, so the
        caller that shows the intensity shows its notes, once (the tracker when a run starts, the run summary).
        """
        try:
            return self.fetch(start, end)
        except LiveDataError as exc:
            result = self.fallback.intensity(as_utc(start), as_utc(end))
            note = f"{self.name} unavailable ({exc}); fell back to {result.source}{self.fallback_why}"
            logger.debug(note)
            return dataclasses.replace(result, notes=(*result.notes, note))


class UkCarbonIntensityProvider(LiveProvider):
    """National Grid ESO Carbon Intensity API (Great Britain, half-hourly, no key).

    Uses ``actual`` intensity where published and ``forecast`` otherwise.
    """

    name = "uk-carbon-intensity"
    title = "the UK Carbon Intensity API"

    def _request(self, start: datetime, end: datetime) -> tuple[str, dict[str, str]]:
        return f"{self.base_url}/intensity/{_iso_z(start)}/{_iso_z(end)}", {}

    def _points(self, body: object) -> list[tuple[datetime, float]]:
        points = []
        for item in body["data"]:  # type: ignore[index]
            value = item["intensity"].get("actual")
            value = item["intensity"]["forecast"] if value is None else value
            points.append((_parse_time(item["from"]), _number(value)))
        return points

    def _source(self) -> str:
        return "UK Carbon Intensity API (National Grid ESO), half-hourly, Great Britain"


def check_zone(zone: str) -> str:
    """``zone`` if it can be an Electricity Maps zone key (letters, digits, dashes), else a one-line error."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", zone):
        raise UserInputError(f"--zone {zone!r}: an Electricity Maps zone key is letters, digits and dashes, "
                             "e.g. FR or US-CAL-CISO")
    return zone


class ElectricityMapsProvider(LiveProvider):
    """Electricity Maps v3 ``carbon-intensity/past-range`` for a zone; token from an env var."""

    name = "electricity-maps"
    title = "Electricity Maps"
    step = timedelta(hours=1)

    def __init__(self, zone: str, fallback: IntensityProvider, base_url: str = ELECTRICITYMAPS_BASE_URL,
                 token: str | None = None, **kwargs) -> None:
        super().__init__(fallback, base_url, **kwargs)
        self.zone = check_zone(zone)
        env_token = ENV_ELECTRICITYMAPS_TOKEN
        self.token = clean_token(token, "the token given") if token is not None else \
            clean_token(os.environ.get(env_token), f"${env_token}")

    def _request(self, start: datetime, end: datetime) -> tuple[str, dict[str, str]]:
        if not self.token:
            raise LiveDataError(f"no token in {ENV_ELECTRICITYMAPS_TOKEN}")
        if end - start > ELECTRICITYMAPS_MAX_RANGE:
            raise LiveDataError("past-range serves at most 10 days of hourly data per request")
        url = (f"{self.base_url}/v3/carbon-intensity/past-range?zone={self.zone}"
               f"&start={_iso_z(start)}&end={_iso_z(end + self.step)}")
        return url, {"auth-token": self.token}

    def _points(self, body: object) -> list[tuple[datetime, float]]:
        return [(_parse_time(item["datetime"]), _number(item["carbonIntensity"]))
                for item in body["data"]]  # type: ignore[index]

    def _source(self) -> str:
        return f"Electricity Maps API, hourly, zone {self.zone}"
