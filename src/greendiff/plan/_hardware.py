"""On what hardware: energy and time per training sample per device, GPU power-limit sweeps, and
labelled estimates for GPUs that are not here.

The sweep follows Zeus (You et al., NSDI 2023): a few profiled steps at each power limit, then the
limit with the least energy per sample whose time per sample is within the allowed slowdown of the
fastest limit's. The vendor library stays in ``greendiff.energy._nvidia``; here it is a collaborator
with ``set_w`` / ``close``, and measuring is a callable, so the logic is tested with fakes.
"""

from __future__ import annotations

import csv
import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources

from greendiff.display import plain_number
from greendiff.errors import UserInputError
from greendiff.units import joules_to_kwh, kwh_to_joules

#: Rows of the bundled GPU table that are not used, and why (see energy/tables/SOURCES.md).
SKIPPED_GPUS = {"GTX 750": "1111 in a TFLOPS column is its GFLOPS"}
ASSUMED_MFU = 0.10  # small UNets reach little of a big GPU's peak; one measured GPU calibrates it
FLOPS_PER_MAC_TRAINING = 6  # forward 2 FLOPs per MAC; backward about twice the forward (Kaplan et al. 2020)


@dataclass(frozen=True)
class StepCost:
    """Measured cost of training on one device (at one power limit): energy (kWh) and time (s) per sample."""

    device: str
    name: str
    energy_per_sample_kwh: float
    s_per_sample: float
    limit_w: float | None = None
    method: str = ""

    @property
    def power_w(self) -> float:
        return kwh_to_joules(self.energy_per_sample_kwh) / self.s_per_sample if self.s_per_sample > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "power_w": self.power_w}


def measure_cost(run_steps: Callable[[int], None], read_energy_j: Callable[[], float], samples_per_step: int,
                 steps: int, warmup: int, device: str, name: str, limit_w: float | None = None,
                 method: str = "", clock: Callable[[], float] = time.perf_counter) -> StepCost:
    """Run ``warmup`` steps unmeasured (:data:`~greendiff.plan.WARMUP_COST`), then ``steps`` measured ones
    (``run_steps`` must synchronise): the cost per sample leaves the warm-up out unless ``warmup`` is 0."""
    if steps <= 0 or warmup < 0:
        raise UserInputError(f"--train-steps must be positive and --unmetered-steps >= 0, got {steps} and {warmup}")
    run_steps(warmup)
    e0, t0 = read_energy_j(), clock()
    run_steps(steps)
    e1, t1 = read_energy_j(), clock()
    n = steps * samples_per_step
    return StepCost(device, name, joules_to_kwh((e1 - e0) / n), (t1 - t0) / n, limit_w, method)


@dataclass(frozen=True)
class Sweep:
    """A power-limit sweep of one GPU."""

    device: str
    name: str
    permitted: bool
    default_w: float
    costs: tuple[StepCost, ...]
    note: str = ""

    def best(self, max_slowdown: float) -> StepCost:
        """Least energy per sample within ``max_slowdown`` (0.1 = 10 %) of the fastest limit's time."""
        fastest = min(c.s_per_sample for c in self.costs)
        allowed = [c for c in self.costs if c.s_per_sample <= fastest * (1 + max_slowdown) + 1e-15]
        return min(allowed, key=lambda c: (c.energy_per_sample_kwh, -(c.limit_w or 0)))

    def to_dict(self, max_slowdown: float) -> dict:
        return {"device": self.device, "name": self.name, "permitted": self.permitted, "default_w": self.default_w,
                "note": self.note, "costs": [c.to_dict() for c in self.costs],
                "best": self.best(max_slowdown).to_dict(), "max_slowdown": max_slowdown}


def limits_to_try(constraints_w: tuple[float, float], step_w: float = 100.0) -> list[float]:
    """From the highest limit down to the lowest in ``step_w`` steps (the lowest always included)."""
    low, high = constraints_w
    limits, w = [], high
    while w > low + 1e-9:
        limits.append(w)
        w -= step_w
    return [*limits, low]


