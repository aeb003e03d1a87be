"""Hourly intensity traces: the bundled 2022 EIA-930 files or a user CSV ``timestamp,intensity``."""

from __future__ import annotations

import bisect
import csv
import functools
import gzip
import io
import math
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

from greendiff.carbon._intensity import MAX_PLAUSIBLE_G_PER_KWH, Intensity, IntensityProvider, IntensitySegment, as_utc
from greendiff.errors import UserInputError

_HOURLY = resources.files("greendiff.carbon") / "tables" / "hourly"
BUNDLED_GRIDS = ("AZPS", "BPAT", "CISO", "ERCO", "MISO", "NYIS", "PJM", "SOCO", "WAAT")
_INTENSITY_COLUMNS = ("intensity", "avg_CI", "carbon_intensity", "intensity_g_per_kwh")


class HourlyTrace:
    """Piecewise-constant intensity: value ``i`` holds over ``[times[i], times[i] + step)``.

    Args:
        times: Strictly increasing, evenly spaced UTC datetimes.
        values_g_per_kwh: Intensity of each interval.
        source: Where the trace comes from.
    """

    def __init__(self, times: list[datetime], values_g_per_kwh: list[float], source: str) -> None:
        if not times:
            raise UserInputError(f"{source}: the trace has no rows")
        self.times = times
        self.values_g_per_kwh = values_g_per_kwh
        self.source = source
        self.step = times[1] - times[0] if len(times) > 1 else timedelta(hours=1)
        self._stamps = [t.timestamp() for t in times]

    @property
    def start(self) -> datetime:
        return self.times[0]

    @property
    def end(self) -> datetime:
        return self.times[-1] + self.step

    @property
    def covers_a_year(self) -> bool:
        return self.end - self.start >= timedelta(days=365) - self.step

    def value_at(self, moment: datetime) -> float:
        i = bisect.bisect_right(self._stamps, moment.timestamp()) - 1
        return self.values_g_per_kwh[i]

    def segments(self, start: datetime, end: datetime) -> list[IntensitySegment]:
        """Segments of ``[start, end)`` split at the trace's interval boundaries."""
        out: list[IntensitySegment] = []
        t = start
        while t < end:
            i = bisect.bisect_right(self._stamps, t.timestamp()) - 1
            boundary = min(self.times[i] + self.step, end)
            out.append(IntensitySegment(t, boundary, self.values_g_per_kwh[i]))
            t = boundary
        return out


def parse_trace_csv(lines: Iterable[str], source: str, fill_blank: bool = False) -> HourlyTrace:
    """Parse a trace; any bad row is a one-line error naming the file and line number.

    The first column is the timestamp (ISO 8601; naive times are taken as UTC, as in the EIA-930
    files); the intensity column is ``intensity`` (or ``avg_CI``, ``carbon_intensity``), in gCO2e/kWh.

    Args:
        fill_blank: Interpolate rows whose intensity is blank (the bundled EIA-930 files miss a
            few hours: CISO 3, MISO 3, PJM 23) instead of rejecting them; the count is added to
            the source. User files must be complete.
    """
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise UserInputError(f"{source}: empty file; expected a header 'timestamp,intensity'") from None
    column = next((header.index(c) for c in _INTENSITY_COLUMNS if c in header), None)
    if column is None:
        raise UserInputError(f"{source}:1: no intensity column; expected one of {', '.join(_INTENSITY_COLUMNS)} "
                             f"(header is {','.join(header)!r})")
    times: list[datetime] = []
    values: list[float] = []
    for line_no, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{source}:{line_no}"
        blank = len(row) > column and not row[column].strip()
        try:
            moment = datetime.fromisoformat(row[0].strip())
        except (ValueError, IndexError):
            raise UserInputError(f"{where}: bad timestamp {row[0] if row else ''!r}; use ISO 8601, e.g. 2022-06-01T13:00:00+00:00") from None
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        try:
            value = math.nan if (blank and fill_blank) else float(row[column])
        except (ValueError, IndexError):
            raise UserInputError(f"{where}: intensity {row[column] if len(row) > column else ''!r} is not a number") from None
        if not (blank and fill_blank) and not (math.isfinite(value) and 0 <= value <= MAX_PLAUSIBLE_G_PER_KWH):
            raise UserInputError(f"{where}: intensity must be a number from 0 to {MAX_PLAUSIBLE_G_PER_KWH:g} gCO2e/kWh, "
                                 f"got {value:g}")
        if times and moment <= times[-1]:
            raise UserInputError(f"{where}: timestamp {moment.isoformat()} is not after the previous row")
        if len(times) >= 2 and moment - times[-1] != times[1] - times[0]:
            raise UserInputError(f"{where}: gap or uneven step before {moment.isoformat()} "
                                 f"(expected every {times[1] - times[0]}); fill the missing rows")
        times.append(moment)
        values.append(value)
    if not times:
        raise UserInputError(f"{source}: no data rows under the header")
    filled = _interpolate_blanks(values)
    if filled:
        source += f" ({filled} blank hours interpolated)"
    return HourlyTrace(times, values, source)


