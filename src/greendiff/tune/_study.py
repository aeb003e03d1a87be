"""Studies: what a study is (its spec, saved in its storage), where it lives, how a trial is built and run.

A study is identified by its storage and name. Its :class:`StudySpec` (mode, budget, base config,
space) is stored in the study itself, so any worker, on this machine or another, continues the same
study from the storage alone. Trials are trainer runs; the trainer is the ``run_trial`` collaborator
of :func:`make_objective`, so the search logic here is tested without training anything.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from greendiff.display import plain_number
from greendiff.errors import UserInputError
from greendiff.names import check_name, first_line
from greendiff.train import TrainConfig, resolve_config
from greendiff.tune._space import Param, bounds, parse_space

SPEC_ATTR = "greendiff_spec"
PRUNERS = ("hyperband", "median", "sha", "none")
FINISHED = ("COMPLETE", "PRUNED")


class TrialFailed(Exception):
    """A trial that cannot give a result (its config is invalid, or its training diverged)."""


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a study; JSON in the study's user attributes.

    Args:
        mode: ``budget``: minimise the metric reached within ``trial_budget_kwh`` per trial, with
            ``reports`` evaluations spread over the budget that a pruner may act on. ``pareto``:
            minimise (metric, training kWh) together; pruners do not apply.
        trials: Finished (complete or pruned) trials the study should reach.
        trial_budget_kwh: Energy per trial (budget mode; in Pareto mode an optional cap, 0 = none).
        reports: Evaluations per trial, at equal energy intervals (budget mode).
        pruner: ``hyperband``, ``median``, ``sha`` (successive halving) or ``none``.
        seed: Seed of the sampler (TPE).
        base_trial: Queue the base config's own values as the first trial (those inside the space),
            so the search starts from where the user stands and its best is never a config worse
            than it (up to the metric's noise).
        startup_trials: Random trials before TPE models the space (0: a third of ``trials``, 3 to 10),
            fixed when the study is made so that raising ``trials`` later does not change the sampler.
        base: The trainer config every trial starts from (nested, as in a config TOML).
        space: The ``[space]`` table.
    """

    mode: Literal["budget", "pareto"] = "budget"
    trials: int = 20
    trial_budget_kwh: float = 0.0
    reports: int = 4
    pruner: str = "hyperband"
    seed: int = 0
    startup_trials: int = 0
    base_trial: bool = True
    base: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)

    @property
    def params(self) -> list[Param]:
        return parse_space(self.space)

    @property
    def metric(self) -> str:
        return resolve_config(base=self.base).stop.metric

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        return cls(**json.loads(text))


def check_spec(spec: StudySpec) -> list[Param]:
    """One-line errors for a spec that cannot run; the space's params. Every choice and both ends
    of every range are resolved through the trainer's own validation (with the base config)."""
    if spec.mode not in ("budget", "pareto"):
        raise UserInputError(f"--mode must be budget or pareto, got {spec.mode!r}")
    if spec.trials < 1:
        raise UserInputError(f"--trials must be >= 1, got {spec.trials}")
    if spec.mode == "budget" and not spec.trial_budget_kwh > 0:
        raise UserInputError(f"--trial-budget-kwh must be > 0 in budget mode (the energy each trial may use), got {plain_number(spec.trial_budget_kwh, 6)}")
    if spec.trial_budget_kwh < 0 or not math.isfinite(spec.trial_budget_kwh):
        raise UserInputError(f"--trial-budget-kwh must be > 0 (or 0 for no cap in Pareto mode), got {plain_number(spec.trial_budget_kwh, 6)}")
    if spec.pruner not in PRUNERS:
        raise UserInputError(f"--pruner must be one of {', '.join(PRUNERS)}, got {spec.pruner!r}")
    if spec.mode == "pareto" and spec.pruner != "none":
        raise UserInputError("Optuna's pruners do not apply to multi-objective (Pareto) studies: use --pruner none with --mode pareto")
    if spec.startup_trials < 0:
        raise UserInputError(f"--startup-trials must be >= 0 (0: automatic), got {spec.startup_trials}")
    if spec.mode == "budget" and spec.reports < 1:
        raise UserInputError(f"--reports must be >= 1, got {spec.reports}")
    params = parse_space(spec.space)
    for param in params:
        for value in bounds(param):
            try:
                resolve_config(overrides={param.key: value}, base=spec.base)
            except UserInputError as exc:
                raise UserInputError(f"the space's {param.key} = {value!r} is not a valid trainer setting: {exc}") from None
    return params


