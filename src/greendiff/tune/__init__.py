"""Energy-aware hyperparameter search on Optuna: quality within an energy budget per trial (pruned
early when it falls behind), or the Pareto front of quality against energy.

Example (library use; the CLI is ``greendiff tune``)::

    from greendiff.tune import StudySpec, check_spec
    spec = StudySpec(trials=12, trial_budget_kwh=4e-5, space={"optim.lr": {"low": 3e-4, "high": 1e-2, "log": True}})
    params = check_spec(spec)
"""

from __future__ import annotations

from greendiff.tune._folder import STUDY_FILE, StudyFolder, read_study_file, write_study_file
from greendiff.tune._report import (
    TrialRow, best_row, export_toml, pareto_front, pareto_svg, summarize_study, trial_rows,
)
from greendiff.tune._space import Param, parse_space, tunable_keys
from greendiff.tune._study import (
    PRUNERS, StudySpec, TrialFailed, TrialOutcome, check_spec, counts, create_study, exported_config, fail_dead_trials,
    is_journal, load_study, make_objective, make_pruner, open_storage, redact, run_worker, trial_config,
)

__all__ = [
    "STUDY_FILE", "StudyFolder", "read_study_file", "write_study_file",
    "PRUNERS", "Param", "StudySpec", "TrialFailed", "TrialOutcome", "TrialRow", "best_row", "check_spec", "counts",
    "create_study", "export_toml", "exported_config", "fail_dead_trials", "is_journal", "load_study", "make_objective",
    "make_pruner", "open_storage", "pareto_front", "pareto_svg", "parse_space", "redact", "run_worker",
    "summarize_study", "trial_config", "trial_rows", "tunable_keys",
]
