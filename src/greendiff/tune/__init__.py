"""Energy-aware hyperparameter search on Optuna: quality within an energy budget per trial (pruned
early when it falls behind), or the Pareto front of quality against energy.

A study is a :class:`StudySpec` (the search space over trainer config keys, the per-trial budget, the
mode) stored in an Optuna storage (a journal file for workers on one machine, a database for many); its
trials are trained by :func:`greendiff.workflows.work_on_study` (the CLI is ``greendiff tune``), and
:func:`summarize_study` (a :class:`StudySummary`), :func:`trial_rows` and :func:`pareto_svg` report on it;
a trial's pruner is a trainer callback, :class:`TrialPruner`.

Example:
    >>> import pathlib, tempfile
    >>> from greendiff.tune import StudySpec, check_spec, create_study, load_study, open_storage
    >>> spec = StudySpec(trials=12, trial_budget_kwh=4e-5, space={"optim.lr": {"low": 3e-4, "high": 1e-2, "log": True}})
    >>> [(p.key, p.low, p.high, p.log) for p in check_spec(spec)]
    [('optim.lr', 0.0003, 0.01, True)]
    >>> storage = open_storage(f"journal:{pathlib.Path(tempfile.mkdtemp()) / 'study.journal'}")
    >>> _ = create_study(spec, storage, "lr-search")
    >>> study, stored = load_study(storage, "lr-search")
    >>> stored == spec, stored.pruner
    (True, 'hyperband')
"""

from __future__ import annotations

from greendiff.tune._folder import STUDY_FILE, read_study_file, write_study_file
from greendiff.tune._pruner import TrialPruner, metric_text
from greendiff.tune._report import (
    StateTotals, StudySummary, TrialRow, best_row, budget_note, export_toml, pareto_svg, summarize_study, trial_note,
    trial_rows,
)
from greendiff.tune._study import (
    StudySpec, TrialObjective, TrialOutcome, TrialRecord, check_spec, create_study, load_study, make_objective,
    open_storage, redact, run_worker,
)

__all__ = [
    # a study: its spec, storage, objective, pruner and workers
    "StudySpec", "check_spec", "open_storage", "redact", "create_study", "load_study",
    "make_objective", "TrialObjective", "TrialPruner", "run_worker", "TrialOutcome", "TrialRecord",
    # its folder
    "STUDY_FILE", "read_study_file", "write_study_file",
    # reporting on it
    "StateTotals", "StudySummary", "TrialRow", "best_row", "budget_note", "export_toml", "pareto_svg", "summarize_study",
    "trial_note", "trial_rows", "metric_text",
]
