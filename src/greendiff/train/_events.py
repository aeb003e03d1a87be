"""What the training loop tells its callbacks: one frozen dataclass per event.

Each event's :meth:`to_dict` is its ``metrics.jsonl`` record (reports, tests and the CLI's progress bar
read those records), written unless the event's ``recorded`` is ``False`` (progress ticks; the
:class:`StoppedEvent`, whose record is the :class:`EndEvent`'s: one ``stopped`` record per stop). Units are
those of every machine-readable output: energy in kWh, CO2e in kg. ``hook`` names the
:class:`~greendiff.train.TrainerCallback` method that receives it besides ``on_event``.

Example:
    >>> LogEvent(step=3, loss=0.5, lr=1e-3, samples_per_s=800.0, energy_kwh=2e-6, emissions_kg=1e-6, ema_decay=None).to_dict()["emissions_kg"]
    1e-06
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import ClassVar


@dataclass(frozen=True)
class StartEvent:
    """The run (or a resumed segment of it) starts at ``step``: the model's size and the precision used.

    ``macs_per_image`` is one UNet forward on one image; a sampled image costs ``guidance_forwards`` of them
    per sampler step (2 with classifier-free guidance at a scale other than 0 or 1). ``placement`` is the
    data's one line: its decoded size and whether it is held in memory or streamed from disk.
    """

    hook: ClassVar[str] = "on_train_start"
    recorded: ClassVar[bool] = True
    step: int
    params: int
    macs_per_image: int
    precision: str
    precision_reason: str
    device: str
    dataset: str
    skipped_files: int
    processes: int
    effective_batch_size: int
    lr: float
    lr_scaling: str
    placement: str = ""
    guidance_forwards: int = 1
    model: str = ""  # e.g. "DiT nano (patch 2) on 4x8x8 latents, flow"; "": an older record (a UNet)

    def to_dict(self) -> dict:
        return {"event": "start", **asdict(self)}


@dataclass(frozen=True)
class LogEvent:
    """Progress every ``run.log_every`` steps: ``energy_kwh`` and ``emissions_kg`` (kgCO2e) are the run's totals
    so far (earlier segments of a resumed run included), the emissions priced like the ledger prices the run.

    ``samples_per_s`` is the throughput since the previous record. ``warmup`` is ``True`` when that interval
    holds this segment's first step: the warm-up (:data:`greendiff.plan.WARMUP_COST`: allocation,
    kernel selection, caches), so that figure is not the steady state (the next record's is).
    ``projected_energy_kwh`` is the run's energy at ``max_steps`` if the segment's energy per step holds
    (:class:`~greendiff.train._pace.StepEnergy`: its own steps, the setup before them left out);
    ``projected_with_warmup``: projected from the first step alone, so it includes the warm-up and errs high.
    """

    hook: ClassVar[str] = "on_log"
    recorded: ClassVar[bool] = True
    step: int
    loss: float
    lr: float
    samples_per_s: float
    energy_kwh: float
    emissions_kg: float
    ema_decay: float | None
    warmup: bool = False
    projected_energy_kwh: float | None = None
    projected_with_warmup: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvalEvent:
    """One evaluation of the EMA weights: ``scores`` (``fid``, ``kid``, ...; the first also ``spread``),
    the run's energy up to and including it, and the evaluation's own energy."""

    hook: ClassVar[str] = "on_evaluation"
    recorded: ClassVar[bool] = True
    step: int
    energy_kwh: float
    eval_energy_kwh: float
    scores: dict = field(default_factory=dict)
    best: bool = False
    final: bool = False  # the closing evaluation (``stop.eval_at_end``)

    def to_dict(self) -> dict:
        return {"event": "eval", "step": self.step, "energy_kwh": self.energy_kwh,
                "eval_energy_kwh": self.eval_energy_kwh, **self.scores, "best": self.best,
                **({"final": True} if self.final else {})}


@dataclass(frozen=True)
class ForecastEvent:
    """Projected totals at ``max_steps`` once the budgets' warm-up is over (reported once per segment)."""

    hook: ClassVar[str] = "on_forecast"
    recorded: ClassVar[bool] = True
    step: int
    energy_kwh: float
    emissions_kg: float
    energy_kwh_low: float
    energy_kwh_high: float

    def to_dict(self) -> dict:
        return {"event": "forecast", **asdict(self)}


@dataclass(frozen=True)
class PauseStartEvent:
    """A carbon-aware pause begins at ``step`` (checkpointed): planned from ``began`` to ``until`` (UTC, the
    controller's clock), and ``reason``, why (the intensity against the threshold, or the schedule's plan)."""

    hook: ClassVar[str] = "on_pause_start"
    recorded: ClassVar[bool] = True
    step: int
    began: datetime
    until: datetime
    reason: str = ""

    def to_dict(self) -> dict:
        return {"event": "pause_start", "step": self.step, "from": self.began.isoformat(),
                "until": self.until.isoformat(), "reason": self.reason}


@dataclass(frozen=True)
class Waited:
    """What one wait of a pause did (:meth:`greendiff.train.Trainer.pause` returns it): from ``began`` to ``ended``
    (the waiting clock's times, UTC); ``interrupted``: a stop request or Ctrl-C ended it before the planned time.
    Not an event: the :class:`PauseEvent` raised after the wait carries it."""

    began: datetime
    ended: datetime
    interrupted: bool = False


@dataclass(frozen=True)
class PauseEvent:
    """A carbon-aware pause ended: checkpointed at ``step``, waited from ``began`` to ``ended`` (UTC; planned
    until ``until``); ``interrupted``: Ctrl-C or a stop signal cut it short (the run then ends interrupted)."""

    hook: ClassVar[str] = "on_pause"
    recorded: ClassVar[bool] = True
    step: int
    began: datetime
    until: datetime
    ended: datetime | None = None
    interrupted: bool = False

    @property
    def waited_s(self) -> float:
        """Seconds waited (to ``until`` when the end is not given)."""
        return ((self.ended or self.until) - self.began).total_seconds()

    def to_dict(self) -> dict:
        return {"event": "pause", "step": self.step, "from": self.began.isoformat(), "until": self.until.isoformat(),
                "ended": (self.ended or self.until).isoformat(), "waited_s": self.waited_s,
                **({"interrupted": True} if self.interrupted else {})}


@dataclass(frozen=True)
class PhaseProgress:
    """Long work inside the loop moved on: ``phase`` ``"eval"`` (``done`` of ``total`` images sampled for an
    evaluation) or ``"wait"`` (``done`` of ``total`` seconds of a carbon-aware pause); ``info``: a short
    text for a progress bar. Raised on the main process only; not a ``metrics.jsonl`` record."""

    hook: ClassVar[str] = "on_phase_progress"
    recorded: ClassVar[bool] = False
    phase: str
    done: float
    total: float
    info: str = ""

    def to_dict(self) -> dict:
        return {"event": "progress", **asdict(self)}


@dataclass(frozen=True)
class StoppedEvent:
    """A stopping rule (or a tuner) ended the run at ``step``; the final checkpoint is written. Its record is
    the :class:`EndEvent`'s (``{"event": "stopped", "step", "reason"}``, once)."""

    hook: ClassVar[str] = "on_stopped"
    recorded: ClassVar[bool] = False
    step: int
    reason: str

    def to_dict(self) -> dict:
        return {"event": "stopped", "step": self.step, "reason": self.reason}


@dataclass(frozen=True)
class RanksInSyncEvent:
    """Every process's parameter checksum at the end of a job (data parallelism keeps them equal)."""

    hook: ClassVar[str] = "on_ranks_in_sync"
    recorded: ClassVar[bool] = True
    processes: int
    checksums: list
    equal: bool

    def to_dict(self) -> dict:
        return {"event": "ranks_in_sync", **asdict(self)}


@dataclass(frozen=True)
class EndEvent:
    """The run ended: ``status`` is completed, stopped, interrupted, diverged or failed (the data failed: a file
    gone or corrupt, a loader worker killed); the last three with their ``reason``."""

    hook: ClassVar[str] = "on_train_end"
    recorded: ClassVar[bool] = True
    status: str
    step: int
    reason: str = ""

    def to_dict(self) -> dict:
        if self.status in ("stopped", "diverged", "failed"):
            return {"event": self.status, "step": self.step, "reason": self.reason}
        return {"event": self.status, "step": self.step}


TrainEvent = (StartEvent | LogEvent | EvalEvent | ForecastEvent | PauseStartEvent | PauseEvent | PhaseProgress | StoppedEvent
              | RanksInSyncEvent | EndEvent)
