"""The training job: a config resolved and checked, a run directory claimed, trained under one ledger run,
``emissions.json`` written. :func:`run_train` is what ``greendiff train`` calls.

Example:
    >>> from greendiff.workflows import MeasurementOptions, TrainJob, run_train
    >>> job = TrainJob(overrides={"model.preset": "pico", "data.dataset": "digits", "run.max_steps": 2},
    ...                measurement=MeasurementOptions(no_gpu=True))
    >>> outcome = run_train(job)  # doctest: +SKIP
    >>> outcome.status, outcome.step  # doctest: +SKIP
    ('completed', 2)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.tracking import RunSummary
from greendiff.workflows._conditioning import resolve_conditioning
from greendiff.workflows._fields import PROCESSES, check_instance, checked_int, checked_overrides, checked_path, set_fields
from greendiff.workflows._inputs import is_bundled, load_config_data, with_absolute_dataset
from greendiff.workflows._measurement import MeasurementOptions, MeasureSettings, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress, check_progress
from greendiff.workflows._rundir import claimed_run_dir, new_run_name, open_loggers, write_emissions
from greendiff.workflows._segment import train_segment
from greendiff.workflows._signals import StopSignals


@dataclass(frozen=True)
class TrainJob:
    """A training job as asked for.

    Args:
        config_file: TOML config (None: the recipe's defaults).
        overrides: dotted config keys over the file (``{"optim.lr": 1e-3}``); a None value is not given.
        resume: a run directory to continue from its latest checkpoint (only ``run.max_steps`` may change).
        measurement: where and how the job is measured.
        processes: data-parallel processes the job will run as (the batch size is per process).
    """

    config_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    resume: Path | None = None
    measurement: MeasurementOptions = MeasurementOptions()
    processes: int = 1

    def __post_init__(self) -> None:
        """Checked as ``greendiff train`` checks its flags: ``TypeError`` for a wrong type (``config_file`` and
        ``resume`` may be ``str``), ``--nproc``'s one-line :class:`UserInputError` for ``processes`` < 1."""
        set_fields(self, config_file=checked_path(self.config_file, "TrainJob.config_file", optional=True),
                   resume=checked_path(self.resume, "TrainJob.resume", optional=True),
                   overrides=checked_overrides(self.overrides, "TrainJob.overrides"),
                   processes=checked_int(self.processes, PROCESSES, "TrainJob.processes", "--nproc"))
        check_instance(self.measurement, MeasurementOptions, "TrainJob.measurement")


@dataclass(frozen=True)
class PreparedTrain:
    """A :class:`TrainJob` resolved and checked; nothing created yet."""

    job: TrainJob
    config: Any  # greendiff.train.TrainConfig
    run_name: str
    settings: MeasureSettings
    data: Any  # greendiff.data dataset
    dist: Any  # greendiff.parallel.Dist
    notes: tuple[tuple[str, str | None], ...] = ()  # (text, style) to tell once nothing can fail


@dataclass(frozen=True)
class TrainOutcome:
    """How a training job ended.

    Attributes:
        status: ``completed``, ``stopped`` (a stopping rule) or ``interrupted`` (Ctrl-C / SIGTERM, resumable).
        step: the last optimizer step.
        stop_reason: why it stopped early ("" when it ran to ``run.max_steps``).
        run_dir: the run directory.
        summary: the ledger run's summary (energy_kwh, emissions_kg, phases, run_id, ...).
        duration_s: wall time of the segment, from the ledger run's start.
        exit_signal: the signal that interrupted it (None unless ``interrupted``).
    """

    status: str
    step: int
    stop_reason: str
    run_dir: Path
    summary: RunSummary
    duration_s: float
    exit_signal: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "stopped")


def resolve_train_config(job: TrainJob):
    """``(config, run name)`` of ``job``: the saved config of a resumed run (only ``run.max_steps`` may
    change), else the file and overrides resolved and validated, a folder or array dataset as an absolute path
    (the saved config must find it from any folder)."""
    from greendiff.train import resolve_config

    if job.resume is not None:
        if not (job.resume / "config.toml").is_file():
            raise UserInputError(f"--resume {display_path(job.resume)}: not a run directory (no config.toml)")
        changed = [k for k, v in job.overrides.items() if v is not None and k != "run.max_steps"]
        if changed or job.config_file is not None:
            raise UserInputError(f"--resume continues the saved config; only --max-steps may change (got {', '.join(changed) or '--config'})")
        return resolve_config(job.resume / "config.toml", {"run.max_steps": job.overrides.get("run.max_steps")}), job.resume.name
    config = with_absolute_dataset(resolve_config(job.config_file, dict(job.overrides)))
    return config, new_run_name(config, job.config_file if job.overrides.get("run.name") is None else None)


