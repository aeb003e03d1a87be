"""Forecast a training run's energy and time from a short measured profile of its config.

The profile trains the config for a few steps with every phase metered once (training steps,
one evaluation if the config evaluates, one sample grid, checkpoints), then scales each phase to
the planned run: ``steps x J/step + evaluations x J/evaluation + grids x J/grid + checkpoints x J/checkpoint``.

Uncertainty band (relative, combined in quadrature):
- the meter's own uncertainty (the largest of the devices': 0 for counters, 10-30 % for estimates);
- the sampling error of the mean step energy (2 standard errors);
- drift: how far the second half of the profiled steps is from the first (thermal, caches).
The first steps (warm-up: allocator, kernel selection; :data:`WARMUP_COST`) are measured but not used for
the rate; the forecast records how many (``unmetered_steps``), and says when the rate includes them.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from greendiff import numbers
from greendiff.display import plain_number
from greendiff.errors import UserInputError
from greendiff.names import display_path, first_line, one_line, shown
from greendiff.numbers import Bounds, parse_float, parse_int
from greendiff.tracking import PhaseEnergy
from greendiff.units import joules_to_kwh, kwh_to_joules

if TYPE_CHECKING:
    from greendiff.train import EvalEvent, LogEvent, StartEvent

#: Longest device or config label kept from a profile file.
MAX_LABEL_CHARS = 200
#: Why the first steps are left out of a measured rate (profile, hardware), in the words every message uses.
WARMUP_COST = "a new configuration's first steps cost up to ~10x a later one"


def _at_most(hi: float, integer: bool = False, why: str = "") -> Bounds:
    return Bounds(integer=integer, lo=0, hi=hi, why=why,
                  phrase=f"{'a whole number' if integer else 'a number'} >= 0, at most {plain_number(hi, 15)}")


_KWH = _at_most(numbers.MAX_ENERGY_KWH, why=numbers.ENERGY_KWH.why)  # as --energy-kwh and --pause-cost-kwh
_S = _at_most(numbers.HOURS_IN_A_YEAR * 3600.0, why="a year")
_N = _at_most(numbers.MAX_COUNT, integer=True)
#: The range of every number in a profile file: those of the flags it stands for (``--energy-kwh``,
#: ``--hours``, ``--pause-cost-kwh``), and their parts within them (1e300 kWh took a file past the flag's limit).
FILE_BOUNDS: dict[str, Bounds] = {
    "energy_kwh": _KWH, "energy_low_kwh": _KWH, "energy_high_kwh": _KWH,
    "hours": _at_most(numbers.HOURS_IN_A_YEAR, why=numbers.YEAR_HOURS.why),
    "steps": _N, "evaluations": _N, "sample_grids": _N, "checkpoints": _N, "profiled_steps": _N, "unmetered_steps": _N,
    "energy_per_step_kwh": _KWH, "energy_per_eval_kwh": _KWH, "energy_per_grid_kwh": _KWH,
    "energy_per_checkpoint_kwh": _at_most(numbers.MAX_ENERGY_KWH / 2, why="a pause (twice a checkpoint) over 1e9 kWh"),
    "seconds_per_step": _S, "seconds_per_checkpoint": _S,
    "uncertainty_frac": _at_most(100.0, why="a forecast 100 times its own size"),
}
#: Keys of profile files written before every energy was in kWh: each phase's energy in J, read and converted.
LEGACY_J_KEYS = {f"energy_per_{phase}_kwh": f"energy_per_{phase}_j" for phase in ("step", "eval", "grid", "checkpoint")}


def _in_kwh(data: dict) -> dict:
    """A profile's forecast with the per-phase energies of an older file (``energy_per_step_j``) in kWh."""
    out = dict(data)
    for new, old in LEGACY_J_KEYS.items():
        if old in out:
            value = out.pop(old)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            out.setdefault(new, joules_to_kwh(value) if number else value)  # not a number: checked as the new key
    return out


