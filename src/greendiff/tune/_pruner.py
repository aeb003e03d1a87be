"""A trial's pruner as a trainer callback: each evaluation reported to the Optuna trial, the run stopped
when Optuna's pruner says so; it records that it pruned (a typed marker, not a stop reason's wording)."""

from __future__ import annotations

from greendiff.display import fixed_point
from greendiff.train import EvalEvent, Stop


def metric_text(value: float) -> str:
    """A quality score (FID, KID, ...) as people read it: four significant digits, fixed-point.

    Example:
        >>> metric_text(312.456), metric_text(0.000012346)
        ('312.5', '0.00001235')
    """
    return fixed_point(value, 4)


class TrialPruner:
    """Reports each in-training evaluation (budget mode; not the closing one) to ``trial`` and stops the run
    when the study's pruner prunes it. Keeps every evaluation: the last, at the run's last step, is the
    trial's value.

    Args:
        trial: the Optuna trial (``report(value, step)``, ``should_prune()``).
        metric: the score reported (``fid``, ``kid``, ...).
        mode: the study's mode; only ``budget`` studies are pruned.
        pruner: the pruner's name, for the stop reason.

    Example:
        >>> class Never:
        ...     def report(self, value, step): pass
        ...     def should_prune(self): return False
        >>> p = TrialPruner(Never(), "fid", "budget", "median")
        >>> p.on_evaluation(None, EvalEvent(step=5, energy_kwh=1e-6, eval_energy_kwh=0.0, scores={"fid": 30.0})), p.reports
        (None, 1)
    """

    def __init__(self, trial, metric: str, mode: str = "budget", pruner: str = "hyperband") -> None:
        self.trial, self.metric, self.mode, self.pruner = trial, metric, mode, pruner
        self.reports = 0  # evaluations reported so far
        self.pruned_after: int | None = None  # the report after which it pruned; None: not pruned
        self.evaluations: list[EvalEvent] = []

    @property
    def pruned(self) -> bool:
        return self.pruned_after is not None

    def on_evaluation(self, trainer, event: EvalEvent) -> Stop | None:
        self.evaluations.append(event)
        if event.final or self.mode != "budget":
            return None
        self.reports += 1
        value = event.scores[self.metric]
        self.trial.report(value, self.reports)
        if not self.trial.should_prune():
            return None
        self.pruned_after = self.reports
        return Stop(f"pruned by the {self.pruner} pruner after evaluation {self.reports} ({self.metric} {metric_text(value)})")

    def final_evaluation(self, steps: int) -> EvalEvent | None:
        """The closing evaluation of a run that ended at ``steps`` (None when pruned or none at that step)."""
        last = self.evaluations[-1] if self.evaluations else None
        return last if last is not None and last.step == steps and not self.pruned else None