def sweep_power_limits(control, limits_w: list[float], measure: Callable[[float | None], StepCost],
                       device: str) -> Sweep:
    """Measure at each limit; the GPU's own limit is restored afterwards (``control.close``).

    Args:
        control: A :class:`greendiff.energy.NvidiaPowerLimit` (or a fake): ``set_w``, ``default_w``,
            ``constraints_w``, ``close``.
        limits_w: Limits to try, in W; each must be within the GPU's constraints.
        measure: Measures the cost at the limit now set (it receives the limit, for the record).
    """
    from greendiff.energy import PowerLimitDenied

    low, high = control.constraints_w()
    outside = [w for w in limits_w if not low - 1e-9 <= w <= high + 1e-9]
    if outside:
        control.close()
        raise UserInputError(f"power limit {plain_number(outside[0], 15)} W is outside what {control.name} accepts "
                             f"({plain_number(low, 15)}-{plain_number(high, 15)} W)")
    default_w = control.default_w()
    costs = []
    try:
        for limit in limits_w:
            try:
                control.set_w(limit)
            except PowerLimitDenied as exc:
                if costs:  # a limit refused mid-sweep: keep what was measured
                    return Sweep(device, control.name, True, default_w, tuple(costs), f"stopped: {exc}")
                return Sweep(device, control.name, False, default_w, (measure(None),),
                             f"{exc}. Setting power limits needs root (sudo) or admin rights; "
                             f"reported at the current limit ({control.current_w():.0f} W) only")
            costs.append(measure(limit))
    finally:
        control.close()
    return Sweep(device, control.name, True, default_w, tuple(costs))


# -- estimates for GPUs that are not here ------------------------------------------------------------------

@dataclass(frozen=True)
class GpuSpec:
    name: str
    tdp_w: float
    peak_tflops: float
    peak_kind: str  # "FP16" or "FP32"
    memory_gb: float | None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


@functools.cache
def gpu_table() -> dict[str, GpuSpec]:
    """The bundled GPU table (ML CO2 Impact): GPUs with a TDP and a peak; FP16 peak preferred."""
    specs = {}
    with (resources.files("greendiff.energy") / "tables" / "gpus.csv").open() as f:
        for row in csv.DictReader(f):
            row = {k.strip(): v for k, v in row.items() if k}
            name = row["name"].strip()
            if row.get("type", "").strip() != "gpu" or name in SKIPPED_GPUS:
                continue
            tdp, fp16, fp32 = _number(row.get("tdp_watts")), _number(row.get("TFLOPS16")), _number(row.get("TFLOPS32"))
            fp16 = fp16 if fp16 and (fp32 is None or fp16 >= fp32) else None  # consumer Pascal: FP16 crippled
            peak, kind = (fp16, "FP16") if fp16 else (fp32, "FP32")
            if tdp and peak:
                specs[name] = GpuSpec(name, tdp, peak, kind, _number(row.get("memory")))
    return specs


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[\s\-_/]+", name.lower()) if t and t not in ("nvidia", "tesla", "geforce")]


def match_gpu(name: str) -> GpuSpec | None:
    """The table entry for an NVML name such as ``NVIDIA A100-SXM4-80GB``: its model token must match,
    then the entry sharing most further tokens (``SXM4``, ``PCIe``) wins."""
    wanted = set(_tokens(name))
    scored = [(sum(t in wanted for t in _tokens(key)), -len(key), spec) for key, spec in gpu_table().items()
              if _tokens(key) and _tokens(key)[0] in wanted]
    return max(scored, key=lambda s: s[:2])[2] if scored else None


@dataclass(frozen=True)
class Estimate:
    """Estimated energy (kWh) and time (s) per training sample on a GPU that is not here, and how."""

    name: str
    energy_per_sample_kwh: float
    s_per_sample: float
    method: str


