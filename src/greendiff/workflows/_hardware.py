"""Hardware profiling: energy and time per training sample on each device here, GPU power-limit sweeps
where permitted, and labelled estimates for other GPUs.

Example:
    >>> from greendiff.workflows import HardwareJob, run_hardware
    >>> outcome = run_hardware(HardwareJob(overrides={"model.preset": "pico"}, devices="cpu", steps=4, warmup=1))  # doctest: +SKIP
    >>> outcome.devices[0].energy_per_sample_kwh  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greendiff.errors import UserInputError
from greendiff.workflows._conditioning import resolve_conditioning
from greendiff.workflows._inputs import check_output, default_job_note, load_config_data, write_output
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress

if TYPE_CHECKING:
    from greendiff.plan import Estimate, StepCost, Sweep
    from greendiff.tracking import RunSummary


@dataclass(frozen=True)
class HardwareJob:
    """A hardware profile of a training config.

    Args:
        config_file: training config (TOML) to measure.
        overrides: dotted config keys over the file.
        devices: comma-separated ``cpu``, ``cuda:0``, ... (None: all here that ``measurement`` meters: no GPU
            with ``no_gpu``, only ``gpus`` when given).
        steps: measured training steps per device and per power limit (``--train-steps``).
        warmup: unmeasured steps first (``--unmetered-steps``): allocator, kernel selection
            (:data:`~greendiff.plan.WARMUP_COST`), so with 0 the figures include that warm-up.
        limits: GPU power limits to sweep in W (``"700,600"``), ``auto`` (max to min in 100 W steps) or ``none``.
        max_slowdown: allowed slowdown for the chosen power limit (0.1 = 10 %).
        output: also write the report as JSON here (checked before any work; a file there is replaced, and the
            outcome says so).
        measurement: the shared measurement options: ``cpu_watts`` (CPU package power at full load), the GPUs
            metered, the location the profile's own energy is priced at and the ledger that records it.
    """

    config_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    devices: str | None = None
    steps: int = 20
    warmup: int = 5
    limits: str | None = "auto"
    max_slowdown: float = 0.1
    output: Path | None = None
    measurement: MeasurementOptions = field(default_factory=MeasurementOptions)


@dataclass(frozen=True)
class SweepResult:
    """A GPU's power-limit ``sweep`` with its ``best`` limit within the slowdown allowed, the ``top`` (highest,
    as the GPU ships) and ``saving_frac``: the energy per sample saved at ``best`` against ``top`` (0.2 = 20 %)."""

    sweep: Sweep
    best: StepCost
    top: StepCost
    saving_frac: float

    @classmethod
    def of(cls, sweep: Sweep, max_slowdown: float) -> SweepResult:
        best, top = sweep.best(max_slowdown), max(sweep.costs, key=lambda c: c.limit_w or 0)
        saving = 1 - best.energy_per_sample_kwh / top.energy_per_sample_kwh if top.energy_per_sample_kwh else 0.0
        return cls(sweep, best, top, saving)


@dataclass(frozen=True)
class HardwareOutcome:
    """What ``greendiff hardware`` measured: each device's cost at its default limit (``devices``), the GPU
    sweeps, notes, the model's MACs per sample, labelled estimates for other GPUs (least energy first), and the
    ledger run of the profile itself (``summary``). Each figure per sample is over ``train_steps`` measured steps
    after ``unmetered_steps`` unmeasured ones (warm-up: 0 means the figures include it); ``replaced``: ``--output``
    replaced a file that was there."""

    config: str
    batch_size: int
    resolution: int
    max_slowdown: float
    devices: tuple[StepCost, ...]
    sweeps: tuple[SweepResult, ...]
    notes: tuple[str, ...]
    macs_per_sample: float
    estimates: tuple[Estimate, ...]
    summary: RunSummary | None = None
    train_steps: int = 0
    unmetered_steps: int = 0
    replaced: bool = False

    @property
    def includes_warmup(self) -> bool:
        """Whether the per-sample figures include the first steps' warm-up (no unmetered steps ran first)."""
        return self.unmetered_steps == 0

    def to_dict(self) -> dict:
        """The report as JSON (``--json``, ``--output``)."""
        return {"config": self.config, "batch_size": self.batch_size, "resolution": self.resolution,
                "train_steps": self.train_steps, "unmetered_steps": self.unmetered_steps,
                "includes_warmup": self.includes_warmup,
                "devices": [c.to_dict() for c in self.devices],
                "sweeps": [s.sweep.to_dict(self.max_slowdown) for s in self.sweeps], "notes": list(self.notes),
                "macs_per_sample": self.macs_per_sample, "estimates": [e.__dict__ for e in self.estimates]}


@dataclass
class _Measured:
    """What the device loop has measured so far (one per :func:`run_hardware` call)."""

    devices: list = field(default_factory=list)
    sweeps: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _devices(spec: str | None, settings) -> list[str]:
    import torch

    visible = range(torch.cuda.device_count())
    gpus = [] if not settings.monitor.measure_gpus else [
        i for i in visible if settings.monitor.gpu_indices is None or i in settings.monitor.gpu_indices]
    available = ["cpu"] + [f"cuda:{i}" for i in gpus]
    if spec is None:
        return available
    wanted = [d.strip().lower() for d in spec.split(",") if d.strip()]
    missing = [d for d in wanted if d not in available]
    if missing or not wanted:
        raise UserInputError(f"--devices: {missing[0] if missing else spec!r} is not available here; "
                             f"available: {', '.join(available)}")
    return wanted
