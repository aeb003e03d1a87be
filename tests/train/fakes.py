"""Callbacks the trainer's tests plug in where a caller would (Ctrl-C, a tuner's pruner, a progress bar)."""

from __future__ import annotations

from greendiff.energy import DeviceInfo, Meter
from greendiff.train import Stop, TrainerCallback, _family


class InterruptAfter(TrainerCallback):
    """Ctrl-C as the trainer sees it: ``should_interrupt`` answers ``False`` to the first ``polls`` polls
    (one before every step), ``True`` from then on, so the run ends ``interrupted`` at step ``polls``."""

    def __init__(self, polls: int) -> None:
        self.polls, self.asked = polls, 0

    def should_interrupt(self) -> bool:
        self.asked += 1
        return self.asked > self.polls


class EvalRecorder(TrainerCallback):
    """A tuner's pruner: records each evaluation as ``(step, fid, final)`` and stops the run with ``reason``
    once an FID is above ``prune_above`` (``None``: never)."""

    def __init__(self, prune_above: float | None = None, reason: str = "pruned") -> None:
        self.prune_above, self.reason, self.told = prune_above, reason, []

    def on_evaluation(self, trainer, event) -> Stop | None:
        self.told.append((event.step, event.scores["fid"], event.final))
        return Stop(self.reason) if self.prune_above is not None and event.scores["fid"] > self.prune_above else None


class ChargedGpu(Meter):
    """A meter the test's objective charges: ``first_kwh`` for the first step (a new configuration's warm-up),
    ``later_kwh`` for each later one. Pass :meth:`objective` to ``train``."""

    def __init__(self, first_kwh: float = 3.0, later_kwh: float = 1.0) -> None:
        self.first_kwh, self.later_kwh = first_kwh, later_kwh
        self.energy_j = 0.0
        self.steps = 0

    def devices(self):
        return [DeviceInfo("gpu:0", "gpu", "FakeGPU", "counter", "device")]

    def read_energy_j(self):
        return {"gpu:0": self.energy_j}

    def charge(self, kwh: float) -> None:
        self.energy_j += kwh * 3.6e6

    def objective(self, *args):
        self.steps += 1
        self.charge(self.first_kwh if self.steps == 1 else self.later_kwh)
        return _family.diffusion_loss(*args)


class CostlySetup:
    """An evaluator whose reference features (``prepare``, before the first step) cost ``setup_kwh`` on ``gpu``;
    its scores are free."""

    def __init__(self, gpu: ChargedGpu, setup_kwh: float) -> None:
        self.gpu, self.setup_kwh = gpu, setup_kwh

    def prepare(self, images) -> None:
        self.gpu.charge(self.setup_kwh)

    def evaluate(self, draw, seeds=1) -> dict:
        return {"fid": 10.0, "kid": 0.0}
