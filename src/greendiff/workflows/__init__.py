"""Workflows: the library's jobs (train, sample, prune, distill, distill-steps, tuning trials, scoring,
hardware profiling) as functions with typed arguments and typed results, callable from Python. Each resolves and
checks everything before it creates anything, owns its run directory (claimed with ``RunDirLock``,
``config.toml`` written by :func:`write_config` alone), its ledger run and ``emissions.json``; presentation
reaches it only through a :class:`Progress` passed in. The CLI parses, calls these and renders.

Example:
    >>> from greendiff.workflows import MeasurementOptions, TrainJob, run_train
    >>> job = TrainJob(overrides={"model.preset": "pico", "data.dataset": "digits", "run.max_steps": 2},
    ...                measurement=MeasurementOptions(no_gpu=True))
    >>> run_train(job).status  # doctest: +SKIP
    'completed'
"""

from __future__ import annotations

from greendiff.workflows._compress_session import (
    CompressOutcome, CompressSession, check_parent, derived_config, derived_name, model_stats, parent_energy_kwh,
)
from greendiff.workflows._conditioning import resolve_conditioning
from greendiff.workflows._distill import DistillJob, run_distill
from greendiff.workflows._distill_steps import DistillStepsJob, run_distill_steps
from greendiff.workflows._eval import (
    EMA_LENGTH_GRID, KID_SUBSET_DEFAULT, EvalJob, EvalOutcome, choose_ema_length, run_eval,
)
from greendiff.workflows._fields import job_default
from greendiff.workflows._demo import DemoJob, DemoOutcome, LocationCost, WorkloadStep, run_demo
from greendiff.workflows._hardware import HardwareJob, HardwareOutcome, SweepResult, run_hardware
from greendiff.workflows._measure import MeasureJob, MeasureOutcome, run_measure
from greendiff.workflows._measurement import (
    CPU_WATTS, GPU_INDEX, LOCATION_FILE, PUE, MeasurementOptions, MeasureSettings, RunLocation, resolve_settings,
)
from greendiff.workflows._plan import RegionsJob, RegionsOutcome, WindowJob, run_plan_regions, run_plan_window
from greendiff.workflows._profile import ProfileJob, ProfileOutcome, run_profile_job
from greendiff.workflows._progress import (
    Advance, Interrupted, NullProgress, Progress, ProgressEvent, SegmentStart, TimestepDone, TrainerProgress,
)
from greendiff.workflows._prune import PruneJob, run_prune
from greendiff.workflows._rundir import (
    claimed_run_dir, new_run_dir, new_run_name, open_loggers, write_config, write_emissions, write_file, write_location,
)
from greendiff.workflows._sample import PerImageEnergy, SampleJob, SampleOutcome, run_sample
from greendiff.workflows._segment import train_segment
from greendiff.workflows._signals import StopSignals
from greendiff.workflows._finetune import (
    FinetuneInputs, FinetuneSetup, PreparedFinetune, finetune_inputs, load_base, prepare_finetune,
    resolve_finetune_config, run_finetune,
)
from greendiff.workflows._train import PreparedTrain, TrainJob, TrainOutcome, prepare_train, resolve_train_config, run_train
from greendiff.workflows._tune_report import StudyReport, WorkerExit, WorkersState, run_study_workers, study_report
from greendiff.workflows._vae import VaeTrainJob, VaeTrainOutcome, run_vae_train
from greendiff.workflows._tune import (
    ENV_STORAGE, Study, StudyJob, continue_study, new_study, work_on_study,
)

__all__ = [  # constants, classes, functions; each sorted
    "ENV_STORAGE", "KID_SUBSET_DEFAULT", "LOCATION_FILE", "Advance", "CompressOutcome", "DemoJob", "DemoOutcome",
    "DistillJob", "DistillStepsJob", "EvalJob", "EvalOutcome", "HardwareJob", "HardwareOutcome", "Interrupted",
    "LocationCost", "MeasureJob", "MeasureOutcome", "MeasureSettings", "MeasurementOptions", "NullProgress",
    "PerImageEnergy", "PreparedTrain", "ProfileJob", "ProfileOutcome", "Progress", "ProgressEvent", "PruneJob",
    "RegionsJob", "RegionsOutcome", "RunLocation", "SampleJob", "SampleOutcome", "SegmentStart", "StopSignals",
    "Study", "StudyJob", "StudyReport", "SweepResult", "TimestepDone", "TrainJob", "TrainOutcome",
    "TrainerProgress", "VaeTrainJob", "VaeTrainOutcome", "WindowJob", "WorkerExit", "WorkersState", "WorkloadStep",
    "check_parent", "continue_study",
    "job_default", "new_study", "parent_energy_kwh", "prepare_train", "resolve_conditioning",
    "resolve_settings", "resolve_train_config", "run_demo", "run_distill", "run_distill_steps", "run_eval",
    "run_hardware", "run_measure", "run_plan_regions", "run_plan_window", "run_profile_job", "run_prune",
    "run_sample", "run_study_workers", "run_train", "run_vae_train", "study_report", "work_on_study",
    "EMA_LENGTH_GRID", "choose_ema_length",
    "FinetuneInputs", "FinetuneSetup", "PreparedFinetune", "finetune_inputs", "load_base",
    "prepare_finetune", "resolve_finetune_config", "run_finetune",
    "write_location",
]