def _interpolate_blanks(values: list[float]) -> int:
    """Replace NaN runs in place by linear interpolation (edges: nearest value). Returns the count."""
    known = [i for i, v in enumerate(values) if not math.isnan(v)]
    if not known:
        raise UserInputError("trace has no intensity values")
    filled = 0
    for i, v in enumerate(values):
        if math.isnan(v):
            right = bisect.bisect_left(known, i)
            lo = known[right - 1] if right > 0 else known[right]
            hi = known[right] if right < len(known) else known[right - 1]
            weight = 0.0 if hi == lo else (i - lo) / (hi - lo)
            values[i] = values[lo] + weight * (values[hi] - values[lo])
            filled += 1
    return filled


@functools.cache
def bundled_trace(grid: str) -> HourlyTrace:
    """The 2022 EIA-930 trace of a bundled US balancing authority."""
    with (_HOURLY / f"{grid}_2022.csv.gz").open("rb") as raw:
        text = gzip.decompress(raw.read()).decode()
    return parse_trace_csv(io.StringIO(text), f"EIA-930 hourly average intensity, {grid}, 2022", fill_blank=True)


def load_trace(grid: str) -> HourlyTrace:
    """A bundled grid name (case-insensitive) or a path to a CSV file."""
    if grid.upper() in BUNDLED_GRIDS:
        return bundled_trace(grid.upper())
    path = Path(grid)
    if not path.exists():
        raise UserInputError(f"unknown grid {grid!r}: use one of {', '.join(BUNDLED_GRIDS)} or a path to a "
                             "'timestamp,intensity' CSV file")
    try:
        with path.open(newline="") as f:
            return parse_trace_csv(f, str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read trace {path}: {exc}") from None


def _same_hour_in_year(moment: datetime, year: int) -> datetime:
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February in a year without it
        return moment.replace(year=year, day=28)


class TraceProvider(IntensityProvider):
    """Intensity from an hourly trace; energy in each hour meets that hour's intensity.

    A trace covering a whole year also serves other years as a *typical year*: each hour maps
    to the same month, day and hour of the trace's year, and a note says so.
    """

    name = "hourly-trace"

    def __init__(self, trace: HourlyTrace) -> None:
        self.trace = trace

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        start, end = as_utc(start), as_utc(end)
        trace = self.trace
        if trace.start <= start and end <= trace.end:
            return Intensity(tuple(trace.segments(start, end)), trace.source, "hourly", trace.start.year)
        if not trace.covers_a_year:
            raise UserInputError(f"trace {trace.source} covers {trace.start.isoformat()} to {trace.end.isoformat()}, "
                                 f"not {start.isoformat()} to {end.isoformat()}")
        year = trace.start.year
        segments = []
        t = start
        while t < end:  # walk hour by hour in real time, look up the same hour of the trace year
            boundary = min(t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1), end)
            mapped = _same_hour_in_year(t, year)
            if not trace.start <= mapped < trace.end:  # the trace's missing first/last hour
                mapped = min(max(mapped, trace.start), trace.end - timedelta(microseconds=1))
            segments.append(IntensitySegment(t, boundary, trace.value_at(mapped)))
            t = boundary
        note = f"{year} trace used as a typical year for {start.year}: same month, day and hour"
        return Intensity(tuple(segments), trace.source, "hourly", year, (note,))

    def describe(self) -> str:
        return self.trace.source

    def coverage(self) -> tuple[datetime | None, datetime | None]:
        """Unbounded for a year-long trace (a typical year); otherwise the trace's own span."""
        return (None, None) if self.trace.covers_a_year else (self.trace.start, self.trace.end)