@dataclass(frozen=True)
class Forecast:
    """Forecast energy (IT, kWh) and running time of a planned run, from a profile: one unit per quantity, energy
    in kWh (the run's and each phase's), time in hours for the run and seconds per step and checkpoint."""

    energy_kwh: float
    energy_low_kwh: float
    energy_high_kwh: float
    hours: float
    steps: int
    evaluations: int
    sample_grids: int
    checkpoints: int
    energy_per_step_kwh: float
    seconds_per_step: float
    energy_per_eval_kwh: float
    energy_per_grid_kwh: float
    energy_per_checkpoint_kwh: float
    seconds_per_checkpoint: float
    profiled_steps: int  # warm-up included
    uncertainty_frac: float
    method: str
    device: str = ""
    config: str = ""
    #: The first profiled steps left out of ``energy_per_step_kwh`` and ``seconds_per_step`` (warm-up: allocator,
    #: kernel selection; :data:`WARMUP_COST`). 0: the rate includes them.
    unmetered_steps: int = 0

    @property
    def includes_warmup(self) -> bool:
        """Whether the per-step figures include the first steps' warm-up (no step was left out)."""
        return self.unmetered_steps == 0

    @property
    def pause_cost_kwh(self) -> float:
        """Energy of one pause: a checkpoint written, and about as much again to load it and restart."""
        return 2 * self.energy_per_checkpoint_kwh

    def to_dict(self) -> dict:
        return {**asdict(self), "pause_cost_kwh": self.pause_cost_kwh, "includes_warmup": self.includes_warmup}

    @classmethod
    def from_file(cls, path: Path) -> Forecast:
        """Read a ``greendiff profile`` output; a one-line error naming the file and the key if it is not one.
        Every number is read within the range of its quantity (:data:`FILE_BOUNDS`), as the flags are."""
        where = f"--profile {display_path(path)}"
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserInputError(f"{where}: no such file (write one with 'greendiff profile')") from None
        except RecursionError:  # json's decoder on thousands of nested brackets
            raise UserInputError(f"{where}: not a greendiff profile (nested too deeply)") from None
        except (OSError, ValueError) as exc:  # not UTF-8, not JSON, an integer of over 4,300 digits
            raise UserInputError(f"{where}: not a greendiff profile ({type(exc).__name__}: {first_line(exc)})") from None
        data = raw.get("forecast") if isinstance(raw, dict) else None
        if not isinstance(data, dict):
            raise UserInputError(f"{where}: not a greendiff profile (no 'forecast' object)")
        data = _in_kwh(data)
        values = {}
        for f in fields(cls):
            key = f"{where}: forecast.{f.name}"
            if f.name not in data:
                if f.default is MISSING:
                    raise UserInputError(f"{where}: not a greendiff profile (forecast.{f.name} is missing)")
                continue
            value = data[f.name]
            if f.type == "str":
                if not isinstance(value, str):
                    raise UserInputError(f"{key} must be a string, got {shown(value)}")
                values[f.name] = one_line(value, MAX_LABEL_CHARS)  # shown in tables and JSON
                continue
            bounds = FILE_BOUNDS[f.name]
            if isinstance(value, bool) or not isinstance(value, int if bounds.integer else (int, float)):
                raise UserInputError(f"{key} must be {bounds.describe()}, got {shown(value)}")
            number = parse_int(value, key) if bounds.integer else parse_float(value, key)
            values[f.name] = bounds.check(number, key, value)
        forecast = cls(**values)
        if forecast.energy_kwh <= 0 or forecast.hours <= 0:
            raise UserInputError(f"{where}: the forecast has no energy or no time; profile the run again")
        return forecast


def planned_counts(max_steps: int, eval_every: int, eval_at_end: bool, sample_every: int,
                   checkpoint_every: int) -> tuple[int, int, int]:
    """How many evaluations, sample grids and checkpoints the training loop makes over ``max_steps``.

    Mirrors ``greendiff.train.train``: periodic ones strictly before the last step, then at the end
    an evaluation (if asked), a grid, a checkpoint and the exported pipeline (counted as a checkpoint).
    A periodic evaluation that improves the metric also saves a "best" checkpoint: each is counted
    (an upper bound; while a model trains most evaluations improve). Energy-triggered evaluations
    (``stop.eval_every_kwh``) are added by :func:`forecast`.
    """
    periodic = max_steps // eval_every if eval_every else 0
    evals = periodic + int(eval_at_end and not (eval_every and max_steps % eval_every == 0))
    return evals, (max_steps - 1) // sample_every + 1, (max_steps - 1) // checkpoint_every + 2 + periodic


