"""Everything a report shows about one run: the ledger's record and samples, and its run directory."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from greendiff.errors import UserInputError
from greendiff.ledger import BadRecordError, Ledger, RunRecord, Sample
from greendiff.report._segments import RunSegments, run_segments
from greendiff.tracking import FallbackIntensity, RunSummary, provider_from_assumptions

if TYPE_CHECKING:
    from greendiff.train import MetricsLog

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """One run as the report sees it.

    Attributes:
        label: Short name used in charts and tables (``#12 green-nano``).
        power_w: Per device key, ``(minutes since start, mean W over the interval ending there)``.
        intensity: ``(minutes since start, gCO2e/kWh)`` steps of the grid over the run.
        metrics: ``metrics.jsonl`` records of the run directory (loss logs, evaluations, pauses).
        config: The resolved config (``config.toml``, else the ledger's copy), nested.
        carbon_aware: The carbon-aware books (from ``emissions.json``, else the summary), shape checked.
        segments: The ledger runs reported (:func:`run_segments`); ``summary`` is their whole.
    """

    record: RunRecord
    summary: RunSummary
    label: str
    run_dir: Path | None
    power_w: dict[str, list[tuple[float, float]]]
    intensity: list[tuple[float, float]]
    intensity_note: str = ""
    metrics: MetricsLog | None = None
    config: dict = field(default_factory=dict)
    config_text: str = ""
    sample_png: bytes | None = None
    sample_name: str = ""
    carbon_aware: dict | None = None
    segments: RunSegments | None = None

    @property
    def ledger_ids(self) -> tuple[int, ...]:
        """The ledger runs reported: the segments of a whole run, else the one ledger run."""
        return self.segments.ids if self.segments is not None else (self.record.id,)

    @property
    def dataset(self) -> str:
        data = self.config.get("data", {})
        if not isinstance(data, dict) or not data:
            return ""
        return f"{data.get('dataset', '?')} at {data.get('resolution', '?')} px"

    def evaluations(self, metric: str = "fid") -> list[tuple[float, float]]:
        """``(kWh used so far, metric)`` of each evaluation in the run directory."""
        return self.metrics.points("energy_kwh", metric, event="eval") if self.metrics else []

    def losses(self) -> list[tuple[float, float]]:
        return self.metrics.points("energy_kwh", "loss") if self.metrics else []


def power_series(samples: list[Sample], t0: float) -> dict[str, list[tuple[float, float]]]:
    """Mean power of each device between consecutive cumulative samples, at the interval's end."""
    out: dict[str, list[tuple[float, float]]] = {}
    for a, b in zip(samples, samples[1:]):
        dt = b.unix_s - a.unix_s
        if dt <= 0:
            continue
        for key, joules in b.energy_j.items():
            out.setdefault(key, []).append(((b.unix_s - t0) / 60, (joules - a.energy_j.get(key, 0.0)) / dt))
    return out


def collect(ref: str, ledger: Ledger) -> RunData:
    """Gather one run: a run directory is the whole run (its segments' totals, power and intensity over all of
    them, :func:`run_segments`), a ledger id that ledger run. A run with no energy samples is an error."""
    segments = run_segments(ref, ledger)
    record = segments.record
    per_segment = [ledger.samples(r.id) for r in segments.records]
    samples = [s for part in per_segment for s in part]
    if len(samples) < 2:
        raise UserInputError(f"run {record.id} ({record.name}) has no energy measurements to report "
                             f"({len(samples)} sample{'s' if len(samples) != 1 else ''}); it may not have started measuring")
    summary = segments.summary(ledger)
    t0 = samples[0].unix_s
    power: dict[str, list[tuple[float, float]]] = {}
    for part in per_segment:  # each segment's meters start at zero: intervals within a segment only
        for key, points in power_series(part, t0).items():
            power.setdefault(key, []).extend(points)
    provider, _ = provider_from_assumptions(record.assumptions)  # the same fallback as the summary's
    start = datetime.fromtimestamp(t0, timezone.utc)
    end = datetime.fromtimestamp(max(samples[-1].unix_s, t0 + 1), timezone.utc)
    result = provider.intensity(start, end)
    intensity = [((s.start.timestamp() - t0) / 60, s.intensity_g_per_kwh) for s in result.segments]
    intensity.append(((result.segments[-1].end.timestamp() - t0) / 60, result.segments[-1].intensity_g_per_kwh))
    note = f"{result.source} ({result.resolution or result.kind})" + (f"; {result.fallback}" if isinstance(result, FallbackIntensity) else "")
    config = record.assumptions.get("config")
    run_dir = segments.run_dir
    data = RunData(record, summary, f"#{'+'.join(map(str, segments.ids))} {summary.name}",
                   run_dir if run_dir and run_dir.is_dir() else None, power, intensity, note,
                   config=config if isinstance(config, dict) else {}, carbon_aware=summary.carbon_aware,
                   segments=segments)
    if data.run_dir is not None:
        _read_run_dir(data)
    return data


def _read_run_dir(data: RunData) -> None:
    """What the report shows from the run directory; a damaged file is a warning naming it, never the report's end."""
    from greendiff.train import read_emissions_json, read_metrics

    run_dir = data.run_dir
    if (run_dir / "metrics.jsonl").is_file():
        data.metrics = read_metrics(run_dir / "metrics.jsonl")
    config = run_dir / "config.toml"
    if config.is_file():
        try:
            data.config_text = config.read_bytes().decode("utf-8", errors="replace")
            data.config = tomllib.loads(data.config_text)
        except (OSError, tomllib.TOMLDecodeError, RecursionError) as exc:
            logger.warning("%s: cannot be read (%s); the ledger's copy of the config is shown", config, exc)
    grids = sorted((p for p in (run_dir / "samples").glob("step-*.png") if p.stem.split("-", 1)[1].isdecimal()),
                   key=lambda p: int(p.stem.split("-", 1)[1])) if (run_dir / "samples").is_dir() else []
    if grids:
        try:
            data.sample_png, data.sample_name = grids[-1].read_bytes(), grids[-1].name
        except OSError as exc:
            logger.warning("%s: cannot be read (%s)", grids[-1], exc.strerror)
    emissions = run_dir / "emissions.json"
    if emissions.is_file():
        try:
            data.carbon_aware = read_emissions_json(emissions).carbon_aware or data.carbon_aware
        except BadRecordError as exc:
            logger.warning("%s; not used", exc)
