"""Training: typed config, right-sized UNets, the green and baseline recipes, the trainer and its callbacks,
model families (unconditional and class-conditional), and a finished run's artifacts.

Example (library use; the CLI is ``greendiff train``)::

    from greendiff.train import resolve_config
    config = resolve_config(overrides={"model.preset": "nano", "run.max_steps": 20})
"""

from __future__ import annotations

from greendiff.train._callbacks import StepOutcome, Stop, TrainerCallback
from greendiff.train._events import (
    EndEvent, EvalEvent, ForecastEvent, LogEvent, PauseEvent, RanksInSyncEvent, StartEvent, StoppedEvent,
)
from greendiff.train._evaluation import QualityEvaluator
from greendiff.train._family import ClassConditionalFamily, UNetFamily, family_for
from greendiff.train._artifacts import (
    EmissionsFile, MetricsLog, RunModel, ema_model, export_class_pipeline, export_pipeline, load_run_model, load_unet,
    read_emissions_json, read_metrics, save_pipeline_atomically,
)
from greendiff.train._checkpoint import check_resume, checkpoint_dirs
from greendiff.train._config import (
    BASELINE,
    RECIPES,
    DataConfig,
    CarbonAwareConfig,
    DistillConfig,
    ModelConfig,
    RecipeConfig,
    RunConfig,
    TrainConfig,
    parse_utc,
    read_toml,
    resolve_config,
    to_dict,
    to_toml,
)
from greendiff.train._diffusion import (
    diffusion_loss, drop_labels, loss_weights, make_noise_scheduler, make_sampler, noised_batch, sample_images,
    weighted_mse,
)
from greendiff.train._images import save_grid, to_uint8
from greendiff.train._lock import RunDirLock
from greendiff.train._loop import TrainResult, check_data, check_train, make_optimizer, step_generator, train
from greendiff.train._precision import resolve_precision
from greendiff.train._trainer import Trainer
from greendiff.train._model import (
    PRESETS, build_unet, check_num_classes, count_macs, count_parameters, load_weights, resolve_architecture,
)

__all__ = [
    # the trainer, its callback interface and events, its collaborators
    "Trainer", "TrainResult", "TrainerCallback", "Stop", "StepOutcome", "train", "check_data", "check_train",
    "check_resume", "check_num_classes",
    "StartEvent", "LogEvent", "EvalEvent", "ForecastEvent", "PauseEvent", "StoppedEvent", "RanksInSyncEvent", "EndEvent",
    "UNetFamily", "ClassConditionalFamily", "family_for", "QualityEvaluator",
    # configuration
    "BASELINE", "RECIPES", "CarbonAwareConfig", "DataConfig", "DistillConfig", "ModelConfig", "RecipeConfig",
    "RunConfig", "TrainConfig", "parse_utc", "read_toml", "resolve_config", "to_dict", "to_toml",
    # networks and diffusion math
    "PRESETS", "build_unet", "count_macs", "count_parameters", "load_weights", "resolve_architecture",
    "diffusion_loss", "drop_labels", "loss_weights", "make_noise_scheduler", "make_sampler", "noised_batch",
    "sample_images", "weighted_mse", "make_optimizer", "step_generator", "resolve_precision",
    # a run's files
    "EmissionsFile", "MetricsLog", "RunModel", "RunDirLock", "checkpoint_dirs", "ema_model", "export_class_pipeline",
    "export_pipeline", "load_run_model", "load_unet", "read_emissions_json", "read_metrics", "save_grid",
    "save_pipeline_atomically", "to_uint8",
]