def check_unfinished(run_dir: Path, max_steps: int) -> None:
    """A resume must have steps left: a run that finished (its pipeline exported) at a checkpoint of
    ``max_steps`` or more is one line asking for a larger ``--max-steps``, before anything is recorded
    (a resume of 0 steps would add a ledger row and shrink the run's ``emissions.json``)."""
    from greendiff.train import checkpoint_dirs

    newest = checkpoint_dirs(run_dir)
    step = int(newest[-1].name[len("step-"):]) if newest else 0
    if step >= max_steps and ((run_dir / "pipeline").is_dir() or (run_dir / "lora").is_dir()):
        raise UserInputError(f"{display_path(run_dir)} already completed at step {step} (run.max_steps {max_steps}); "
                             f"give --max-steps N (> {step}) to train further")


def prepare_train(job: TrainJob) -> PreparedTrain:
    """Resolve and check everything ``job`` needs (config, processes, measurement, data, resume); creates nothing."""
    from greendiff.parallel import Dist
    from greendiff.train import check_data, check_train

    config, run_name = resolve_train_config(job)
    if config.finetune.enabled:
        raise UserInputError("this is a fine-tune (finetune.pipeline is set): run it with greendiff finetune"
                             + (f" --resume {display_path(job.resume)}" if job.resume is not None else ""))
    dist = Dist.from_env()
    if job.processes > 1 and dist.distributed:
        raise UserInputError("--nproc launches processes; this is already one process of a job (drop --nproc)")
    if (job.processes > 1 or dist.distributed) and config.carbon.enabled:
        raise UserInputError("--carbon-aware does not support several processes yet; train with one process")
    settings = resolve_settings(job.measurement, run=job.resume)
    data = load_config_data(config, job.config_file)
    config = resolve_conditioning(config, data)  # before config.toml is written: it holds the number of classes
    check_data(config, data, max(job.processes, dist.world_size))
    check_train(config, data.channels, job.resume, str(job.resume / "config.toml") if job.resume is not None else "config")
    if job.resume is not None:  # after its checkpoints are checked: a damaged one is the problem to tell first
        check_unfinished(job.resume, config.run.max_steps)
    notes = ((settings.note, None),) if settings.note else ()
    if (shrunk := small_resolution_note(job, config)) is not None:
        notes += ((shrunk, "warning"),)
    return PreparedTrain(job, config, run_name, settings, data, dist, notes)


def small_resolution_note(job: TrainJob, config) -> str | None:
    """The warning for a new run that trains an image folder at the default ``data.resolution`` (16 px) while
    its images are larger, whatever set it (the default, or a config file such as one ``train --dry-run``
    wrote); None when the user chose it on the command line (an override), for a resume or a bundled or
    array dataset, or when the images are no larger."""
    from greendiff.train import read_toml

    resolution = config.data.resolution
    if job.resume is not None or job.overrides.get("data.resolution") is not None:
        return None
    if resolution != type(config.data)().resolution or is_bundled(config.data.dataset):
        return None
    folder = Path(config.data.dataset)
    size = first_image_size(folder) if folder.is_dir() else None
    if size is None or min(size) <= resolution:
        return None
    data = read_toml(job.config_file).get("data") if job.config_file is not None else None
    where = (f"data.resolution in {display_path(job.config_file)}" if isinstance(data, dict) and "resolution" in data
             else "the default data.resolution")
    return (f"the images of {display_path(folder)} ({size[0]} x {size[1]} px) are resized to {resolution} x {resolution} "
            f"pixels, {where}: give --resolution N (or set data.resolution in the config file) to train at another size")


def first_image_size(folder: Path, tries: int = 20) -> tuple[int, int] | None:
    """``(width, height)`` in pixels of the first image found under ``folder`` (its header read alone; hidden
    names passed over, at most ``tries`` files opened); None when none is found."""
    import os

    from PIL import Image, UnidentifiedImageError

    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith("."))[:tries]:
            try:
                with Image.open(Path(root, name)) as img:
                    return img.size
            except (OSError, UnidentifiedImageError, ValueError):
                tries -= 1
            if tries <= 0:
                return None
    return None


