"""Hardware profiling: energy and time per training sample on each device here, GPU power-limit sweeps
where permitted, and labelled estimates for other GPUs.

Example:
    >>> from greendiff.workflows import HardwareJob, run_hardware
    >>> report = run_hardware(HardwareJob(overrides={"model.preset": "pico"}, devices="cpu", steps=4, warmup=1))  # doctest: +SKIP
    >>> report["devices"][0]["energy_j_per_sample"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.workflows._conditioning import resolve_conditioning
from greendiff.workflows._inputs import check_output, load_config_data
from greendiff.workflows._measurement import CPU_WATTS
from greendiff.workflows._progress import NullProgress, Progress


@dataclass(frozen=True)
class HardwareJob:
    """A hardware profile of a training config.

    Args:
        config_file: training config (TOML) to measure.
        overrides: dotted config keys over the file.
        devices: comma-separated ``cpu``, ``cuda:0``, ... (None: all here).
        steps: measured training steps per device and per power limit.
        warmup: unmeasured steps first (allocator, kernel selection).
        limits: GPU power limits to sweep in W (``"700,600"``), ``auto`` (max to min in 100 W steps) or ``none``.
        max_slowdown: allowed slowdown for the chosen power limit (0.1 = 10 %).
        cpu_watts: CPU package power at full load in W (None: the TDP table or RAPL).
        output: also write the report as JSON here (checked before any work).
    """

    config_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    devices: str | None = None
    steps: int = 20
    warmup: int = 5
    limits: str | None = "auto"
    max_slowdown: float = 0.1
    cpu_watts: str | float | None = None
    output: Path | None = None


def _devices(spec: str | None) -> list[str]:
    import torch

    available = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
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


def run_hardware(job: HardwareJob, progress: Progress | None = None) -> dict:
    """Measure ``job``'s config on each device; the report (config, batch_size, resolution, devices, sweeps,
    notes, macs_per_sample, estimates), also written to ``job.output`` when given."""
    import torch

    from greendiff.plan import estimate_gpus, match_gpu
    from greendiff.train import check_data, resolve_config

    progress = progress or NullProgress()
    config = resolve_config(job.config_file, dict(job.overrides))
    sweep_limits = _limits(job.limits)
    chosen = _devices(job.devices)
    cpu_w = CPU_WATTS.parse(str(job.cpu_watts), "--cpu-watts") if job.cpu_watts is not None else None
    if job.output is not None:
        check_output(job.output)
    data = load_config_data(config, job.config_file)
    config = resolve_conditioning(config, data)
    check_data(config, data)
    report: dict = {"config": job.config_file.name if job.config_file else f"{config.recipe}-{config.model.preset}",
                    "batch_size": config.optim.batch_size, "resolution": config.data.resolution, "devices": [],
                    "sweeps": [], "notes": []}
    calibration = calibration_spec = None
    macs = 0.0
    if data.placement:
        progress.note(data.placement)
    for device_name in chosen:
        progress.note(f"measuring {device_name}: {job.warmup} warm-up + {job.steps} steps of batch {config.optim.batch_size}…")
        cost, macs, name = _measure_device(job, config, data, device_name, sweep_limits, cpu_w, report)
        if calibration is None and cost is not None and name is not None and match_gpu(name) is not None:
            calibration, calibration_spec = cost, match_gpu(name)
    if not any(d.startswith("cuda") for d in chosen):
        report["notes"].append("no CUDA GPU measured here" + ("" if torch.cuda.is_available() else " (none visible)"))
    report["macs_per_sample"] = macs
    report["estimates"] = [e.__dict__ for e in estimate_gpus(macs, calibration, calibration_spec)]
    if job.output is not None:
        try:
            atomic_write_text(job.output, json.dumps(report, indent=2))
        except OSError as exc:
            raise UserInputError(f"cannot write {job.output}: {exc.strerror}") from None
    return report


def _measure_device(job: HardwareJob, config, data, device_name: str, sweep_limits, cpu_w, report: dict):
    """Measure one device into ``report``; ``(its cost at the default limit or None, MACs per sample, GPU name or None)``."""
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
        report["devices"].append(cost.to_dict())
        return cost, macs, None
    index = device.index or 0
    meter = NvidiaGpuMeter.create([index])
    if meter is None:
        report["notes"].append(f"{device_name}: no NVML, so no GPU energy; install nvidia-ml-py and the driver")
        return None, macs, None
    key, name = f"gpu:{index}", meter.devices()[0].name

    def measure(limit_w):
        return measure_cost(run, lambda: meter.read_energy_j()[key], batch, job.steps, job.warmup,
                            device_name, name, limit_w, meter.devices()[0].method)
    try:
        control = NvidiaPowerLimit.open(index) if sweep_limits != [] else None
        if control is None:
            cost = measure(None)
            report["devices"].append(cost.to_dict())
            if sweep_limits != []:
                report["notes"].append(f"{device_name}: power limits not readable through NVML; default limit only")
        else:
            sweep = sweep_power_limits(control, sweep_limits or limits_to_try(control.constraints_w()), measure, device_name)
            report["sweeps"].append(sweep.to_dict(job.max_slowdown))
            cost = max(sweep.costs, key=lambda c: c.limit_w or 0)  # the highest limit: as the GPU ships
            report["devices"].append(cost.to_dict())
            if sweep.note:
                report["notes"].append(f"{device_name}: {sweep.note}")
    finally:
        meter.close()
    return cost, macs, name