def _limits(spec: str | None) -> list[float] | None:
    """The limits to sweep, highest first; None: chosen from the GPU's range; []: no sweep."""
    if spec == "none":
        return []
    if spec is None or spec == "auto":
        return None
    try:
        limits = [float(w) for w in spec.split(",") if w.strip()]
    except ValueError:
        raise UserInputError(f"--limits must be comma-separated watts (e.g. 700,600,500) or auto, got {spec!r}") from None
    if not limits or any(w <= 0 for w in limits):
        raise UserInputError(f"--limits must be positive watts, got {spec!r}")
    return sorted(limits, reverse=True)


def run_hardware(job: HardwareJob, progress: Progress | None = None) -> HardwareOutcome:
    """Measure ``job``'s config on each device under one ledger run (kind ``hardware``); the outcome is also
    written to ``job.output`` as JSON when given."""
    import torch

    from greendiff.plan import estimate_gpus, match_gpu
    from greendiff.train import check_data, resolve_config

    progress = progress or NullProgress()
    config = resolve_config(job.config_file, dict(job.overrides))
    sweep_limits = _limits(job.limits)
    settings = resolve_settings(job.measurement)
    chosen = _devices(job.devices, settings)
    if job.output is not None:
        check_output(job.output)
    data = load_config_data(config, job.config_file)
    config = resolve_conditioning(config, data)
    check_data(config, data)
    label = job.config_file.name if job.config_file else f"{config.recipe}-{config.model.preset}"
    if job.config_file is None:
        progress.note(default_job_note(config, "measuring"))
    found = _Measured()
    calibration = calibration_spec = None
    macs = 0.0
    if data.placement:
        progress.note(data.placement)
    with settings.tracker(f"hardware {label}", "hardware", f"greendiff hardware --train-steps {job.steps}") as tracker:
        for device_name in chosen:
            progress.note(f"measuring {device_name}: {job.warmup} unmetered (warm-up) + {job.steps} measured steps "
                          f"of batch {config.optim.batch_size}…")
            cost, macs, name = _measure_device(job, config, data, device_name, sweep_limits, settings.monitor.cpu_watts, found)
            if calibration is None and cost is not None and name is not None and match_gpu(name) is not None:
                calibration, calibration_spec = cost, match_gpu(name)
    if not any(d.startswith("cuda") for d in chosen):
        found.notes.append("no CUDA GPU measured here" + ("" if torch.cuda.is_available() else " (none visible)"))
    outcome = HardwareOutcome(label, config.optim.batch_size, config.data.resolution, job.max_slowdown,
                              tuple(found.devices), tuple(SweepResult.of(s, job.max_slowdown) for s in found.sweeps),
                              tuple(found.notes), macs, tuple(estimate_gpus(macs, calibration, calibration_spec)),
                              tracker.summary, job.steps, job.warmup, job.output is not None and job.output.exists())
    if job.output is not None:
        write_output(job.output, outcome.to_dict())
    return outcome


def _measure_device(job: HardwareJob, config, data, device_name: str, sweep_limits, cpu_w, found: _Measured):
    """Measure one device into ``found``; ``(its cost at the default limit or None, MACs per sample, GPU name or None)``."""
    import torch

    from greendiff.energy import EnergyMonitor, MonitorOptions, NvidiaGpuMeter, NvidiaPowerLimit
    from greendiff.plan import limits_to_try, measure_cost, sweep_power_limits, training_steps

    device = torch.device(device_name)
    batch = config.optim.batch_size
    run, macs = training_steps(config, data, device)
    if device.type == "cpu":
        monitor = EnergyMonitor.detect(MonitorOptions(measure_gpus=False, cpu_watts=cpu_w))
        try:
            methods = ", ".join(sorted({d.method for d in monitor.devices}))
            cost = measure_cost(run, lambda: sum(monitor.read().energy_j.values()), batch, job.steps,
                                job.warmup, "cpu", "CPU package + RAM", method=methods)
        finally:
            monitor.close()
        found.devices.append(cost)
        return cost, macs, None
    index = device.index or 0
    meter = NvidiaGpuMeter.create([index])
    if meter is None:
        found.notes.append(f"{device_name}: no NVML, so no GPU energy; install nvidia-ml-py and the driver")
        return None, macs, None
    key, name = f"gpu:{index}", meter.devices()[0].name

    def measure(limit_w):
        return measure_cost(run, lambda: meter.read_energy_j()[key], batch, job.steps, job.warmup,
                            device_name, name, limit_w, meter.devices()[0].method)
    try:
        control = NvidiaPowerLimit.open(index) if sweep_limits != [] else None
        if control is None:
            cost = measure(None)
            found.devices.append(cost)
            if sweep_limits != []:
                found.notes.append(f"{device_name}: power limits not readable through NVML; default limit only")
        else:
            sweep = sweep_power_limits(control, sweep_limits or limits_to_try(control.constraints_w()), measure, device_name)
            found.sweeps.append(sweep)
            cost = max(sweep.costs, key=lambda c: c.limit_w or 0)  # the highest limit: as the GPU ships
            found.devices.append(cost)
            if sweep.note:
                found.notes.append(f"{device_name}: {sweep.note}")
    finally:
        meter.close()
    return cost, macs, name
