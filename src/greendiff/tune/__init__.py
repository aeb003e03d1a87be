"""Energy-aware hyperparameter search on Optuna: quality within an energy budget per trial (pruned
early when it falls behind), or the Pareto front of quality against energy.

A study is a :class:`StudySpec` (the search space over trainer config keys, the per-trial budget, the
mode) stored in an Optuna storage (a journal file for workers on one machine, a database for many); its
trials are trained by :func:`greendiff.workflows.work_on_study` (the CLI is ``greendiff tune``), and
:func:`summarize_study`, :func:`trial_rows` and :func:`pareto_svg` report on it.

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

from greendiff.tune._folder import STUDY_FILE, StudyFolder, read_study_file, write_study_file
from greendiff.tune._report import (
    TrialRow, best_row, export_toml, pareto_front, pareto_svg, summarize_study, trial_rows,
)
from greendiff.tune._space import parse_space, tunable_keys
from greendiff.tune._study import (
    StudySpec, TrialOutcome, check_spec, counts, create_study, exported_config, fail_dead_trials, is_journal,
    load_study, make_objective, open_storage, redact, run_worker, trial_config,
)

__all__ = [
    # a study: its spec, storage, objective and workers
    "StudySpec", "check_spec", "open_storage", "is_journal", "redact", "create_study", "load_study",
    "make_objective", "run_worker", "fail_dead_trials", "TrialOutcome", "trial_config", "parse_space",
    "tunable_keys",
    # its folder
    "STUDY_FILE", "StudyFolder", "read_study_file", "write_study_file",
    # reporting on it
    "TrialRow", "best_row", "counts", "export_toml", "exported_config", "pareto_front", "pareto_svg",
    "summarize_study", "trial_rows",
]
