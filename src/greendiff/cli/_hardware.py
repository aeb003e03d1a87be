"""``greendiff hardware``: energy and time per training sample on each device here, GPU power-limit
sweeps where permitted, and labelled estimates for other GPUs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from greendiff.cli._options import COUNT0, HARDWARE_STEPS, SLOWDOWN, CpuWatts, check_output, load_config_data, number_option
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text

Opt = typer.Option


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
    if spec is None or spec == "auto":
        return None
    try:
        limits = [float(w) for w in spec.split(",") if w.strip()]
    except ValueError:
        raise UserInputError(f"--limits must be comma-separated watts (e.g. 700,600,500) or auto, got {spec!r}") from None
    if not limits or any(w <= 0 for w in limits):
        raise UserInputError(f"--limits must be positive watts, got {spec!r}")
    return sorted(limits, reverse=True)


def hardware_command(
    config_file: Annotated[Optional[Path], Opt("--config", help="Training config (TOML) to measure.")] = None,
    sets: Annotated[list[str], Opt("--set", help="Any config key, e.g. --set data.resolution=32 (repeatable).")] = [],
    devices: Annotated[Optional[str], Opt("--devices", help="Comma-separated: cpu, cuda:0, ... (default: all here).")] = None,
    steps: Annotated[int, number_option("--steps", bounds=HARDWARE_STEPS, help="Measured training steps per device and per power limit.")] = 20,
    warmup: Annotated[int, number_option("--warmup", bounds=COUNT0, help="Unmeasured steps first (allocator, kernel selection).")] = 5,
    limits: Annotated[Optional[str], Opt("--limits", help="GPU power limits to sweep in W (e.g. 700,600,500,400,300), auto (max to min in 100 W steps) or none.")] = "auto",
    max_slowdown: Annotated[float, number_option("--max-slowdown", bounds=SLOWDOWN, help="Allowed slowdown for the chosen power limit (0.1 = 10 %).")] = 0.1,
    cpu_watts: CpuWatts = None,
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Also write the results as JSON here.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Energy and time per training sample on each device (CPU, each CUDA GPU); a power-limit sweep on NVIDIA
    GPUs where permitted, with the limit that saves most energy within --max-slowdown; estimates for other GPUs."""
    import torch

    from greendiff.carbon import parse_positive
    from greendiff.cli._train import _parse_sets
    from greendiff.energy import EnergyMonitor, MonitorOptions, NvidiaGpuMeter, NvidiaPowerLimit
    from greendiff.plan import estimate_gpus, limits_to_try, match_gpu, measure_cost, sweep_power_limits, training_steps
    from greendiff.train import check_data, resolve_config

    config = resolve_config(config_file, _parse_sets(sets))
    sweep_limits = _limits(limits) if limits != "none" else []
    chosen = _devices(devices)
    cpu_w = parse_positive(cpu_watts, "--cpu-watts") if cpu_watts is not None else None
    if output is not None:
        check_output(output)
    data = load_config_data(config, config_file)
    check_data(config, data)
    console = Console(stderr=True)
    report: dict = {"config": config_file.name if config_file else f"{config.recipe}-{config.model.preset}",
                    "batch_size": config.optim.batch_size, "resolution": config.data.resolution, "devices": [],
                    "sweeps": [], "notes": []}
    calibration = calibration_spec = None
    macs = 0.0
    for device_name in chosen:
        device = torch.device(device_name)
        console.print(f"measuring {device_name}: {warmup} warm-up + {steps} steps of batch {config.optim.batch_size}…",
                      highlight=False)
        run, macs = training_steps(config, data.images, data.channels, device)
        if device.type == "cpu":
            monitor = EnergyMonitor.detect(MonitorOptions(measure_gpus=False, cpu_watts=cpu_w))
            try:
                methods = ", ".join(sorted({d.method for d in monitor.devices}))
                cost = measure_cost(run, lambda: sum(monitor.read().energy_j.values()), config.optim.batch_size, steps,
                                    warmup, "cpu", "CPU package + RAM", method=methods)
            finally:
                monitor.close()
            report["devices"].append(cost.to_dict())
            continue
        index = device.index or 0
        meter = NvidiaGpuMeter.create([index])
        if meter is None:
            report["notes"].append(f"{device_name}: no NVML, so no GPU energy; install nvidia-ml-py and the driver")
            continue
        key = f"gpu:{index}"
        name = meter.devices()[0].name

        def measure(limit_w, _run=run, _meter=meter, _key=key, _name=name, _device=device_name):
            return measure_cost(_run, lambda: _meter.read_energy_j()[_key], config.optim.batch_size, steps, warmup,
                                _device, _name, limit_w, meter.devices()[0].method)
        try:
            control = NvidiaPowerLimit.open(index) if sweep_limits != [] else None
            if control is None:
                cost = measure(None)
                report["devices"].append(cost.to_dict())
                if sweep_limits != []:
                    report["notes"].append(f"{device_name}: power limits not readable through NVML; default limit only")
            else:
                plan = sweep_limits or limits_to_try(control.constraints_w())
                sweep = sweep_power_limits(control, plan, measure, device_name)
                report["sweeps"].append(sweep.to_dict(max_slowdown))
                cost = max(sweep.costs, key=lambda c: c.limit_w or 0)  # the highest limit: as the GPU ships
                report["devices"].append(cost.to_dict())
                if sweep.note:
                    report["notes"].append(f"{device_name}: {sweep.note}")
        finally:
            meter.close()
        if calibration is None and match_gpu(name) is not None:
            calibration, calibration_spec = cost, match_gpu(name)
    if not any(d.startswith("cuda") for d in chosen):
        report["notes"].append("no CUDA GPU measured here" + ("" if torch.cuda.is_available() else " (none visible)"))
    report["macs_per_sample"] = macs
    report["estimates"] = [e.__dict__ for e in estimate_gpus(macs, calibration, calibration_spec)]
    text = json.dumps(report, indent=2)
    if output is not None:
        try:
            atomic_write_text(output, text)
        except OSError as exc:
            raise UserInputError(f"cannot write {output}: {exc.strerror}") from None
    if as_json:
        typer.echo(text)
        return
    render_hardware(report, max_slowdown, Console())