def estimate_gpus(macs_per_sample: float, calibration: StepCost | None = None,
                  calibration_spec: GpuSpec | None = None, assumed_mfu: float = ASSUMED_MFU) -> list[Estimate]:
    """Energy and time per training sample on every GPU of the table, clearly an estimate.

    Time: ``6 x MACs`` FLOPs per sample at a fraction (MFU) of the datasheet peak; energy: that time
    at a fraction of the TDP. Calibrated from a measured GPU when one is given (its MFU and its power as
    a fraction of its TDP), else ``assumed_mfu`` and power = TDP (an upper bound).
    """
    flops = FLOPS_PER_MAC_TRAINING * macs_per_sample
    if calibration is not None and calibration_spec is not None and calibration.s_per_sample > 0:
        mfu = flops / (calibration.s_per_sample * calibration_spec.peak_tflops * 1e12)
        power_frac = min(calibration.power_w / calibration_spec.tdp_w, 1.0)
        how = (f"calibrated on the measured {calibration.name}: MFU {mfu:.2%} of its {calibration_spec.peak_kind} peak, "
               f"power {power_frac:.0%} of TDP")
    else:
        mfu, power_frac = assumed_mfu, 1.0
        how = f"assumed MFU {assumed_mfu:.0%} of the peak, power = TDP (upper bound); no GPU measured to calibrate"
    out = []
    for spec in gpu_table().values():
        s = flops / (spec.peak_tflops * 1e12 * mfu)
        out.append(Estimate(spec.name, joules_to_kwh(s * spec.tdp_w * power_frac), s,
                            f"estimate: {FLOPS_PER_MAC_TRAINING} x MACs per sample at {plain_number(spec.peak_tflops)} TFLOPS "
                            f"{spec.peak_kind} (ML CO2 Impact table), TDP {plain_number(spec.tdp_w)} W; {how}"))
    return sorted(out, key=lambda e: e.energy_per_sample_kwh)


# -- a training step on a chosen device ----------------------------------------------------------------------

def training_steps(config, data, device) -> tuple[Callable[[int], None], float]:
    """A function running ``n`` training steps of ``config`` on ``device`` (synchronised at the end),
    and the model's MACs per sample. ``data``: a :mod:`greendiff.data` set (in memory or streamed), drawn
    batch by batch as the trainer draws it. The same network, space, loss (class-conditional when the config
    is), optimizer and precision as ``greendiff train`` (:func:`greendiff.train.family_for`; a latent run
    encodes each batch here, as with ``--no-latent-cache``); no EMA, logging or checkpoints (they are not the
    device's cost per sample)."""
    import torch

    from greendiff.train import family_for, latent_generator, make_optimizer, resolve_precision, step_generator

    optim, channels = config.optim, data.channels
    family = family_for(config)
    torch.manual_seed(config.run.seed)
    unet = family.build(config, channels)
    macs = family.size(unet, config, channels)[1]
    unet = unet.to(device).train()
    if family.space.latent:
        family.space.to(device)
    optimizer = make_optimizer(unet.parameters(), optim)
    scheduler = family.noise_scheduler(optim)
    precision, _ = resolve_precision(optim.mixed_precision, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    steps = _StepCounter(data, optim.batch_size, config.run.seed)

    def run(n: int) -> None:
        for _ in range(n):
            step, batch = steps.next()
            x0 = family.space.x0(batch, latent_generator(config.run.seed, step)).to(device)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = family.loss(unet, scheduler, x0, step_generator(config.run.seed, step), optim,
                                   **family.loss_inputs(batch, device))
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run, macs


class _StepCounter:
    """The batches of steps 0, 1, 2, ... of ``data`` (as the trainer draws them), one per :meth:`next`."""

    def __init__(self, data, batch_size: int, seed: int) -> None:
        self._batches = data.batches(0, batch_size=batch_size, seed=seed)
        self.step = 0

    def next(self):
        """``(step, its Batch)``."""
        batch = next(self._batches)
        self.step += 1
        return self.step - 1, batch
