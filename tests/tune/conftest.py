from __future__ import annotations

from pathlib import Path

import pytest

from greendiff.train import EvalEvent
from greendiff.tune import StudySpec, TrialOutcome

BASE = {"model": {"preset": "nano", "block_out_channels": [8, 16]}, "data": {"dataset": "digits", "resolution": 8},
        "optim": {"batch_size": 16, "sample_steps": 4}, "stop": {"eval_samples": 8}, "run": {"max_steps": 30}}
LR = {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}


@pytest.fixture
def spec():
    def make(**kw):
        return StudySpec(**{"trials": 4, "trial_budget_kwh": 1e-3, "reports": 3, "pruner": "median", "base": BASE,
                            "space": LR, **kw})
    return make


class ScriptedRunner:
    """A trainer stand-in: each trial's evaluations come from ``script(config)``; the last is the final one.
    Every evaluation costs 1 kWh, so a pruned trial costs fewer."""

    def __init__(self, script):
        self.script, self.configs = script, []

    def __call__(self, config, pruner, on_start):
        self.configs.append(config)
        on_start(100 + len(self.configs), Path("trial-dir"))
        *intermediate, final = self.script(config)
        for k, value in enumerate(intermediate, 1):
            stop = pruner.on_evaluation(None, EvalEvent(step=10 * k, energy_kwh=float(k), eval_energy_kwh=0.1, scores={"fid": value}))
            if stop:
                return TrialOutcome("stopped", 10 * k, float(k), 0.1 * k, 0.5 * k, stop.reason)
        step = 10 * len(intermediate) + 5
        pruner.on_evaluation(None, EvalEvent(step=step, energy_kwh=1.0, eval_energy_kwh=0.1, scores={"fid": final}, final=True))
        n = len(intermediate) + 1
        return TrialOutcome("stopped", step, float(n), 0.1 * n, 0.5 * n, "energy budget: ...")