def trial_config(spec: StudySpec, values: dict[str, Any], number: int, trials_dir: Path) -> TrainConfig:
    """The trainer config of trial ``number``: the base, the trial's values, and the study's evaluation
    and budget settings (budget mode: the trial budget, ``reports`` evaluations at equal energy
    intervals and one at the end; Pareto mode: one evaluation at the end, the cap if any). No
    intermediate samples or checkpoints: a trial that dies is failed and retried, not resumed."""
    budget = spec.trial_budget_kwh
    study = {"stop.eval_at_end": True, "stop.spread_seeds": 1, "stop.budget_kwh": budget,
             "stop.eval_every": 0, "stop.eval_every_kwh": budget / spec.reports if spec.mode == "budget" else 0.0,
             "run.name": f"trial-{number:04d}", "run.output_dir": str(trials_dir), "run.keep_checkpoints": 1,
             "run.num_samples": 16}
    if spec.mode == "pareto":  # one evaluation, at the end: no patience to wait (a fine-tune's default has some)
        study["stop.patience"] = 0
    config = resolve_config(overrides={**values, **study}, base=spec.base)
    never = config.run.max_steps  # no intermediate samples or checkpoints
    return dataclasses.replace(config, run=dataclasses.replace(config.run, sample_every=never, checkpoint_every=never))


def exported_config(spec: StudySpec, values: dict[str, Any], steps: int | None) -> TrainConfig:
    """The trainer config a trial stands for, to train on its own: the base and the trial's values;
    in budget mode ``max_steps`` is the steps the trial reached within its budget."""
    overrides = dict(values)
    if spec.mode == "budget" and steps:
        overrides["run.max_steps"] = steps
    return resolve_config(overrides=overrides, base=spec.base)


# -- storage -------------------------------------------------------------------------------------

