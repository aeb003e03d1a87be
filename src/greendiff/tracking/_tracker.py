"""Tracker: an EnergyMonitor whose windows and samples land in the ledger, priced in CO2e.

Wrap any training loop (like CodeCarbon's ``EmissionsTracker`` or Zeus' ``ZeusMonitor``)::

    with Tracker("my-run", location=Location(country="FRA")) as tracker:
        for batch in loader:
            with tracker.window("train"):
                step(batch)
    print(tracker.summary.emissions_kg)

Per-step windows cost two meter reads and a dict update; the ledger is written only when
``sample_interval_s`` has passed since the last write (no background thread), and at stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil

from greendiff import __version__
from greendiff.carbon import IntensityProvider, Location, Pue, account, resolve_provider, resolve_pue
from greendiff.energy import EnergyMonitor, Measurement, MonitorOptions
from greendiff.ledger import Ledger, WindowTotal
from greendiff.tracking._pricing import FallbackProvider, static_provider
from greendiff.tracking._run_summary import RunSummary
from greendiff.tracking._summary import summarize
from greendiff.units import BYTES_PER_GB, G_PER_KG

logger = logging.getLogger(__name__)


def assumptions_for(location: Location, pue: Pue, live: str, zone: str | None, provider: IntensityProvider,
                    options: MonitorOptions, notes: list[str], config: dict | None) -> dict:
    """Everything a reader needs to recompute or audit the run's figures."""
    return {
        "location": dataclasses.asdict(location),
        "live": live,
        "zone": zone,
        "pue": dataclasses.asdict(pue),
        "intensity_provider": provider.describe(),
        "monitor": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(options).items()},
        "meter_notes": notes,
        "greendiff_version": __version__,
        "host": {"os": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                 "ram_total_gb": round(psutil.virtual_memory().total / BYTES_PER_GB, 1)},
        "config": config or {},
    }


