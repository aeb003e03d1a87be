"""Training: a typed config (:func:`resolve_config`: recipe defaults < file < overrides), right-sized UNets,
the :class:`Trainer` (a setup plus one ``train_step``) driven by one callback interface
(:class:`TrainerCallback`, typed events), model families (unconditional and class-conditional), and a
finished run's files (metrics, ``emissions.json``, checkpoints, the exported pipeline).

:func:`train` is the entry: it trains a config on a dataset (:func:`greendiff.data.load_dataset`) under a
started :class:`greendiff.tracking.Tracker`, and everything else plugs in as a callback (stop signals, a
carbon-aware controller, progress, loggers, a tuner's pruner). Whole jobs, with their run directory and
ledger row, are in :mod:`greendiff.workflows`; the CLI is ``greendiff train``.

Example (4 steps of a tiny UNet on 8x8 digits, a callback counting the log records):
    >>> import pathlib, tempfile
    >>> from greendiff.data import load_dataset
    >>> from greendiff.energy import EnergyMonitor, MonitorOptions
    >>> from greendiff.tracking import Tracker
    >>> from greendiff.train import TrainerCallback, resolve_config, train
    >>> config = resolve_config(overrides={"model.preset": "nano", "model.block_out_channels": "8,16",
    ...                                    "data.dataset": "digits", "data.resolution": 8, "optim.batch_size": 16,
    ...                                    "optim.sample_steps": 4, "run.num_samples": 4, "run.max_steps": 4,
    ...                                    "run.log_every": 2})
    >>> class LoggedSteps(TrainerCallback):
    ...     def __init__(self):
    ...         self.steps = []
    ...     def on_log(self, trainer, event):
    ...         self.steps.append(event.step)
    >>> folder, logged = pathlib.Path(tempfile.mkdtemp()), LoggedSteps()
    >>> tracker = Tracker("example", ledger=folder / "ledger.sqlite",
    ...                   monitor=EnergyMonitor.detect(MonitorOptions(measure_gpus=False))).start()
    >>> result = train(config, folder / "run", load_dataset("digits", 8), tracker, callbacks=[logged])
    >>> result.status, result.step, logged.steps, tracker.stop().energy_kwh > 0
    ('completed', 4, [2, 4], True)
    >>> sorted(p.name for p in (folder / "run").iterdir())
    ['checkpoints', 'metrics.jsonl', 'pipeline', 'samples']
"""

from __future__ import annotations

from greendiff.train._artifacts import (
    MetricsLog, export_pipeline, load_run_model, load_unet, read_emissions_json, read_metrics,
)
from greendiff.train._callbacks import StepOutcome, Stop, TrainerCallback
from greendiff.train._checkpoint import checkpoint_dirs
from greendiff.train._config import (
    LOGGERS, CarbonAwareConfig, ModelConfig, RecipeConfig, TrainConfig, parse_utc, read_toml, resolve_config, to_dict, to_toml,
)
from greendiff.train._diffusion import (
    diffusion_loss, loss_weights, make_noise_scheduler, make_sampler, noised_batch, sample_images, weighted_mse,
)
from greendiff.train._evaluation import QualityEvaluator
from greendiff.train._events import (
    EndEvent, EvalEvent, ForecastEvent, LogEvent, PauseEvent, PauseStartEvent, PhaseProgress, RanksInSyncEvent, StartEvent,
    StoppedEvent, Waited,
)
from greendiff.train._family import ClassConditionalFamily, UNetFamily, family_for
from greendiff.train._images import save_grid, to_uint8
from greendiff.train._lock import RunDirLock
from greendiff.train._loop import TrainResult, check_data, check_train, make_optimizer, step_generator, train
from greendiff.train._model import PRESETS, build_unet, count_macs, count_parameters
from greendiff.train._objectives import (
    Draw, EpsilonObjective, FlowObjective, Objective, VObjective, logit_normal_timesteps, objective_for,
)
from greendiff.train._precision import resolve_precision
from greendiff.train._runref import is_ledger_id, resolve_run, resolve_run_dir, run_dir_of
from greendiff.train._trainer import Trainer
from greendiff.train._dit import DIT_PRESETS, build_dit, check_patch_size
from greendiff.train._latents import (
    LatentBatch, LatentCache, LatentSet, data_fingerprint, default_cache_root, latent_cache_key,
)
from greendiff.train._space import LatentSpace, PixelSpace, latent_generator, sample_decoded, space_for
from greendiff.train._vae import VaeShape, decode_latents, encode_posterior, latent_size, load_vae, read_vae_shape
from greendiff.train._align import (
    AlignedLoss, Alignment, FrozenEncoder, Projector, alignment_weight, check_align, cosine_alignment_loss,
    dispersive_loss,
)
from greendiff.train._base_pipeline import BasePipeline, TextCondition
from greendiff.train._finetune_family import FinetuneModel, TextToImageFamily, ValidationLoss
from greendiff.train._lora import LoraSettings, add_lora, lora_layers, merge_lora, save_lora
from greendiff.train._model_card import CardFacts, model_card, write_model_card
from greendiff.train._pipeline_layout import PipelineLayout, check_pipeline_folder, read_pipeline_layout
from greendiff.train._posthoc_ema import (
    PowerEMA, SnapshotCallback, gamma_to_sigma_rel, power_ema_weight, reconstruct, sigma_rel_to_gamma, solve_weights,
)
from greendiff.train._timesteps import TimestepSampling, assign_noise, speed_weights
from greendiff.train._vae_train import (
    VAE_PRESETS, Reconstruction, build_vae, posterior_latents, reconstruct, reconstruction_quality, scaling_factor_of,
    train_vae, vae_preset,
)

