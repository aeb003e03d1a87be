"""Profiling a training config: train it a few steps under a ledger run, every phase metered once, and forecast
the full run's energy and time with a band (:func:`greendiff.plan.run_profile`); the forecast is written as JSON
for ``greendiff plan window|regions --profile``.

Example:
    >>> from greendiff.workflows import MeasurementOptions, ProfileJob, run_profile_job
    >>> outcome = run_profile_job(ProfileJob(overrides={"model.preset": "pico"}, steps=10, warmup=2,
    ...                                      output=Path("profile.json"), measurement=MeasurementOptions(no_gpu=True)))  # doctest: +SKIP
    >>> outcome.forecast.energy_kwh  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greendiff.errors import UserInputError
from greendiff.plan import Forecast
from greendiff.tracking import RunSummary
from greendiff.workflows._conditioning import resolve_conditioning
from greendiff.workflows._inputs import check_output, default_job_note, load_config_data, write_output
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import Interrupted, NullProgress, Progress, check_progress

#: How the forecast is made, as written into the profile file.
METHOD = ("steps x J/step + evaluations x J/evaluation + grids x J/grid + checkpoints x J/checkpoint; "
          "band: meter uncertainty, 2 standard errors of the step energy and first/second-half drift, in quadrature")


@dataclass(frozen=True)
class ProfileJob:
    """A short measured profile of a training config, forecast to its full run.

    Args:
        config_file: training config (TOML) to profile (None: the defaults).
        overrides: dotted config keys over the file (``{"run.max_steps": 20000}``).
        steps: profiled training steps (more than ``warmup`` + 3; ``--train-steps``).
        warmup: leading steps left out of the rate (``--unmetered-steps``, >= 0): allocator, kernel selection
            (:data:`~greendiff.plan.WARMUP_COST`).
        output: where the profile is written (``.json``; checked before any work). A file there is replaced,
            and the outcome says so (``replaced``).
        measurement: where and how the profile is measured, and its ledger.
    """

    config_file: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 50
    warmup: int = 5
    output: Path = Path("profile.json")
    measurement: MeasurementOptions = field(default_factory=MeasurementOptions)


@dataclass(frozen=True)
class ProfileOutcome:
    """The forecast, the config's label (``name``), the file written (``replaced``: a file was there before and is
    now replaced), the ledger run and its summary."""

    forecast: Forecast
    name: str
    output: Path
    ledger_run_id: int
    summary: RunSummary
    config: dict  # the resolved training config, as written into the profile
    replaced: bool = False

    def to_dict(self) -> dict:
        """The profile file's content."""
        return {"forecast": self.forecast.to_dict(), "ledger_run_id": self.ledger_run_id, "config": self.config,
                "method": METHOD}


class _ProgressLogs:
    """The trainer's :class:`~greendiff.train.LogEvent` s to the caller's :class:`Progress` (main process)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_log(self, trainer, event) -> None:
        if trainer.is_main:
            self.progress.on_log(event)


def run_profile_job(job: ProfileJob, progress: Progress | None = None) -> ProfileOutcome:
    """Profile ``job``'s config and write its forecast to ``job.output``.

    Everything is checked before the ledger run opens; a profile that fails or is interrupted closes its ledger
    run (``failed`` / ``interrupted``) and writes nothing. Ctrl-C raises :class:`Interrupted` (exit code 130).
    """
    from greendiff.plan import run_profile
    from greendiff.train import check_data, resolve_config, to_dict

    progress = check_progress(progress) if progress is not None else NullProgress()
    config, setup = resolve_config(job.config_file, dict(job.overrides)), None
    if job.steps <= job.warmup + 3 or job.warmup < 0:
        raise UserInputError(f"--train-steps must be more than --unmetered-steps + 3 = {job.warmup + 3}, and "
                             f"--unmetered-steps >= 0 (got {job.steps}, {job.warmup})")
    check_output(job.output, (".json",))
    settings = resolve_settings(job.measurement)
    if config.finetune.enabled:  # a fine-tune's config: its pipeline, images and family (greendiff finetune's)
        setup = _finetune_setup(job)
        config, data = setup.inputs.config, setup.inputs.train
    else:
        data = load_config_data(config, job.config_file)
        config = resolve_conditioning(config, data)
        check_data(config, data)
    name = job.config_file.name if job.config_file else f"{config.recipe}-{config.model.preset}"
    if job.config_file is None:
        progress.note(default_job_note(config, "profile"))
    tracker = settings.tracker(f"profile {name}", "profile", f"greendiff profile --train-steps {job.steps}",
                               config=to_dict(config)).start()
    try:
        family = None
        if setup is not None:
            data, family = setup.start(tracker, progress)
        progress.on_start("profile", job.steps)
        with tempfile.TemporaryDirectory(prefix="greendiff-profile-") as scratch:
            forecast = run_profile(config, data, tracker, Path(scratch), job.steps, job.warmup, name,
                                   callbacks=[_ProgressLogs(progress)], family=family)
    except KeyboardInterrupt:
        if tracker.summary is None:
            tracker.stop("interrupted")
        raise Interrupted(130) from None
    except BaseException:
        if tracker.summary is None:
            tracker.stop("failed")
        raise
    finally:
        progress.on_end()
    outcome = ProfileOutcome(forecast, name, job.output, tracker.run_id, tracker.summary, to_dict(config),
                             job.output.exists())
    write_output(job.output, outcome.to_dict())
    return outcome


def _finetune_setup(job: ProfileJob):
    """The :class:`~greendiff.workflows._finetune.FinetuneSetup` of a fine-tune's config: resolved against its
    pipeline (resolution, timesteps, objective), its images checked and split as ``greendiff finetune`` would."""
    from greendiff.workflows._finetune import FinetuneSetup, finetune_inputs, load_base, resolve_finetune_config
    from greendiff.workflows._train import TrainJob

    train_job = TrainJob(config_file=job.config_file, overrides=job.overrides)
    config, _ = resolve_finetune_config(train_job)
    base = load_base(config)
    config, _ = resolve_finetune_config(train_job, base)
    return FinetuneSetup(finetune_inputs(config, base))