class Tracker:
    """Measure a run, write it to the ledger, and price it in CO2e.

    Args:
        name: Run name shown in ``greendiff runs list``.
        kind: What is tracked (``"library"``, ``"measure"``, ``"demo"``, ``"train"``).
        command: The command line, for the record.
        location: Where the hardware is (explicit; no geolocation).
        pue: Facility PUE: a number (given by the user), a :class:`~greendiff.carbon.Pue` with its own source
            (a PUE inherited from a run's stored location says so), or ``None`` for a documented default
            (see :func:`resolve_pue`).
        live: Live intensity API (``"none"``, ``"uk"``, ``"electricitymaps"``).
        zone: Electricity Maps zone.
        monitor_options: What to meter (GPUs, node-level CPU/RAM, ``--cpu-watts``).
        ledger: A :class:`Ledger`, a path, or ``None`` for the default ledger.
        sample_interval_s: Minimum seconds between two ledger samples (crash-visible progress).
        config: Resolved configuration to store with the run.
        run_dir: The run directory the work writes (checkpoints, samples, metrics), for reports.
        monitor: An already-built monitor (tests, or sharing one across trackers).
        provider: An intensity provider already resolved for ``location``/``live``/``zone`` (the CLI
            resolves it once, to check the location before any work); ``None`` resolves it here.
    """

    def __init__(self, name: str = "run", *, kind: str = "library", command: str = "",
                 location: Location | None = None, pue: float | Pue | None = None, live: str = "none",
                 zone: str | None = None, monitor_options: MonitorOptions = MonitorOptions(),
                 ledger: Ledger | str | Path | None = None, sample_interval_s: float = 10.0,
                 config: dict | None = None, monitor: EnergyMonitor | None = None,
                 run_dir: str | Path | None = None, provider: IntensityProvider | None = None) -> None:
        self.name, self.kind, self.command = name, kind, command
        self.location = location or Location()
        self.pue = _pue(pue, self.location)
        self.live, self.zone = live, zone
        self.provider = provider if provider is not None else resolve_provider(self.location, live, zone)
        # what prices the run: the provider, with a labelled fallback where it cannot answer (a trace
        # that ends mid-run); start() checks the provider itself, so a trace that misses the start is an error
        self.pricing = FallbackProvider(self.provider, static_provider(dataclasses.replace(self.location, grid=None)))
        self.monitor_options = monitor_options
        self._ledger_arg = ledger
        self.sample_interval_s = sample_interval_s
        self.config = config
        self.run_dir = str(Path(run_dir).resolve()) if run_dir is not None else None
        self._monitor = monitor
        self.ledger: Ledger | None = None
        self.run_id: int | None = None
        self.summary: RunSummary | None = None
        self._phases: dict[str, list] = {}
        self._last_sample_s = 0.0
        self._priced: tuple[float, float] | None = None  # (unix_s, joules) of this process's last priced reading
        self._emissions_g = 0.0

    @property
    def monitor(self) -> EnergyMonitor:
        if self._monitor is None:
            raise RuntimeError("Tracker.start() has not been called")
        return self._monitor

    def start(self) -> Tracker:
        self.ledger = self._ledger_arg if isinstance(self._ledger_arg, Ledger) else Ledger(self._ledger_arg)
        if self._monitor is None:
            self._monitor = EnergyMonitor.detect(self.monitor_options)
        for note in self.provider.intensity(*_now_window()).notes:
            logger.warning(note)
        self._open_run(self.device_records(), self._monitor.notes)
        self.sample(force=True)
        return self

    def device_records(self) -> list[dict]:
        """The metered devices as the ledger records them (keys as :meth:`recorded_key` writes them)."""
        return [{**dataclasses.asdict(d), "key": self.recorded_key(d.key), "uncertainty_frac": d.uncertainty_frac}
                for d in self.monitor.devices]

    def _open_run(self, devices: list[dict], notes: list[str], more: dict | None = None) -> None:
        """Start the ledger run with every assumption (``more``: extra assumptions, e.g. a job's shape)."""
        assumptions = assumptions_for(self.location, self.pue, self.live, self.zone, self.provider,
                                      self.monitor_options, notes, self.config)
        if self.run_dir is not None:
            assumptions["run_dir"] = self.run_dir
        assumptions.update(more or {})
        self.run_id = self.ledger.start_run(self.name, self.kind, self.command, assumptions, devices)

    def recorded_key(self, key: str) -> str:
        """A device's key in the ledger (a job's ranks prefix their place)."""
        return key

    # -- windows --------------------------------------------------------------------------------

    def begin_window(self, name: str) -> None:
        self.monitor.begin_window(name)

    def end_window(self, name: str) -> Measurement:
        measurement = self.monitor.end_window(name)
        phase = self._phases.setdefault(name, [0, 0.0, {}])
        phase[0] += 1
        phase[1] += measurement.duration_s
        for key, joules in measurement.energy_j.items():
            key = self.recorded_key(key)
            phase[2][key] = phase[2].get(key, 0.0) + joules
        self.sample()
        return measurement

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        """Time and meter a phase (``"train"``, ``"eval"``, ``"checkpoint"``); totals accumulate per name."""
        self.begin_window(name)
        try:
            yield
        finally:
            self.end_window(name)

    def sample(self, force: bool = False) -> None:
        """Write a cumulative sample and the phase totals if the interval has passed (or ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_sample_s < self.sample_interval_s:
            return
        self._last_sample_s = now
        reading = self.monitor.read()
        # the CPU seconds beside the joules they price: read after the pricing, they would count its work too
        cpu_time_s = self.monitor.cpu_time_s()
        self._price(reading)
        assert self.ledger is not None and self.run_id is not None
        energy_j, cpu_time_s = self._recorded(reading, cpu_time_s)
        self.ledger.add_sample(self.run_id, reading.unix_s, cpu_time_s, energy_j)
        if self._phases:
            self.ledger.put_windows(self.run_id, [WindowTotal(n, c, d, dict(e)) for n, (c, d, e) in self._phases.items()])

    def _recorded(self, reading, cpu_time_s: float) -> tuple[dict[str, float], float]:
        """What a ledger sample holds: the energy by device and the CPU seconds (read with ``reading``)."""
        return reading.energy_j, cpu_time_s

    def sync(self) -> None:
        """Write a ledger sample now (in a job, a collective that gathers every rank's readings first)."""
        self.sample(force=True)

    def total_energy_j(self) -> float:
        """Energy metered so far, all devices (in a job, the whole job's: a collective)."""
        return sum(self.monitor.read().energy_j.values())

    def emissions_so_far_kg(self) -> float:
        """kgCO2e of this process's meters so far, accounted as the ledger's summary accounts the run: the
        energy between readings spread evenly in time and charged segment by segment of the intensity
        series (on an hourly grid each hour at its own intensity), times the PUE. The readings are the
        ledger samples written so far and one taken now, so budgets and progress figures price the run as
        its ledger row will.

        Example:
            >>> import tempfile, pathlib
            >>> from greendiff.energy import EnergyMonitor
            >>> with Tracker("doc", ledger=pathlib.Path(tempfile.mkdtemp()) / "l.sqlite", monitor=EnergyMonitor([])) as t:
            ...     t.emissions_so_far_kg()
            0.0
        """
        self._price(self.monitor.read())
        return self._emissions_g / G_PER_KG

    def _price(self, reading) -> None:
        """Charge the energy since the last priced reading (the first: since the meters started)."""
        joules = sum(reading.energy_j.values())
        t0, j0 = self._priced if self._priced is not None else (reading.unix_s, 0.0)
        t1 = max(reading.unix_s, t0)
        if joules != j0:
            # one second of margin each side, as the summary asks: datetimes keep microseconds
            intensity = self.pricing.intensity(datetime.fromtimestamp(math.floor(t0) - 1, timezone.utc),
                                               datetime.fromtimestamp(math.ceil(t1) + 1, timezone.utc))
            self._emissions_g += account([(t0, j0), (t1, joules)], intensity, self.pue.value).emissions_g
        self._priced = (t1, joules)

    def intensity_now_g_per_kwh(self) -> float:
        """Grid intensity of the current hour at the run's location (for live progress figures)."""
        return self.pricing.intensity(*_now_window()).mean_g_per_kwh()

    # -- end ------------------------------------------------------------------------------------

    def stop(self, status: str = "completed", exit_code: int | None = None, extra: dict | None = None) -> RunSummary:
        """Final sample, summary with emissions, status written to the ledger. Returns the summary.

        ``extra``: results of the caller stored with the summary (a stop reason, carbon-aware books);
        they become ``RunSummary.extra``."""
        assert self.ledger is not None and self.run_id is not None, "start() first"
        try:
            self.sample(force=True)
            self.summary = self._summarize(status).with_extra(extra)
        except BaseException:
            self._close_without_summary(status, exit_code)
            raise
        finally:
            self.monitor.close()
        self.ledger.finish_run(self.run_id, status, self.summary.to_dict(), exit_code)
        if self.summary.intensity.fallback:
            logger.warning("ledger run %s (%s): CO2e priced with a fallback: %s", self.run_id, self.name,
                           self.summary.intensity.fallback)
        return self.summary

    def _close_without_summary(self, status: str, exit_code: int | None) -> None:
        """Close the ledger row when the summary could not be made (readers price it from its samples)."""
        try:
            self.ledger.finish_run(self.run_id, status, None, exit_code)
        except Exception as exc:  # the ledger itself failing: the caller's error is the one to report
            logger.warning("could not close ledger run %s: %s", self.run_id, exc)

    def _summarize(self, status: str) -> RunSummary:
        """The run's summary from what the ledger holds, with ``status``."""
        record = dataclasses.replace(self.ledger.get_run(self.run_id), status=status)
        return summarize(record, self.ledger.samples(self.run_id), self.ledger.windows(self.run_id), self.pricing, self.pue)

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.stop("completed")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.stop("interrupted")
        else:
            self.stop("failed")


def _pue(pue: float | Pue | None, location: Location) -> Pue:
    """The run's PUE: checked by :func:`resolve_pue` (>= 1), with the source a :class:`Pue` brings."""
    if isinstance(pue, Pue):
        return Pue(resolve_pue(pue.value, location).value, pue.source)
    return resolve_pue(pue, location)


def _now_window() -> tuple[datetime, datetime]:
    now = datetime.now(timezone.utc)
    return now, now + timedelta(seconds=1)
