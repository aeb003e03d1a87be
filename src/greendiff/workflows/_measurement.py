"""The measurement options every measured job takes (where the hardware is, which devices are metered, which
ledger records it), as one typed value, resolved once into a :class:`MeasureSettings` that makes trackers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from greendiff.carbon import (
    IntensityProvider, Location, pue_bounds, resolve_location, resolve_provider, resolve_pue,
)
from greendiff.energy import MonitorOptions
from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.names import shown
from greendiff.numbers import Bounds
from greendiff.tracking import Tracker

PUE = pue_bounds(lo=0, lo_open=True)  #: positive here; resolve_pue says why it must be >= 1.0
CPU_WATTS = Bounds(lo=0, lo_open=True, hi=10_000, why="no CPU package draws 10 kW")
GPU_INDEX = Bounds(integer=True, lo=0, hi=1023)  #: one of --gpus


@dataclass(frozen=True)
class MeasurementOptions:
    """Where and how a job is measured, as given (text is checked by :func:`resolve_settings`).

    Args:
        country: ISO-3 country code of the hardware (env GREENDIFF_COUNTRY when None).
        cloud: ``PROVIDER:REGION``, e.g. ``gcp:europe-west1``.
        grid: a bundled US grid or a ``timestamp,intensity`` CSV.
        pue: data-centre PUE (>= 1); None: the provider's figure or 1.0.
        live: live intensity API: ``none``, ``uk`` or ``electricitymaps``.
        zone: Electricity Maps zone key.
        cpu_watts: CPU package power at full load in W (overrides the TDP table and RAPL).
        gpus: comma-separated visible GPU indices to meter (None: all).
        no_gpu: do not meter GPUs.
        ledger: ledger database file (None: GREENDIFF_LEDGER or the default).

    Example:
        >>> MeasurementOptions(country="FRA", no_gpu=True).argv()
        ['--country', 'FRA', '--no-gpu']
    """

    country: str | None = None
    cloud: str | None = None
    grid: str | None = None
    pue: str | float | None = None
    live: str = "none"
    zone: str | None = None
    cpu_watts: str | float | None = None
    gpus: str | None = None
    no_gpu: bool = False
    ledger: Path | None = None

    def __post_init__(self) -> None:
        """``ledger`` may be given as ``str``; a value of another type is a ``TypeError``."""
        if self.ledger is not None and not isinstance(self.ledger, Path):
            if not isinstance(self.ledger, str):
                raise TypeError(f"MeasurementOptions.ledger must be a Path or str or None, got {type(self.ledger).__name__}")
            object.__setattr__(self, "ledger", Path(self.ledger))

    def argv(self) -> list[str]:
        """These options as ``greendiff`` flags again (for worker processes of the same job)."""
        argv: list[str] = []
        for flag, value in (("--country", self.country), ("--cloud", self.cloud), ("--grid", self.grid),
                            ("--pue", self.pue), ("--live", None if self.live == "none" else self.live),
                            ("--zone", self.zone), ("--cpu-watts", self.cpu_watts), ("--gpus", self.gpus),
                            ("--ledger", self.ledger)):
            if value is not None:
                argv += [flag, str(value)]
        return argv + (["--no-gpu"] if self.no_gpu else [])


@dataclass(frozen=True)
class MeasureSettings:
    """:class:`MeasurementOptions` checked and resolved: the location, provider, meters and the open ledger."""

    location: Location
    pue: float | None
    live: str
    zone: str | None
    monitor: MonitorOptions
    ledger: Ledger
    provider: IntensityProvider  # resolved once from location, live and zone

    def tracker(self, name: str, kind: str, command: str, dist=None, **kwargs) -> Tracker:
        """A (not yet started) Tracker with these settings; for a rank of a job (``dist``), a JobTracker."""
        common = dict(kind=kind, command=command, location=self.location, pue=self.pue, live=self.live,
                      zone=self.zone, monitor_options=self.monitor, ledger=self.ledger, provider=self.provider,
                      **kwargs)
        if dist is not None and dist.distributed:
            from greendiff.tracking import JobTracker

            return JobTracker(name, dist=dist, **common)
        return Tracker(name, **common)


def _number(bounds: Bounds, value: str | float | None, flag: str) -> float | None:
    if value is None:
        return None
    return bounds.parse(value, flag) if isinstance(value, str) else bounds.parse(repr(float(value)), flag)


def resolve_settings(options: MeasurementOptions) -> MeasureSettings:
    """Check ``options`` (one-line :class:`UserInputError`) and open the ledger, before any work starts."""
    gpu_indices = None
    if options.gpus is not None:
        try:
            gpu_indices = tuple(GPU_INDEX.parse(g.strip(), "--gpus") for g in options.gpus.split(",") if g.strip())
        except UserInputError as exc:
            raise UserInputError(f"--gpus must be comma-separated GPU indices (0, 1, ...), got {shown(options.gpus)}"
                                 + (" (too many digits)" if "too many digits" in str(exc) else "")) from None
    location = resolve_location(options.country, options.cloud, options.grid)
    pue_value = _number(PUE, options.pue, "--pue")
    provider = resolve_provider(location, options.live, options.zone)  # an unknown country, region, grid or bad trace fails here
    resolve_pue(pue_value, location)  # and a PUE below 1 (flag or environment)
    return MeasureSettings(
        location=location, pue=pue_value, live=options.live, zone=options.zone,
        monitor=MonitorOptions(gpu_indices=gpu_indices, measure_gpus=not options.no_gpu,
                               cpu_watts=_number(CPU_WATTS, options.cpu_watts, "--cpu-watts")),
        ledger=Ledger(options.ledger), provider=provider,
    )
