"""The provider interface: grid carbon intensity for a time range at one location."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from greendiff.display import plain_number
from greendiff.errors import UserInputError

WORLD_AVERAGE_G_PER_KWH = 475.0
WORLD_AVERAGE_SOURCE = "world average 475 gCO2e/kWh (IEA 2019, as used by CodeCarbon)"
# Above any grid's hourly peak (lignite plants emit ~1,100-1,200 gCO2e/kWh): a larger value is a unit or data error.
MAX_PLAUSIBLE_G_PER_KWH = 2000.0
# Times greendiff accounts and plans in. Far from datetime's limits (years 1 and 9999), so that no
# arithmetic on a checked time (a year's mapping, a deadline, an hour's end) can overflow.
EARLIEST_SUPPORTED = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_SUPPORTED = datetime(2200, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class IntensitySegment:
    """Constant intensity over ``[start, end)`` (UTC)."""

    start: datetime
    end: datetime
    intensity_g_per_kwh: float


#: What an :class:`Intensity` is: a yearly table figure, a recorded series, or a live API's answer.
IntensityKind = Literal["static", "trace", "live"]
INTENSITY_KINDS: tuple[str, ...] = ("static", "trace", "live")
#: The resolution of a yearly table's figure.
YEARLY = "yearly"


@dataclass(frozen=True)
class Intensity:
    """Intensity over a time range, with what it is and where it comes from.

    Attributes:
        segments: Contiguous segments covering the requested range; a yearly table gives one.
        source: Dataset and key, e.g. ``"OWID/Ember country table: FRA (France), 2022"``.
        kind: What the figure is: ``"static"`` (a yearly average from a table), ``"trace"`` (a recorded
            series: the bundled EIA-930 hours or a user's CSV) or ``"live"`` (an API).
        year: Year of the data when it is not the year of use.
        notes: Warnings that must travel with the figure (unknown location, fallbacks, typical year).
        resolution: The series' step in words, as :func:`resolution_label` gives it (``"hourly"``,
            ``"half-hourly"``, ``"10-second"``); ``"yearly"`` for a table; None when not known.
    """

    segments: tuple[IntensitySegment, ...]
    source: str
    kind: IntensityKind
    year: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    resolution: str | None = None

    def mean_g_per_kwh(self) -> float:
        """Time-weighted mean over the segments."""
        total_s = sum((s.end - s.start).total_seconds() for s in self.segments)
        if total_s <= 0:
            return self.segments[0].intensity_g_per_kwh
        return sum(s.intensity_g_per_kwh * (s.end - s.start).total_seconds() for s in self.segments) / total_s


class IntensityProvider(abc.ABC):
    """Source of gCO2e/kWh for one location. Every provider passes the shared contract test."""

    #: Short identifier recorded with every result (``"country-table"``, ``"uk-carbon-intensity"``).
    name: str = "provider"

    @abc.abstractmethod
    def intensity(self, start: datetime, end: datetime) -> Intensity:
        """Intensity covering ``[start, end)``; both must be timezone-aware."""

    def series(self, start: datetime, end: datetime) -> Intensity:
        """An intensity that changes over ``[start, end)`` (hourly or finer), to choose when to run.

        Raises:
            UserInputError: Only a yearly figure exists here: it has no hours to choose between (one line).
        """
        intensity = self.intensity(start, end)
        if intensity.kind == "static":
            raise UserInputError(f"no hourly series for the window ({'; '.join(intensity.notes) or intensity.source})")
        return intensity

    def describe(self) -> str:
        return self.name

    def coverage(self) -> tuple[datetime | None, datetime | None]:
        """The time range this provider can answer for; ``None`` ends are unbounded."""
        return None, None


def as_utc(moment: datetime, what: str = "time") -> datetime:
    """Reject naive datetimes (an ambiguous hour changes the emissions) and convert to UTC.

    Raises:
        ValueError: ``moment`` is naive.
        UserInputError: It lies outside the years 1900 to 2199 (:func:`check_supported`).
    """
    if moment.tzinfo is None:
        raise ValueError(f"datetime {moment.isoformat()} has no timezone; carbon accounting needs UTC-aware times")
    return check_supported(moment, what)


def check_supported(moment: datetime, what: str = "time") -> datetime:
    """``moment`` (aware) in UTC, or a one-line :class:`UserInputError` if it is outside 1900 to 2199."""
    try:
        utc = moment.astimezone(timezone.utc)
    except OverflowError:  # a zone offset pushing year 1 or 9999 past datetime's range
        utc = None
    if utc is None or not EARLIEST_SUPPORTED <= utc < LATEST_SUPPORTED:
        raise UserInputError(f"{what} {moment.isoformat()} is outside the years greendiff handles "
                             f"({EARLIEST_SUPPORTED.year} to {LATEST_SUPPORTED.year - 1}, UTC)")
    return utc


def resolution_label(step: timedelta) -> str:
    """A series' step in words, as its :attr:`Intensity.resolution`: ``"hourly"``, ``"half-hourly"``, ``"daily"``, else
    ``"<n>-<unit>"`` in the largest whole unit (``"15-minute"``, ``"10-second"``, ``"2-hour"``, ``"0.5-second"``).

    Example:
        >>> resolution_label(timedelta(hours=1)), resolution_label(timedelta(seconds=10))
        ('hourly', '10-second')
    """
    named = {timedelta(hours=1): "hourly", timedelta(minutes=30): "half-hourly", timedelta(days=1): "daily"}
    if step in named:
        return named[step]
    seconds = step.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}-{unit}"
    return f"{plain_number(seconds)}-second"


def constant(start: datetime, end: datetime, g_per_kwh: float, source: str,
             kind: IntensityKind = "static", year: int | None = None,
             notes: tuple[str, ...] = (), resolution: str | None = YEARLY) -> Intensity:
    """One segment of constant intensity over the range (a yearly table's figure, unless told otherwise)."""
    return Intensity((IntensitySegment(as_utc(start), as_utc(end), g_per_kwh),), source, kind, year, notes, resolution)


_BASIS = {YEARLY: "a yearly average", "hourly": "hour by hour", "half-hourly": "half-hour by half-hour",
          "daily": "day by day"}


def basis_text(kind: str, resolution: str | None) -> str:
    """How a figure was applied, in words for a statement: ``"a yearly average"``, ``"hour by hour"``,
    ``"half-hour by half-hour"``, ``"in 10-second steps"``, ``"live data"``. Also reads summaries stored
    before ``resolution`` was kept, whose ``kind`` was the resolution (``"hourly"``).

    Example:
        >>> basis_text("static", "yearly"), basis_text("trace", "10-second"), basis_text("hourly", None)
        ('a yearly average', 'in 10-second steps', 'hour by hour')
    """
    if kind == "static":
        return _BASIS[YEARLY]
    step = resolution if resolution else (None if kind in INTENSITY_KINDS else kind)
    if step is None:
        return "live data" if kind == "live" else "a recorded series"
    return _BASIS.get(step, f"in {step} steps")
