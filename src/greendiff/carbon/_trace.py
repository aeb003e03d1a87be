"""Intensity traces: the bundled hourly 2022 EIA-930 files or a user CSV ``timestamp,intensity`` at any even step."""

from __future__ import annotations

import bisect
import csv
import functools
import gzip
import io
import math
from collections.abc import Iterable
from datetime import datetime, time, timedelta, timezone
from importlib import resources
from pathlib import Path

from greendiff.carbon._intensity import (
    MAX_PLAUSIBLE_G_PER_KWH,
    Intensity,
    IntensityProvider,
    IntensitySegment,
    as_utc,
    check_supported,
    resolution_label,
)
from greendiff.display import plain_number
from greendiff.errors import UserInputError

_HOURLY = resources.files("greendiff.carbon") / "tables" / "hourly"
#: The bundled US balancing authorities (EIA-930 hourly 2022): code -> the region it serves, in words.
BUNDLED_GRIDS: dict[str, str] = {
    "AZPS": "Arizona", "BPAT": "Pacific Northwest", "CISO": "California", "ERCO": "Texas", "MISO": "Midwest",
    "NYIS": "New York", "PJM": "Mid-Atlantic", "SOCO": "Southeast", "WAAT": "Upper Great Plains West",
}
_INTENSITY_COLUMNS = ("intensity", "avg_CI", "carbon_intensity", "intensity_g_per_kwh")
_DAY = timedelta(days=1)


class TraceCoverageError(UserInputError):
    """A time outside a trace that is too short to stand in as a typical year.

    Callers that can carry on without the trace (a ledger pricing a past run) catch this one.
    """


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
        check_supported(times[0], f"{source}: timestamp")
        check_supported(times[-1], f"{source}: timestamp")
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
    def resolution(self) -> str:
        """The trace's step in words (``"hourly"``, ``"10-second"``): the resolution of every :class:`Intensity` it
        gives."""
        return resolution_label(self.step)

    @property
    def covers_a_year(self) -> bool:
        return self.end - self.start >= timedelta(days=365) - self.step

    def index(self, moment: datetime) -> int:
        """The interval holding ``moment``, which must lie in ``[start, end)``."""
        if not self.start <= moment < self.end:
            raise TraceCoverageError(f"{moment.isoformat()} is outside trace {self.source} "
                                     f"({self.start.isoformat()} to {self.end.isoformat()})")
        return bisect.bisect_right(self._stamps, moment.timestamp()) - 1

    def value_at(self, moment: datetime) -> float:
        return self.values_g_per_kwh[self.index(moment)]

    def segments(self, start: datetime, end: datetime) -> list[IntensitySegment]:
        """Segments of ``[start, end)`` split at the trace's interval boundaries."""
        out: list[IntensitySegment] = []
        t = start
        while t < end:
            i = self.index(t)
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
        moment = check_supported(moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment,
                                 f"{where}: timestamp")
        try:
            value = math.nan if (blank and fill_blank) else float(row[column])
        except (ValueError, IndexError):
            raise UserInputError(f"{where}: intensity {row[column] if len(row) > column else ''!r} is not a number") from None
        if not (blank and fill_blank) and not (math.isfinite(value) and 0 <= value <= MAX_PLAUSIBLE_G_PER_KWH):
            raise UserInputError(f"{where}: intensity must be a number from 0 to {plain_number(MAX_PLAUSIBLE_G_PER_KWH, 15)} gCO2e/kWh, "
                                 f"got {value:g}")  # an out-of-range value: 1e+300 as given
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


def _same_moment_in_year(moment: datetime, year: int) -> datetime:
    try:
        return moment.replace(year=year)
    except ValueError:  # 29 February in a year without it
        return moment.replace(year=year, day=28)


class TraceProvider(IntensityProvider):
    """Intensity from a trace; energy in each of the trace's intervals meets that interval's intensity.

    A trace covering a whole year also serves times outside it as a *typical year*: a time maps to
    the same month, day and time of day in the year that starts at the trace's first row (the
    trace need not start on 1 January), at the trace's own resolution, and a note says so. The few
    hours a trace shorter than its calendar year lacks (365 days in a leap year) take the same time
    of day one or two days earlier. A shorter trace raises :class:`TraceCoverageError` outside its span.
    """

    name = "trace"

    def __init__(self, trace: HourlyTrace) -> None:
        self.trace = trace

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        start, end = as_utc(start), as_utc(end)
        trace = self.trace
        if trace.start <= start and end <= trace.end:
            return Intensity(tuple(trace.segments(start, end)), trace.source, "trace", trace.start.year,
                             resolution=trace.resolution)
        if not trace.covers_a_year:
            raise TraceCoverageError(f"trace {trace.source} covers {trace.start.isoformat()} to {trace.end.isoformat()}, "
                                     f"not {start.isoformat()} to {end.isoformat()}, and is shorter than a year, so it "
                                     "cannot stand in as a typical year")
        segments = []
        t = start
        while t < end:
            inside = trace.start <= t < trace.end
            mapped = t if inside else self._typical(t)
            i = trace.index(mapped)
            stop = min(end, t + (trace.times[i] + trace.step - mapped))  # the end of the trace's interval
            if not inside:
                stop = self._before_jump(t, min(stop, trace.start) if t < trace.start else stop)
            segments.append(IntensitySegment(t, stop, trace.values_g_per_kwh[i]))
            t = stop
        return Intensity(tuple(segments), trace.source, "trace", trace.start.year, (self._note(start, end),),
                         trace.resolution)

    def _typical(self, moment: datetime) -> datetime:
        """The moment of the trace that stands for ``moment`` (outside the trace) in a typical year."""
        first = self.trace.start
        mapped = _same_moment_in_year(moment, first.year)
        if mapped < first:
            mapped = _same_moment_in_year(moment, first.year + 1)
        if mapped >= self.trace.end:  # a day the trace lacks: the same time of day, a day or two earlier
            mapped -= ((mapped - self.trace.end) // _DAY + 1) * _DAY
        return mapped

    def _before_jump(self, t: datetime, stop: datetime) -> datetime:
        """``stop``, or the first midnight before it where the typical-year mapping jumps (a new year, 29 February).

        The mapping keeps the time of day, so it can change only at a midnight; within ``[t, stop)``
        the mapped times stay inside one interval of the trace, so a day shift cannot change either.
        """
        offset = t - self._typical(t)
        midnight = datetime.combine(t.date(), time(), timezone.utc) + _DAY
        while midnight < stop:
            if midnight - self._typical(midnight) != offset:
                return midnight
            midnight += _DAY
        return stop

    def _note(self, start: datetime, end: datetime) -> str:
        first = self.trace.start
        span = (str(first.year) if (first.month, first.day, first.time()) == (1, 1, time()) else
                f"{first:%Y-%m-%d %H:%M}–{_same_moment_in_year(first, first.year + 1):%Y-%m-%d %H:%M} UTC")
        years = f"{start.year}" if start.year == end.year else f"{start.year}–{end.year}"
        return f"{span} trace used as a typical year for {years}: same month, day and time of day"

    def describe(self) -> str:
        return self.trace.source

    def coverage(self) -> tuple[datetime | None, datetime | None]:
        """Unbounded for a year-long trace (a typical year); otherwise the trace's own span."""
        return (None, None) if self.trace.covers_a_year else (self.trace.start, self.trace.end)
