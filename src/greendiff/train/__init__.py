"""Training: typed config, right-sized UNets, the green and baseline recipes, the trainer and its callbacks.

Example (library use; the CLI is ``greendiff train``)::

    from greendiff.train import resolve_config
    config = resolve_config(overrides={"model.preset": "nano", "run.max_steps": 20})
"""

from __future__ import annotations

from greendiff.train._callbacks import CallbackList, StepOutcome, Stop, TrainerCallback
from greendiff.train._events import (
    EndEvent, EvalEvent, ForecastEvent, LogEvent, PauseEvent, RanksInSyncEvent, StartEvent, StoppedEvent,
)
from greendiff.train._evaluation import QualityEvaluator
from greendiff.train._family import UNetFamily
from greendiff.train._artifacts import EmissionsFile, MetricsLog, load_run_model, load_unet, read_emissions_json, read_metrics
from greendiff.train._checkpoint import check_resume, checkpoint_dirs, load_latest, save_checkpoint
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
    diffusion_loss, loss_weights, make_noise_scheduler, make_sampler, noised_batch, sample_images, weighted_mse,
)
from greendiff.train._images import save_grid, to_uint8
from greendiff.train._lock import RunDirLock
from greendiff.train._loop import (
    TrainResult, batch_indices, check_data, check_train, export_pipeline, make_optimizer, step_generator, train,
)
from greendiff.train._precision import resolve_precision
from greendiff.train._stopping import StopCallback, StoppingRules
from greendiff.train._trainer import Trainer
from greendiff.train._model import PRESETS, build_unet, count_macs, count_parameters, load_weights, resolve_architecture

__all__ = [
    "CallbackList", "EndEvent", "EvalEvent", "ForecastEvent", "LogEvent", "PauseEvent", "QualityEvaluator",
    "RanksInSyncEvent", "StartEvent", "StepOutcome", "Stop", "StopCallback", "StoppedEvent", "StoppingRules",
    "Trainer", "TrainerCallback", "UNetFamily",
    "EmissionsFile", "MetricsLog", "read_emissions_json", "read_metrics",
    "BASELINE", "PRESETS", "RECIPES", "CarbonAwareConfig", "DataConfig", "DistillConfig", "ModelConfig", "RecipeConfig", "RunConfig", "TrainConfig",
    "TrainResult", "batch_indices", "build_unet", "check_data", "check_resume", "check_train", "checkpoint_dirs", "count_macs", "count_parameters",
    "diffusion_loss", "export_pipeline", "load_latest", "load_run_model", "load_unet", "load_weights", "loss_weights", "make_noise_scheduler", "make_optimizer", "make_sampler",
    "noised_batch", "parse_utc", "weighted_mse",
    "RunDirLock", "read_toml", "resolve_architecture", "resolve_config", "resolve_precision", "sample_images", "save_checkpoint",
    "save_grid", "step_generator", "to_dict", "to_toml", "to_uint8", "train",
]