def render_hardware(report: dict, max_slowdown: float, console: Console) -> None:
    table = Table(title=f"measured · {report['config']} · batch {report['batch_size']} · {report['resolution']} px",
                  title_justify="left")
    for col in ("device", "name", "limit", "mJ/sample", "ms/sample", "W", "method"):
        table.add_column(col, justify="right" if col in ("limit", "mJ/sample", "ms/sample", "W") else "left")
    rows = [c for s in report["sweeps"] for c in s["costs"]] or []
    swept = {s["device"] for s in report["sweeps"]}
    rows += [d for d in report["devices"] if d["device"] not in swept]
    for c in rows:
        table.add_row(c["device"], c["name"], "" if c["limit_w"] is None else f"{c['limit_w']:.0f} W",
                      f"{c['energy_j_per_sample'] * 1e3:.3g}", f"{c['s_per_sample'] * 1e3:.3g}", f"{c['power_w']:.0f}",
                      c["method"])
    console.print(table)
    for s in report["sweeps"]:
        best = s["best"]
        top = max(s["costs"], key=lambda c: c["limit_w"] or 0)
        saving = 1 - best["energy_j_per_sample"] / top["energy_j_per_sample"] if top["energy_j_per_sample"] else 0.0
        console.print(f"{s['device']} ({s['name']}): best limit within {max_slowdown:.0%} slowdown: "
                      f"{best['limit_w'] or s['default_w']:.0f} W, {saving:.1%} less energy per sample than at "
                      f"{top['limit_w'] or s['default_w']:.0f} W" if s["permitted"] else
                      f"{s['device']} ({s['name']}): {s['note']}", highlight=False)
    est = Table(title="estimated (not measured) · least energy first", title_justify="left")
    for col in ("GPU", "µJ/sample", "µs/sample"):
        est.add_column(col, justify="left" if col == "GPU" else "right")
    for e in report["estimates"][:10]:
        est.add_row(e["name"], f"{e['energy_j_per_sample'] * 1e6:.3g}", f"{e['s_per_sample'] * 1e6:.3g}")
    console.print(est)
    if report["estimates"]:
        console.print(report["estimates"][0]["method"].split("; ", 1)[-1], style="dim", highlight=False)
    for note in report["notes"]:
        console.print(f"note: {note}", style="dim", highlight=False)