def run_train(job: TrainJob | PreparedTrain, progress: Progress | None = None) -> TrainOutcome:
    """Train ``job`` in this process (one rank of a job started by torchrun, or alone): claim its run
    directory, train under one ledger run, write ``emissions.json``. Bad input: :class:`UserInputError`
    before anything is created."""
    import torch

    from greendiff.integrations import check_loggers

    if not isinstance(job, (TrainJob, PreparedTrain)):
        raise TypeError(f"run_train takes a TrainJob (or a PreparedTrain), got {type(job).__name__}")
    progress = NullProgress() if progress is None else check_progress(progress)
    prepared = job if isinstance(job, PreparedTrain) else prepare_train(job)
    return run_prepared(prepared, progress)


def run_prepared(prepared: PreparedTrain, progress: Progress, setup=None) -> TrainOutcome:
    """Claim the run directory of ``prepared`` and train in it (:func:`run_train`'s work); ``setup``: what a
    fine-tune adds once the run is measured (:class:`~greendiff.workflows._finetune.FinetuneSetup`: its data and
    model family, and its files after the run)."""
    import torch

    from greendiff.integrations import check_loggers

    config, settings = prepared.config, prepared.settings
    prepared.dist.init(torch.cuda.is_available())
    check_loggers(config.run.log_to)
    controller = None
    if config.carbon.enabled:
        from greendiff.carbon import resolve_pue
        from greendiff.plan import controller_for

        controller = controller_for(config.carbon, settings.provider, resolve_pue(settings.pue, settings.location).value,
                                    config.run.max_steps)
    if prepared.data.skipped:
        progress.note(f"skipped {prepared.data.skipped} unreadable image files", "warning")
    resume = prepared.job.resume
    with claimed_run_dir(config, resume, prepared.run_name, prepared.dist, settings.stored) as run_dir:
        return _train_in(prepared, run_dir, progress, controller, setup)


def _train_in(prepared: PreparedTrain, run_dir: Path, progress: Progress, controller, setup=None) -> TrainOutcome:
    """Train in ``run_dir`` under one ledger run; close it and write ``emissions.json`` (and ``setup``'s files)."""
    from greendiff.train import to_dict

    config, dist, resume = prepared.config, prepared.dist, prepared.job.resume is not None
    command = "finetune" if setup is not None else "train"
    loggers = open_loggers(config, run_dir, remove_on_error=None if resume else run_dir) if dist.is_main else []
    if dist.is_main:  # said once everything is checked (an error stays one line)
        for text, style in ((prepared.data.placement, None), *prepared.notes):
            if text:
                progress.note(text, style)
    tracker = prepared.settings.tracker(run_dir.name + (" (resumed)" if resume else ""), command,
                                        f"greendiff {command} ({display_path(run_dir)})", config=to_dict(config),
                                        run_dir=run_dir, dist=dist).start()
    t0 = time.perf_counter()
    for logger_ in loggers:
        logger_.tag({"greendiff.ledger_run_id": tracker.run_id, "greendiff.location": tracker.location.describe(),
                     "greendiff.intensity_source": tracker.provider.describe(), "greendiff.pue": tracker.pue.value})
    with StopSignals() as stops:  # held until the ledger row and emissions.json are closed
        data, family = (prepared.data, None) if setup is None else setup.start(tracker, progress)
        result = train_segment(config, data, run_dir, tracker, progress, resume=resume, label=command,
                               callbacks=(controller,), loggers=loggers, stops=stops, family=family)
        extra = {"stop_reason": result.stop_reason or ("max_steps reached" if result.status == "completed" else result.status)}
        if controller is not None:
            extra["carbon_aware"] = controller.summary()
        summary = tracker.stop("completed" if result.status in ("completed", "stopped") else "interrupted", extra=extra)
        for logger_ in loggers:
            logger_.log({"event": "final", "step": result.step, "energy_kwh": summary.energy_kwh,
                         "emissions_kg": summary.emissions_kg})
            logger_.close(result.status)
        if dist.is_main:
            write_emissions(run_dir, summary, result.prior_energy_j, tracker.ledger)
            if setup is not None and result.status in ("completed", "stopped"):
                setup.finish(run_dir, summary, result, tracker)
    finished = result.status in ("completed", "stopped")
    return TrainOutcome(result.status, result.step, result.stop_reason or "", run_dir, summary,
                        time.perf_counter() - t0, None if finished else stops.exit_code - 128)
