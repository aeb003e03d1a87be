"""Pricing a run in CO2e: one path for a run being measured and for every reader of the ledger.

A run's figures must never be lost to its intensity source: a trace that stops covering the run, a
trace file deleted since, a live API or a table entry that is gone. Where the run's own provider
cannot answer, :class:`FallbackProvider` prices with a recorded fallback and labels it:

- the part of the run a trace covers is priced from the trace, the rest at the trace's mean;
- a provider that cannot answer at all (or cannot be rebuilt) gives way to the static table of the
  location (cloud region, else country, else the world average).

The label travels in the summary (``intensity.fallback`` and the intensity notes), and every reader
that prices a run (:func:`run_summary`) logs one warning per run naming it. A run's problem is that
run's warning, never an error for the ledger.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from greendiff.carbon import (
    Intensity,
    IntensityProvider,
    IntensitySegment,
    Location,
    Pue,
    WorldAverageProvider,
    cloud_provider,
    country_provider,
    resolve_provider,
    resolve_pue,
)
from greendiff.display import duration_text
from greendiff.errors import UserInputError
from greendiff.names import first_line
from greendiff.ledger import Ledger, RunRecord, is_number
from greendiff.tracking._run_summary import RunSummary
from greendiff.tracking._summary import FallbackIntensity, summarize

logger = logging.getLogger(__name__)

# What a provider raises when it cannot answer: a time outside a trace (UserInputError), a bad or
# missing file (OSError), a time out of range (OverflowError), a bad lookup.
_PROVIDER_ERRORS = (ValueError, OSError, LookupError, ArithmeticError)


def static_provider(location: Location) -> IntensityProvider:
    """The yearly table of the location (cloud region, else country), else the world average; never raises."""
    for key, build in ((location.cloud, cloud_provider), (location.country, country_provider)):
        if key:
            try:
                return build(key)
            except UserInputError:
                continue
    return WorldAverageProvider()


class FallbackProvider(IntensityProvider):
    """The run's own provider where it answers; a labelled fallback where it cannot.

    Args:
        primary: The run's provider; ``None`` when it could not be rebuilt.
        static: The location's static table (:func:`static_provider`).
        unavailable: Why ``primary`` is ``None``, for the label.

    Example:
        >>> from datetime import datetime, timezone
        >>> from greendiff.carbon import Location
        >>> p = FallbackProvider(None, static_provider(Location(country="FRA")), "trace t.csv is gone")
        >>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
        >>> p.intensity(t0, t0.replace(hour=1)).fallback.startswith("trace t.csv is gone; priced with")
        True
    """

    def __init__(self, primary: IntensityProvider | None, static: IntensityProvider, unavailable: str = "") -> None:
        self.primary = primary
        self.static = static
        self.unavailable = unavailable
        self.name = primary.name if primary is not None else static.name
        self._whole: Intensity | None = None  # the primary over its whole coverage

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        if self.primary is None:
            return self._from_static(start, end, self.unavailable)
        try:
            return self.primary.intensity(start, end)
        except _PROVIDER_ERRORS as exc:
            patched = self._outside_coverage(start, end)
            why = first_line(exc)
            return patched if patched is not None else self._from_static(start, end, why)

    def _outside_coverage(self, start: datetime, end: datetime) -> Intensity | None:
        """The covered part from the primary, the rest at its mean over its coverage; ``None`` if it has none.
        The result keeps the primary's kind, resolution (``"10-second"``, ``"half-hourly"``, ...) and year, also
        for a range wholly outside the coverage."""
        lo, hi = self.primary.coverage()
        if lo is None or hi is None or not lo < hi:
            return None
        try:
            if self._whole is None:
                self._whole = self.primary.intensity(lo, hi)
            inside = self.primary.intensity(max(start, lo), min(end, hi)) if max(start, lo) < min(end, hi) else None
        except _PROVIDER_ERRORS:
            return None
        whole, segments, outside_s = self._whole, [], 0.0
        mean = whole.mean_g_per_kwh()
        if start < lo:
            segments.append(IntensitySegment(start, min(end, lo), mean))
            outside_s += (min(end, lo) - start).total_seconds()
        segments.extend(inside.segments if inside is not None else ())
        if end > hi:
            segments.append(IntensitySegment(max(start, hi), end, mean))
            outside_s += (end - max(start, hi)).total_seconds()
        source = self.primary.describe()
        label = (f"{source} covers {lo.isoformat()} to {hi.isoformat()}, not all of the run; the "
                 f"{duration_text(outside_s)} outside it priced at the trace's mean, {mean:.0f} gCO2e/kWh (fallback)")
        notes = (*(inside.notes if inside is not None else ()), label)
        return FallbackIntensity(tuple(segments), source, whole.kind, whole.year, notes, whole.resolution, fallback=label)

    def _from_static(self, start: datetime, end: datetime, why: str) -> Intensity:
        result = self.static.intensity(start, end)
        label = f"{why}; priced with {result.source} instead (fallback)"
        return FallbackIntensity(result.segments, result.source, result.kind, result.year, (*result.notes, label),
                                 result.resolution, fallback=label)

    def describe(self) -> str:
        return self.primary.describe() if self.primary is not None else f"{self.static.describe()} (fallback)"


@dataclasses.dataclass(frozen=True)
class RunPricing:
    """How to price a run: its provider (with fallback), its PUE, and what was wrong with its assumptions."""

    provider: FallbackProvider
    pue: Pue
    problems: tuple[str, ...] = ()


def _location(raw: object, problems: list[str]) -> Location:
    fields = [f.name for f in dataclasses.fields(Location)]
    if raw is None:
        return Location()
    if not isinstance(raw, dict):
        problems.append("assumptions.location is not an object; priced as an unknown location")
        return Location()
    bad = [k for k in fields if raw.get(k) is not None and not isinstance(raw[k], str)]
    if bad:
        problems.append(f"assumptions.location.{bad[0]} is not text; ignored")
    return Location(**{k: raw[k] for k in fields if isinstance(raw.get(k), str) and raw[k]})


def _pue(raw: object, location: Location, problems: list[str]) -> Pue:
    if isinstance(raw, dict) and is_number(raw.get("value")) and raw["value"] >= 1 and isinstance(raw.get("source"), str):
        return Pue(float(raw["value"]), raw["source"])
    pue = resolve_pue(None, location, env={})
    if raw is not None:
        problems.append(f"assumptions.pue is unreadable; PUE {pue.value:g} used ({pue.source})")
    return pue


def run_pricing(assumptions: dict) -> RunPricing:
    """Rebuild a run's pricing from its stored assumptions; never raises (a part that cannot be rebuilt
    falls back, and is named in ``problems`` or in the intensity's label)."""
    problems: list[str] = []
    location = _location(assumptions.get("location"), problems)
    live, zone = assumptions.get("live", "none"), assumptions.get("zone")
    live = live if isinstance(live, str) else "none"
    zone = zone if isinstance(zone, str) else None
    try:
        primary, unavailable = resolve_provider(location, live, zone), ""
    except _PROVIDER_ERRORS as exc:
        primary, unavailable = None, f"the run's intensity source ({location.describe()}, live {live}) cannot be used now: {exc}"
    static = static_provider(dataclasses.replace(location, grid=None))
    return RunPricing(FallbackProvider(primary, static, unavailable), _pue(assumptions.get("pue"), location, problems),
                      tuple(problems))


def provider_from_assumptions(assumptions: dict) -> tuple[IntensityProvider, Pue]:
    """The run's intensity provider (with its fallback) and PUE, rebuilt from its assumptions; never raises."""
    pricing = run_pricing(assumptions)
    return pricing.provider, pricing.pue


def run_summary(ledger: Ledger, record: RunRecord) -> RunSummary:
    """The summary of a run: the stored one of a closed run, else priced from its samples.

    The one path every reader takes (``runs list/show/export``, ``report``, ``tune``). It does not
    fail for a problem of this run: the row's problems, unreadable samples and an intensity fallback
    are logged as one warning naming the run.
    """
    problems = list(record.problems)
    if record.summary is not None:
        summary = RunSummary.from_dict(record.summary)
    else:
        pricing = run_pricing(record.assumptions)
        problems.extend(pricing.problems)
        samples, windows = ledger.samples(record.id, problems), ledger.windows(record.id, problems)
        summary = summarize(record, samples, windows, pricing.provider, pricing.pue)
    fallback = summary.intensity.fallback
    if fallback:
        problems.append(f"CO2e priced with a fallback: {fallback}")
    if problems:
        logger.warning("ledger run %s (%s): %s", record.id, record.name, "; ".join(problems))
    return summary