def redact(url: str) -> str:
    """The storage URL without its userinfo (user name and password shown as ``***``), for anything
    printed or written; an unparsable URL is shown as its scheme only."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if parsed.username is None and parsed.password is None:
            return parsed.render_as_string(hide_password=False)
        scheme, rest = parsed._replace(username=None, password=None).render_as_string().split("://", 1)
        return f"{scheme}://***@{rest}"
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by open_storage
        return url.split("://")[0] + "://***"


def _scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's message) with the raw URL and any userinfo part of it replaced."""
    text = text.replace(url, redact(url))
    userinfo = url.split("://", 1)[-1].rpartition("@")[0]
    secrets = [userinfo, *userinfo.split(":")] if userinfo else []
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _sqlite_path(url: str) -> str | None:
    """The database file of an SQLite URL (the URL's database part, never its userinfo); None if
    the URL does not parse (reported when it is opened)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).database
    except Exception:  # noqa: BLE001
        return None


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith((".journal", ".log"))


def open_storage(url: str, connect_timeout_s: int = 10):
    """An Optuna storage: ``journal:PATH`` (or a path ending in .journal/.log) for Optuna's journal
    file (parallel workers on one machine), else an SQLAlchemy URL (``sqlite:///PATH`` for one
    worker, ``postgresql://...`` or ``mysql://...`` for workers on many machines). Unreachable or
    malformed storage: one-line :class:`UserInputError`."""
    import optuna

    if is_journal(url):
        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise UserInputError(f"cannot open the journal storage {path}: folder {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        except OSError as exc:
            raise UserInputError(f"cannot open the journal storage {path}: {exc.strerror}") from None
    if "://" not in url:
        raise UserInputError(f"--storage {url!r}: use an SQLAlchemy URL (sqlite:///study.db, postgresql://host/db) "
                             "or journal:PATH")
    engine_kwargs = {}
    if not url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"connect_timeout": connect_timeout_s}, "pool_pre_ping": True}
    else:
        path = _sqlite_path(url)
        if path and path != ":memory:" and not Path(path).parent.is_dir():
            raise UserInputError(f"cannot reach the storage {redact(url)}: folder {Path(path).parent} does not exist")
    try:
        kwargs = {} if url.startswith("sqlite") else {"heartbeat_interval": 60, "grace_period": 180}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ModuleNotFoundError as exc:
        raise UserInputError(f"the storage {redact(url)} needs the Python package {exc.name!r}: pip install {exc.name}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's connection errors have many classes
        first = _scrubbed(first_line(exc), url)
        if "DB access module" in first:  # Optuna's wording for a missing driver
            first = "no database driver for it is installed (e.g. pip install psycopg2-binary for PostgreSQL, pymysql for MySQL)"
        raise UserInputError(f"cannot reach the storage {redact(url)}: {first}") from None


def make_pruner(name: str, reports: int):
    """Hyperband over the ``reports`` evaluations (resource = evaluations so far), median (after two
    finished trials), successive halving, or none."""
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(reports, 1), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def create_study(spec: StudySpec, storage, name: str):
    """A new study holding ``spec``; an existing study of that name is an error (continue it instead).
    The name becomes the study's folder (``runs/tune/NAME``), so it must be one folder name."""
    import optuna

    check_name(name, "study name")
    try:
        optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    else:
        raise UserInputError(f"a study named {name!r} already exists in that storage; continue it with "
                             f"greendiff tune --resume, or pick another --name")
    study = optuna.create_study(storage=storage, study_name=name, **_study_kwargs(spec, spec.seed))
    study.set_user_attr(SPEC_ATTR, spec.to_json())
    if spec.base_trial and (values := base_values(spec)):
        study.enqueue_trial(values, user_attrs={"base": True})
    return study


def base_values(spec: StudySpec) -> dict[str, Any]:
    """The base config's value of each parameter that lies inside the space (as Optuna stores it)."""
    from greendiff.tune._space import _encode

    config = resolve_config(base=spec.base)
    values = {}
    for param in spec.params:
        section, key = param.key.split(".")
        value = getattr(getattr(config, section), key)
        if param.kind == "categorical":
            if _encode(value) in [_encode(c) for c in param.choices]:
                values[param.key] = _encode(value)
        elif param.low <= value <= param.high and (not param.step or ((value - param.low) / param.step).is_integer()):
            values[param.key] = value
    return values


def load_study(storage, name: str, worker_slot: int = 0):
    """An existing study and its spec (sampler and pruner rebuilt from the spec). The sampler's seed is
    drawn from the spec's seed, the trials the study has so far and ``worker_slot`` (0: the process
    that made or resumes the study; K: its K-th worker process): a resumed study, or a second worker,
    must not replay the random draws of the first session (the same configs again)."""
    import optuna

    try:
        summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    except Exception as exc:  # noqa: BLE001
        raise UserInputError(f"cannot read studies from the storage: {first_line(exc)}") from None
    if name not in summaries:
        raise UserInputError(f"no study named {name!r} in that storage (it has: {', '.join(sorted(summaries)) or 'none'})")
    if SPEC_ATTR not in summaries[name].user_attrs:
        raise UserInputError(f"study {name!r} was not made by greendiff tune (no spec stored with it)")
    spec = StudySpec.from_json(summaries[name].user_attrs[SPEC_ATTR])
    seed = session_seed(spec.seed, summaries[name].n_trials, worker_slot)
    return optuna.load_study(study_name=name, storage=storage, **_study_kwargs(spec, seed, directions=False)), spec


def session_seed(seed: int, trials_so_far: int, worker_slot: int) -> int:
    """The sampler seed of one session on a study: the study's own seed for its first session, a
    different one for every later session and every worker (still reproducible given those).

    Example:
        >>> session_seed(0, 0, 0), session_seed(0, 5, 0) != session_seed(0, 5, 1)
        (0, True)
    """
    return (seed + 1_000_003 * trials_so_far + 7_919 * worker_slot) % 2**32


def _study_kwargs(spec: StudySpec, seed: int, directions: bool = True) -> dict:
    import optuna

    # few trials: start TPE after a third of them (at least 3, at most TPE's own 10)
    startup = spec.startup_trials or min(10, max(3, spec.trials // 3))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    kwargs: dict[str, Any] = {"sampler": sampler, "pruner": make_pruner(spec.pruner, spec.reports)}
    if directions:
        kwargs["directions"] = ["minimize", "minimize"] if spec.mode == "pareto" else ["minimize"]
    return kwargs


# -- workers and trials ----------------------------------------------------------------------------

def worker_identity() -> dict:
    """Who runs a trial: enough to tell later whether that process is still alive."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started_unix_s": psutil.Process().create_time()}


def counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name] = out.get(trial.state.name, 0) + 1
    return out


def fail_dead_trials(study, alive: Callable[[str, int, float], bool]) -> list[int]:
    """Mark ``RUNNING`` trials whose worker process is gone as failed, and queue their parameters
    again so the study retries them. ``alive(host, pid, started_unix_s)`` decides (a worker on
    another host cannot be checked from here: RDB storages use Optuna's heartbeat for those).
    Returns the numbers of the trials marked."""
    import optuna
    from optuna.trial import TrialState

    if isinstance(study._storage, optuna.storages.RDBStorage) and study._storage.is_heartbeat_enabled():
        optuna.storages.fail_stale_trials(study)
    marked = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None or alive(worker["host"], worker["pid"], worker["started_unix_s"]):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "its worker process died")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        marked.append(trial.number)
    return marked


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial's training run gave (its evaluations are the pruner's: :class:`TrialPruner`)."""

    status: str  # completed | stopped | interrupted
    steps: int
    energy_kwh: float
    eval_kwh: float
    emissions_kg: float
    stop_reason: str = ""


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial's ``outcome`` user attribute (JSON in the storage), read back typed.

    Args:
        pruned_after: the evaluation after which the pruner stopped it (None: not pruned).
        final: the closing evaluation's record (None: pruned, failed or none).
    """

    status: str
    steps: int
    energy_kwh: float
    eval_kwh: float
    emissions_kg: float
    stop_reason: str = ""
    wall_s: float = 0.0
    final: dict | None = None
    pruned_after: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, trial) -> TrialRecord | None:
        """The record of an Optuna trial; None when it has none (not finished, or its worker died)."""
        attr = trial.user_attrs.get("outcome")
        if attr is None:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in attr.items() if k in names})


#: ``run_trial(config, pruner, on_start) -> TrialOutcome``: trains ``config`` with ``pruner`` (a
#: :class:`TrialPruner`) among the trainer's callbacks; ``on_start(ledger_run_id, run_dir)``.
RunTrial = Callable[[TrainConfig, Any, Callable[[int, Path], None]], TrialOutcome]


class TrialObjective:
    """The Optuna objective: suggest, train under the study's settings with a :class:`TrialPruner` (budget
    mode: each evaluation reported), and return the final metric (and the training kWh in Pareto mode).

    Args:
        spec: the study's spec; params: its space, parsed.
        trials_dir: where the trials' run directories go.
        run_trial: the trainer collaborator (:data:`RunTrial`).
        ledger_path: the ledger the trials' runs are in (recorded with each trial).
    """

    def __init__(self, spec: StudySpec, params: list[Param], trials_dir: Path, run_trial: RunTrial,
                 ledger_path: str = "") -> None:
        self.spec, self.params, self.trials_dir, self.run_trial = spec, params, trials_dir, run_trial
        self.ledger_path, self.metric = ledger_path, spec.metric

    def __call__(self, trial) -> float | tuple[float, float]:
        import optuna

        from greendiff.tune._pruner import TrialPruner

        trial.set_user_attr("worker", worker_identity())
        values = {p.key: p.suggest(trial) for p in self.params}
        try:
            config = trial_config(self.spec, values, trial.number, self.trials_dir)
        except UserInputError as exc:
            trial.set_user_attr("fail_reason", f"invalid trainer config: {exc}")
            raise TrialFailed(str(exc)) from None
        pruner = TrialPruner(trial, self.metric, self.spec.mode, self.spec.pruner)
        t0 = time.time()
        try:
            outcome = self.run_trial(config, pruner, functools.partial(self._started, trial))
        except UserInputError as exc:  # e.g. the run diverged
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailed(str(exc)) from None
        final = pruner.final_evaluation(outcome.steps)
        record = TrialRecord(outcome.status, outcome.steps, outcome.energy_kwh, outcome.eval_kwh, outcome.emissions_kg,
                             outcome.stop_reason, time.time() - t0, final.to_dict() if final else None, pruner.pruned_after)
        trial.set_user_attr("outcome", record.to_dict())
        if outcome.status == "interrupted":  # Ctrl-C: this trial fails, its parameters are queued for the resume
            trial.set_user_attr("fail_reason", "interrupted")
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            raise KeyboardInterrupt
        if pruner.pruned:
            raise optuna.TrialPruned(outcome.stop_reason)
        if final is None:
            trial.set_user_attr("fail_reason", "no final evaluation")
            raise TrialFailed("no final evaluation")
        value = float(final.scores[self.metric])
        if self.spec.mode == "pareto":
            return value, outcome.energy_kwh - outcome.eval_kwh
        return value

    def _started(self, trial, run_id: int, run_dir: Path) -> None:
        trial.set_user_attr("ledger", {"run_id": run_id, "path": self.ledger_path, "host": socket.gethostname()})
        trial.set_user_attr("run_dir", str(run_dir))


def make_objective(spec: StudySpec, params: list[Param], trials_dir: Path, run_trial: RunTrial,
                   ledger_path: str = "") -> TrialObjective:
    """The study's Optuna objective (:class:`TrialObjective`)."""
    return TrialObjective(spec, params, trials_dir, run_trial, ledger_path)


def run_worker(study, objective: Callable, target: int, on_trial_end: Callable[[Any], None] | None = None) -> int:
    """Run trials until the study has ``target`` finished ones (counting those other workers are
    running). Stops with an error when this worker's trials keep failing. Returns trials run here."""
    from optuna.trial import TrialState

    ended: list = []
    failed_in_a_row = 0
    while True:
        n = counts(study)
        if sum(n.get(s, 0) for s in FINISHED) + n.get("RUNNING", 0) >= target:
            return len(ended)
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[lambda _, trial: ended.append(trial)])
        last = ended[-1]
        if on_trial_end:
            on_trial_end(last)
        failed_in_a_row = failed_in_a_row + 1 if last.state == TrialState.FAIL else 0
        if failed_in_a_row >= 3:
            raise UserInputError(f"3 trials in a row failed; the last: {last.user_attrs.get('fail_reason', 'see its run directory')}")
