"""Energy-aware hyperparameter search, as workflows: a study folder created (:func:`new_study`) or continued
(:func:`continue_study`), and this process's share of its trials run (:func:`work_on_study`), each trial an
ordinary trainer run and a ledger run (kind ``tune-trial``) linked to the study.

A study lives in a folder (``runs/tune/NAME``: ``study.toml``, the space, the trials' run directories,
``best.toml``) and in its Optuna storage, which also holds its spec, so that workers started later or
elsewhere continue the same study.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from greendiff.errors import UserInputError
from greendiff.workflows._conditioning import resolve_conditioning
from greendiff.workflows._inputs import load_config_data, with_absolute_dataset
from greendiff.workflows._progress import Interrupted, NullProgress, Progress
from greendiff.workflows._rundir import new_run_dir, write_config, write_emissions, write_file, write_location
from greendiff.workflows._segment import train_segment

ENV_STORAGE = "GREENDIFF_TUNE_STORAGE"


@dataclass(frozen=True)
class StudyJob:
    """A new study. Args as ``greendiff tune``'s flags: ``space`` (a TOML file with one ``[space]`` table),
    ``trials``, ``config_file`` and ``sets`` (the base config every trial starts from), ``mode`` (budget or
    pareto), ``trial_budget_kwh``, ``reports``, ``pruner`` (None: hyperband, or none in pareto mode), ``seed``,
    ``startup_trials`` (0: a third of the trials, 3 to 10), ``base_trial``, ``workers``, ``storage`` (None: a
    file in the study folder), ``name`` (None: tune-<time>), ``output_dir`` (parent of the study folder)."""

    space: Path
    trials: int
    config_file: Path | None = None
    sets: Mapping[str, str] = field(default_factory=dict)
    mode: str = "budget"
    trial_budget_kwh: float | None = None
    reports: int = 4
    pruner: str | None = None
    seed: int = 0
    startup_trials: int = 0
    base_trial: bool = True
    workers: int = 1
    storage: str | None = None
    name: str | None = None
    output_dir: Path = Path("runs/tune")

    def __post_init__(self) -> None:
        """Checked as ``greendiff tune`` checks its flags (``TypeError`` naming the field for a wrong type, the
        flag's one-line :class:`UserInputError` out of range); paths may be ``str``."""
        from greendiff.numbers import SEED
        from greendiff.workflows._fields import (
            REPORTS, STARTUP_TRIALS, TRIAL_BUDGET_KWH, TRIALS, WORKERS, check_instance, checked_float, checked_int,
            checked_path, set_fields,
        )

        for name, kind in (("mode", str), ("base_trial", bool), ("sets", Mapping)):
            check_instance(getattr(self, name), kind, f"StudyJob.{name}")
        for name in ("pruner", "storage", "name"):
            if getattr(self, name) is not None:
                check_instance(getattr(self, name), str, f"StudyJob.{name}")
        budget = self.trial_budget_kwh
        set_fields(self, space=checked_path(self.space, "StudyJob.space"),
                   config_file=checked_path(self.config_file, "StudyJob.config_file", optional=True),
                   output_dir=checked_path(self.output_dir, "StudyJob.output_dir"),
                   trials=checked_int(self.trials, TRIALS, "StudyJob.trials", "--trials"),
                   reports=checked_int(self.reports, REPORTS, "StudyJob.reports", "--reports"),
                   seed=checked_int(self.seed, SEED, "StudyJob.seed", "--seed"),
                   startup_trials=checked_int(self.startup_trials, STARTUP_TRIALS, "StudyJob.startup_trials",
                                              "--startup-trials"),
                   workers=checked_int(self.workers, WORKERS, "StudyJob.workers", "--workers"),
                   trial_budget_kwh=None if budget is None else checked_float(budget, TRIAL_BUDGET_KWH,
                                                                                 "StudyJob.trial_budget_kwh",
                                                                                 "--trial-budget-kwh"))


@dataclass(frozen=True)
class Study:
    """An open study: its folder, Optuna study, spec, storage URL and (when loaded already) its dataset."""

    folder: Path
    study: Any  # optuna.Study
    spec: Any  # greendiff.tune.StudySpec
    url: str
    data: Any = None


def storage_url(folder, given: str | None) -> str:
    """The storage of a study folder (:class:`greendiff.tune.StudyFolder`): ``given`` (``--storage`` or
    $GREENDIFF_TUNE_STORAGE) when set, else the folder's own storage file; a storage the folder names
    elsewhere is never opened on the folder's word alone."""
    if given:
        return given
    url = folder.local_storage()
    if url is None:
        from greendiff.names import display_path, shown
        from greendiff.tune import redact

        raise UserInputError(f"{display_path(folder.file)}: storage {shown(redact(folder.storage))} is not a file inside "
                             f"the study folder; pass --storage URL (or set {ENV_STORAGE}) to use it")
    return url


def seed_slot(worker: int) -> int:
    """The sampler slot of worker ``worker`` (1..256; 0: not a worker): unique across machines too, so that
    workers of one study on two hosts do not replay each other's draws (``--join`` workers have their own)."""
    return 0 if worker == 0 else 1000 * (zlib.crc32(socket.gethostname().encode()) % 1_000_000) + worker


def _deep_update(target: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _spec(job: StudyJob):
    """The study's spec and base config, checked; nothing opened or created."""
    from greendiff.train import read_toml, resolve_config
    from greendiff.train._config import dotted_to_nested
    from greendiff.tune import StudySpec, check_spec

    space_toml = read_toml(job.space)
    if set(space_toml) != {"space"}:
        raise UserInputError(f"{job.space}: expected one [space] table (trainer keys and ranges), found {', '.join(sorted(space_toml)) or 'nothing'}")
    base = read_toml(job.config_file) if job.config_file is not None else {}
    _deep_update(base, dotted_to_nested(dict(job.sets)))
    base_config = resolve_config(base=base)  # the base alone must be a valid config
    absolute = with_absolute_dataset(base_config)  # every trial, on any worker and folder, finds the data
    if absolute is not base_config:
        base.setdefault("data", {})["dataset"] = absolute.data.dataset
        for key in ("pipeline", "instance_data", "clip_model"):  # a fine-tune's folders
            if getattr(absolute.finetune, key):
                base.setdefault("finetune", {})[key] = getattr(absolute.finetune, key)
        base_config = absolute
    if base_config.finetune.enabled:  # a fine-tune's trials start from its pipeline's resolution and objective
        from greendiff.workflows._finetune import load_base, pipeline_defaults

        for key, value in pipeline_defaults(load_base(base_config)).items():
            section, name = key.split(".")
            base.setdefault(section, {}).setdefault(name, value)
        base_config = resolve_config(base=base)
    spec = StudySpec(mode=job.mode, trials=job.trials, trial_budget_kwh=job.trial_budget_kwh or 0.0, reports=job.reports,
                     pruner=job.pruner or ("none" if job.mode == "pareto" else "hyperband"), seed=job.seed,
                     startup_trials=job.startup_trials, base_trial=job.base_trial, base=base, space=space_toml["space"])
    check_spec(spec)
    return dataclasses.replace(spec, startup_trials=job.startup_trials or min(10, max(3, job.trials // 3))), base_config


def new_study(job: StudyJob) -> Study:
    """Create the study folder and its storage (everything checked first: nothing is created for bad input)."""
    from greendiff.train import check_data
    from greendiff.tune import create_study, open_storage, write_study_file
    from greendiff.tune._study import is_journal

    spec, base_config = _spec(job)
    storage = job.storage
    if storage and not is_journal(storage) and storage.startswith("sqlite") and job.workers > 1:
        raise UserInputError("SQLite storage is for a single worker; with --workers use journal:FILE or an RDB URL (postgresql://...)")
    data = load_config_data(base_config, job.config_file)
    check_data(resolve_conditioning(base_config, data), data)
    name = job.name or "tune-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    study_dir = job.output_dir / name
    if study_dir.exists():
        raise UserInputError(f"study folder {study_dir} already exists; continue it with --resume {study_dir} or pick another --name")
    default_file = None if storage else ("study.journal" if job.workers > 1 else "study.db")
    url = storage or (f"journal:{study_dir / default_file}" if default_file.endswith(".journal") else f"sqlite:///{study_dir / default_file}")
    study_obj = create_study(spec, open_storage(url), name) if storage else None  # a bad storage or name: nothing created
    try:
        study_dir.mkdir(parents=True)
    except OSError as exc:
        raise UserInputError(f"cannot create the study folder {study_dir}: {exc.strerror}") from None
    if study_obj is None:
        study_obj = create_study(spec, open_storage(url), name)
    write_study_file(study_dir, name, url, default_file)
    write_file(study_dir / "space.toml", job.space.read_text())
    return Study(study_dir, study_obj, spec, url, data)


def continue_study(resumed, join: bool, study_name: str | None, storage: str | None, output_dir: Path,
                   trials: int | None, workers: int, worker_slot: int, progress: Progress | None = None) -> Study:
    """An existing study: ``resumed`` (``(StudyFolder, storage URL)`` of ``--resume FOLDER``), else ``join``
    the study ``study_name`` in ``storage`` (its folder made under ``output_dir``). ``trials``: a new target;
    unless this is a worker (``worker_slot`` > 0), trials of dead workers are marked failed (queued again)."""
    from greendiff.ledger import process_alive
    from greendiff.tune import STUDY_FILE, load_study, open_storage, redact, write_study_file
    from greendiff.tune._study import fail_dead_trials

    progress = progress or NullProgress()
    if join:
        if not (storage and study_name):
            raise UserInputError(f"--join needs --storage URL (or ${ENV_STORAGE}) and --study NAME")
        url = storage
        # a worker on another machine: a slot of its own, so that it does not replay another worker's draws
        slot = seed_slot(worker_slot) or 2**31 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
        study_obj, spec = load_study(open_storage(url), study_name, slot)
        study_dir = output_dir / study_name
        study_dir.mkdir(parents=True, exist_ok=True)
        if not (study_dir / STUDY_FILE).exists():
            write_study_file(study_dir, study_name, url, None)
    else:
        folder, url = resumed
        study_obj, spec = load_study(open_storage(url), folder.name, seed_slot(worker_slot))
        study_dir = folder.path
    as_worker = worker_slot > 0
    if workers > 1 and not as_worker and url.startswith("sqlite"):
        raise UserInputError("this study's storage is SQLite, which is for a single worker; continue it with --workers 1 "
                             "(or start a study with --workers K: journal storage)")
    if trials is not None and trials != spec.trials and not as_worker:
        from greendiff.tune._study import SPEC_ATTR

        spec = dataclasses.replace(spec, trials=trials)
        study_obj.set_user_attr(SPEC_ATTR, spec.to_json())
    if not as_worker:
        marked = fail_dead_trials(study_obj, process_alive)
        if marked:
            progress.note(f"trials {', '.join(map(str, marked))} died with their worker: marked failed, queued again", "warning")
        progress.note(f"continuing study {study_obj.study_name} ({redact(url)}): target {spec.trials} finished trials")
    return Study(study_dir, study_obj, spec, url)


class TrialRunner:
    """Runs a trial's config through the trainer in its own run directory, as its own ledger run.

    Args:
        settings: the resolved :class:`~greendiff.workflows.MeasureSettings`.
        data: the study's dataset.
        study_name: the study's name (in the ledger run's name and config).
        storage: the study's storage URL, redacted.
        progress: where the trial's training is shown.
    """

    def __init__(self, settings, data, study_name: str, storage: str, progress: Progress | None = None) -> None:
        self.settings, self.data, self.study_name, self.storage = settings, data, study_name, storage
        self.progress = progress or NullProgress()

    def __call__(self, config, pruner, on_start):
        """Train trial ``config`` with ``pruner`` (a :class:`greendiff.tune.TrialPruner`) among the trainer's
        callbacks; ``on_start(ledger_run_id, run_dir)`` once its ledger run is open. A :class:`TrialOutcome`."""
        from greendiff.train import RunDirLock, to_dict
        from greendiff.tune import TrialOutcome

        number = int(config.run.name.rsplit("-", 1)[1])
        setup, data = None, self.data
        if config.finetune.enabled:  # a fine-tune's trial: the pipeline loaded afresh (adapters change it)
            from greendiff.workflows._finetune import FinetuneSetup, finetune_inputs, load_base

            setup = FinetuneSetup(finetune_inputs(config, load_base(config)))
            config = setup.inputs.config  # its held-out count and validation prompts written in
        else:
            config = resolve_conditioning(config, self.data)  # the trial's config.toml holds its number of classes
        run_dir = new_run_dir(config.run.output_dir, config.run.name)
        write_config(run_dir, config)
        write_location(run_dir, self.settings.stored)  # a resume, sample or eval of the trial is priced there too
        tracker = self.settings.tracker(f"{self.study_name}/{config.run.name}", "tune-trial",
                                        f"greendiff tune (study {self.study_name}, trial {number})",
                                        config={**to_dict(config), "tune": {"study": self.study_name, "trial": number,
                                                                           "storage": self.storage}},
                                        run_dir=run_dir).start()
        on_start(tracker.run_id, run_dir)
        try:
            with RunDirLock(run_dir):  # a `train --resume` of the trial's folder meanwhile is refused
                family = None
                if setup is not None:
                    data, family = setup.start(tracker, self.progress)
                result = train_segment(config, data, run_dir, tracker, self.progress, label=f"trial {number}",
                                       callbacks=(pruner,), family=family)
        except Interrupted:  # Ctrl-C outside the training loop: the tracker is stopped already
            done = tracker.summary
            return TrialOutcome("interrupted", 0, done.energy_kwh if done else 0.0, 0.0, done.emissions_kg if done else 0.0)
        summary = tracker.stop("completed" if result.status in ("completed", "stopped") else "interrupted")
        summary = summary.with_extra({"stop_reason": result.stop_reason or (
            "max_steps reached" if result.status == "completed" else result.status)})
        write_emissions(run_dir, summary, 0.0, tracker.ledger)
        return TrialOutcome(result.status, result.step, summary.energy_kwh, summary.phase_energy_kwh("eval"),
                            summary.emissions_kg, result.stop_reason)


def work_on_study(study: Study, settings, progress: Progress | None = None,
                  on_trial_end: Callable[[Any], None] | None = None) -> None:
    """This process's share of ``study``'s trials (all of them with one worker). ``on_trial_end``: called
    with each finished Optuna trial. Ctrl-C: noted, then :class:`Interrupted` (exit code 130)."""
    from greendiff.train import resolve_config
    from greendiff.tune import check_spec, make_objective, redact, run_worker

    progress = progress or NullProgress()
    spec = study.spec
    params = check_spec(spec)
    base_config = resolve_config(base=spec.base)
    data = study.data if study.data is not None else \
        None if base_config.finetune.enabled else load_config_data(base_config)  # a fine-tune's trials load their own
    runner = TrialRunner(settings, data, study.study.study_name, redact(study.url), progress)
    objective = make_objective(spec, params, study.folder / "trials", runner, str(settings.ledger.path))
    try:
        run_worker(study.study, objective, spec.trials, on_trial_end=on_trial_end)
    except KeyboardInterrupt:
        progress.note(f"interrupted; continue the study with: greendiff tune --resume {study.folder}")
        raise Interrupted(130) from None
