"""What the training loop tells its callbacks: one frozen dataclass per event.

Each event's :meth:`to_dict` is its ``metrics.jsonl`` record, key for key as the loop has always written
them (reports, tests and the CLI's progress bar read those records). ``hook`` names the
:class:`~greendiff.train.TrainerCallback` method that receives it besides ``on_event``.

Example:
    >>> LogEvent(step=3, loss=0.5, lr=1e-3, samples_per_s=800.0, energy_kwh=2e-6, co2e_g=1e-3, ema_decay=None).to_dict()["co2e_g"]
    0.001
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

    def to_dict(self) -> dict:
        return {"event": "start", **asdict(self)}


@dataclass(frozen=True)
class LogEvent:
    """Progress every ``run.log_every`` steps: ``energy_kwh`` and ``co2e_g`` are the run's totals so far
    (earlier segments of a resumed run included); ``co2e_g`` is priced like the ledger prices the run."""

    hook: ClassVar[str] = "on_log"
    step: int
    loss: float
    lr: float
    samples_per_s: float
    energy_kwh: float
    co2e_g: float
    ema_decay: float | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvalEvent:
    """One evaluation of the EMA weights: ``scores`` (``fid``, ``kid``, ...; the first also ``spread``),
    the run's energy up to and including it, and the evaluation's own energy."""

    hook: ClassVar[str] = "on_evaluation"
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
    step: int
    energy_kwh: float
    emissions_kg: float
    energy_kwh_low: float
    energy_kwh_high: float

    def to_dict(self) -> dict:
        return {"event": "forecast", **asdict(self)}


@dataclass(frozen=True)
class PauseEvent:
    """A carbon-aware pause: checkpointed at ``step``, waited from ``began`` to ``until`` (UTC)."""

    hook: ClassVar[str] = "on_pause"
    step: int
    began: datetime
    until: datetime

    def to_dict(self) -> dict:
        return {"event": "pause", "step": self.step, "from": self.began.isoformat(), "until": self.until.isoformat()}


@dataclass(frozen=True)
class StoppedEvent:
    """A stopping rule (or a tuner) ended the run at ``step``; the final checkpoint is written."""

    hook: ClassVar[str] = "on_stopped"
    step: int
    reason: str

    def to_dict(self) -> dict:
        return {"event": "stopped", "step": self.step, "reason": self.reason}


@dataclass(frozen=True)
class RanksInSyncEvent:
    """Every process's parameter checksum at the end of a job (data parallelism keeps them equal)."""

    hook: ClassVar[str] = "on_ranks_in_sync"
    processes: int
    checksums: list
    equal: bool

    def to_dict(self) -> dict:
        return {"event": "ranks_in_sync", **asdict(self)}


@dataclass(frozen=True)
class EndEvent:
    """The run ended: ``status`` is completed, stopped, interrupted, diverged or failed (the data failed: a file
    gone or corrupt, a loader worker killed); the last two with their ``reason``."""

    hook: ClassVar[str] = "on_train_end"
    status: str
    step: int
    reason: str = ""

    def to_dict(self) -> dict:
        if self.status in ("diverged", "failed"):
            return {"event": self.status, "step": self.step, "reason": self.reason}
        return {"event": self.status, "step": self.step}


TrainEvent = StartEvent | LogEvent | EvalEvent | ForecastEvent | PauseEvent | StoppedEvent | RanksInSyncEvent | EndEvent