@dataclass(frozen=True)
class PhaseCosts:
    """One of each non-step phase, measured: energy (J) and time (s)."""

    eval_j: float = 0.0
    eval_s: float = 0.0
    eval_setup_j: float = 0.0  # the real images' features, computed once per run that evaluates
    grid_j: float = 0.0
    grid_s: float = 0.0
    checkpoint_j: float = 0.0
    checkpoint_s: float = 0.0


def forecast(step_energy_j: list[float], step_seconds: list[float], phases: PhaseCosts, counts: tuple[int, int, int],
             steps: int, meter_uncertainty_frac: float, warmup: int, eval_every_kwh: float = 0.0, method: str = "",
             device: str = "", config: str = "") -> Forecast:
    """Scale a profile to a planned run.

    Args:
        step_energy_j: Energy of each profiled step (all metered devices), in order.
        step_seconds: Wall time of each profiled step.
        phases: Energy and time of one evaluation, one sample grid, one checkpoint.
        counts: ``(evaluations, grids, checkpoints)`` of the planned run (:func:`planned_counts`).
        steps: Planned optimizer steps.
        meter_uncertainty_frac: The meters' relative uncertainty.
        warmup: Leading steps left out of the rate.
        eval_every_kwh: The planned run also evaluates each time this much energy is used.
    """
    used_j, used_s = step_energy_j[warmup:], step_seconds[warmup:]
    if len(used_j) < 4:
        raise UserInputError(f"profile too short: {len(step_energy_j)} steps leave {len(used_j)} after the "
                             f"{warmup} warm-up steps; profile at least {warmup + 4} steps")
    per_step_j = statistics.fmean(used_j)
    per_step_s = statistics.fmean(used_s)
    sem = statistics.stdev(used_j) / math.sqrt(len(used_j))
    half = len(used_j) // 2
    drift = abs(statistics.fmean(used_j[half:]) - statistics.fmean(used_j[:half])) / per_step_j if per_step_j > 0 else 0.0
    rel = math.sqrt(meter_uncertainty_frac ** 2 + (2 * sem / per_step_j if per_step_j > 0 else 0.0) ** 2 + drift ** 2)
    evals, grids, checkpoints = counts
    if eval_every_kwh > 0:
        evals += int(joules_to_kwh(steps * per_step_j) // eval_every_kwh)
    total_j = (steps * per_step_j + evals * phases.eval_j + (phases.eval_setup_j if evals else 0.0)
               + grids * phases.grid_j + checkpoints * phases.checkpoint_j)
    total_s = steps * per_step_s + evals * phases.eval_s + grids * phases.grid_s + checkpoints * phases.checkpoint_s
    # A band wider than the forecast itself (rel > 1: a noisy meter, a few steps that drift) has its low end
    # at 0, not below: a run cannot use negative energy, and a negative number is no forecast to plan with.
    low_j = total_j * max(1 - rel, 0.0)
    return Forecast(joules_to_kwh(total_j), joules_to_kwh(low_j), joules_to_kwh(total_j * (1 + rel)), total_s / 3600.0, steps,
                    evals, grids, checkpoints, joules_to_kwh(per_step_j), per_step_s, joules_to_kwh(phases.eval_j),
                    joules_to_kwh(phases.grid_j), joules_to_kwh(phases.checkpoint_j), phases.checkpoint_s,
                    len(step_energy_j), rel, method, device, config, warmup)


def profile_config(config, steps: int):
    """The config to profile: ``steps`` steps, one step per log record, every periodic phase moved to the
    end (so each is measured once, apart from the steps), budgets and early stopping off."""
    import dataclasses

    planned_evals, _, _ = planned_counts(config.run.max_steps, config.stop.eval_every, config.stop.eval_at_end,
                                         config.run.sample_every, config.run.checkpoint_every)
    evaluates = planned_evals > 0 or config.stop.eval_every_kwh > 0
    run = dataclasses.replace(config.run, max_steps=steps, log_every=1, sample_every=steps + 1, checkpoint_every=steps + 1)
    stop = dataclasses.replace(config.stop, eval_every=0, eval_every_kwh=0.0, eval_at_end=evaluates, spread_seeds=1,
                               patience=0, min_gain_per_kwh=0.0, target=0.0, budget_kwh=0.0, budget_kgco2e=0.0)
    return dataclasses.replace(config, run=run, stop=stop)


class _ProfileRecords:
    """The profile's own trainer callback: keeps the typed start event, the log events and each evaluation's
    event (main process), from which :func:`run_profile` forecasts."""

    def __init__(self) -> None:
        self.start: StartEvent | None = None
        self.logs: list[LogEvent] = []
        self.evals: list[EvalEvent] = []

    def on_train_start(self, trainer, event: StartEvent) -> None:
        if trainer.is_main:
            self.start = event

    def on_log(self, trainer, event: LogEvent) -> None:
        if trainer.is_main:
            self.logs.append(event)

    def on_evaluation(self, trainer, event: EvalEvent) -> None:
        self.evals.append(event)


#: A phase the profile opened no window of (no evaluation, no sample grid).
_NO_WINDOWS = PhaseEnergy("", 0, 0.0, 0.0, None, 0.0)


def run_profile(config, data, tracker, run_dir: Path, steps: int, warmup: int, config_name: str = "",
                callbacks: Sequence = (), family=None) -> Forecast:
    """Train ``config`` for ``steps`` steps under ``tracker`` and forecast the full run.

    Args:
        tracker: A started :class:`greendiff.tracking.Tracker`; it is stopped here.
        run_dir: Scratch directory for the profile's checkpoints and samples.
        steps: Profiled training steps, ``warmup`` of them left out of the rate.
        config_name: The config's label in the forecast.
        callbacks: More trainer callbacks (a progress bar), after the profile's own.
        family: The model family (default: the config's; a fine-tune passes its own).
    """
    from greendiff.train import train

    if steps <= warmup + 3:
        raise UserInputError(f"--train-steps must be more than {warmup + 3} (the first {warmup} are warm-up), got {steps}")
    seen = _ProfileRecords()
    result = train(profile_config(config, steps), run_dir, data, tracker, callbacks=[seen, *callbacks], family=family)
    summary = tracker.stop("completed")
    if result.status != "completed":
        raise UserInputError(f"the profile did not complete ({result.status} at step {result.step})")
    cumulative_j = [0.0] + [kwh_to_joules(e.energy_kwh) for e in seen.logs]
    step_j = [b - a for a, b in zip(cumulative_j, cumulative_j[1:])]
    step_s = [config.optim.batch_size / e.samples_per_s for e in seen.logs]
    eval_j = kwh_to_joules(seen.evals[0].eval_energy_kwh) if seen.evals else 0.0
    eval_phase, grid, checkpoint = (summary.phase(name) or _NO_WINDOWS for name in ("eval", "sample", "checkpoint"))
    costs = PhaseCosts(
        eval_j=eval_j, eval_s=eval_phase.duration_s * eval_j / eval_phase.energy_j if eval_j > 0 else 0.0,
        eval_setup_j=max(eval_phase.energy_j - eval_j, 0.0), grid_j=grid.energy_j, grid_s=grid.duration_s,
        checkpoint_j=checkpoint.energy_j / checkpoint.count, checkpoint_s=checkpoint.duration_s / checkpoint.count)
    counts = planned_counts(config.run.max_steps, config.stop.eval_every, config.stop.eval_at_end,
                            config.run.sample_every, config.run.checkpoint_every)
    meter_frac = max((d.uncertainty_frac for d in summary.devices), default=0.0)
    device = seen.start.device if seen.start is not None else ""
    return forecast(step_j, step_s, costs, counts, config.run.max_steps, meter_frac, warmup, config.stop.eval_every_kwh,
                    ", ".join(summary.methods), device, config_name)