__all__ = [
    "LOGGERS",
    # the trainer, its callback interface and events, its collaborators
    "train", "TrainResult", "check_data", "check_train", "Trainer", "TrainerCallback", "Stop", "StepOutcome",
    "StartEvent", "LogEvent", "EvalEvent", "ForecastEvent", "PauseStartEvent", "PauseEvent", "PhaseProgress", "StoppedEvent",
    "RanksInSyncEvent", "EndEvent", "Waited",
    "UNetFamily", "ClassConditionalFamily", "family_for", "QualityEvaluator",
    # configuration
    "TrainConfig", "ModelConfig", "RecipeConfig", "CarbonAwareConfig", "resolve_config", "read_toml", "to_dict",
    "to_toml", "parse_utc",
    # networks and diffusion math (distillation and the hardware profile reuse them)
    "PRESETS", "build_unet", "count_macs", "count_parameters", "diffusion_loss", "loss_weights", "weighted_mse",
    "noised_batch", "make_noise_scheduler", "make_sampler", "sample_images", "make_optimizer", "step_generator",
    "resolve_precision",
    # training objectives (epsilon, v, flow) behind one interface
    "Objective", "EpsilonObjective", "VObjective", "FlowObjective", "Draw", "objective_for", "logit_normal_timesteps",
    # latent diffusion: the VAE (load, encode, decode; a small one trained on the data), the latent cache, the
    # space a model trains in (pixels or latents), the DiT backbone
    "VaeShape", "read_vae_shape", "load_vae", "encode_posterior", "decode_latents", "latent_size", "VAE_PRESETS",
    "vae_preset", "build_vae", "train_vae", "posterior_latents", "scaling_factor_of", "reconstruct",
    "reconstruction_quality", "Reconstruction", "latent_generator", "sample_decoded", "LatentBatch", "LatentSet", "LatentCache", "data_fingerprint", "latent_cache_key",
    "default_cache_root", "PixelSpace", "LatentSpace", "space_for", "DIT_PRESETS", "build_dit", "check_patch_size",
    # recipe v2 levers: timestep sampling (logit-normal, SpeeD), immiscible noise, representation alignment (REPA,
    # dispersive), post-hoc EMA (EDM2)
    "TimestepSampling", "assign_noise", "speed_weights", "Alignment", "AlignedLoss", "FrozenEncoder", "Projector",
    "alignment_weight", "check_align", "cosine_alignment_loss", "dispersive_loss", "PowerEMA", "SnapshotCallback",
    "gamma_to_sigma_rel", "sigma_rel_to_gamma", "power_ema_weight", "solve_weights", "reconstruct",
    # fine-tuning a pretrained text-to-image pipeline (greendiff finetune): its layout, conditioning, LoRA, card
    "PipelineLayout", "read_pipeline_layout", "check_pipeline_folder", "BasePipeline", "TextCondition",
    "TextToImageFamily", "FinetuneModel", "ValidationLoss", "LoraSettings", "add_lora", "lora_layers", "merge_lora",
    "save_lora", "CardFacts", "model_card", "write_model_card",
    # a run's files
    "MetricsLog", "RunDirLock", "checkpoint_dirs", "export_pipeline", "load_run_model", "load_unet",
    "is_ledger_id", "read_emissions_json", "read_metrics", "resolve_run", "resolve_run_dir", "run_dir_of", "save_grid", "to_uint8",
]
