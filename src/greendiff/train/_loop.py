"""The public entry of training: :func:`train` (with this process's share of the cores) and the checks a
caller makes before a run directory exists.

The loop itself is :class:`~greendiff.train.Trainer` (``_trainer.py``); its state and step are in
``_step.py``, its events in ``_events.py``, its callback interface in ``_callbacks.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from greendiff.data import Data
from greendiff.train._callbacks import CoreRebalance
from greendiff.train._checkpoint import check_resume
from greendiff.train._config import TrainConfig
from greendiff.train._model import check_architecture, check_init_from
from greendiff.train._posthoc_ema import SnapshotCallback
from greendiff.train._precision import resolve_precision
from greendiff.train._space import check_space
from greendiff.train._step import apply_update, make_optimizer, step_generator
from greendiff.train._trainer import Trainer, TrainResult, check_data

__all__ = ["TrainResult", "apply_update", "check_data", "check_train", "make_optimizer", "step_generator", "train",
           "train_on_share"]


def check_train(config: TrainConfig, channels: int, resume_from: Path | None = None, source: str = "config") -> None:
    """What :func:`train` would refuse, checked before a run directory or a ledger row exists: the precision
    on this device, representation alignment's encoder, a latent run's VAE (:func:`~greendiff.train._space.check_space`), the architecture at this
    resolution (a DiT's patch size at the latent side), and for a resume (``resume_from``, a run
    directory) a usable checkpoint of this config's shapes (``source`` names the config in the error)."""
    from greendiff.train._align import check_align

    resolve_precision(config.optim.mixed_precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    check_align(config)  # the alignment's encoder folder (and that it is not the quality network)
    if config.finetune.enabled:  # the network is the pipeline's (checked when it is loaded)
        if resume_from is not None:
            check_resume(resume_from, config, channels, source)
        return
    side, model_channels = check_space(config, channels)  # a latent run: the VAE's latents
    if config.model.backbone == "dit":
        from greendiff.train._dit import check_patch_size

        check_patch_size(config.model.patch_size, side, config.data.resolution, config.data.resolution // side)
    else:
        check_architecture(config.model, side)
    check_init_from(config.model, side, model_channels, config.optim.num_train_timesteps, config.model.num_classes)
    if resume_from is not None:
        check_resume(resume_from, config, channels, source)


def train(config: TrainConfig, run_dir: Path, data: Data, tracker, **kwargs) -> TrainResult:
    """:func:`train_on_share` with this process's share of the cores (:class:`greendiff.parallel.CoreShare`:
    two runs on one machine must not each run a thread per core). Same arguments."""
    from greendiff.parallel import CoreShare

    with CoreShare() as cores:
        return train_on_share(config, run_dir, data, tracker, cores=cores, **kwargs)


def train_on_share(config: TrainConfig, run_dir: Path, data: Data, tracker, *, resume: bool = False,
                   callbacks: Iterable = (), objective: Callable | None = None, family=None, evaluator=None,
                   cores=None) -> TrainResult:
    """Train ``config`` on ``data`` (in memory or streamed: :func:`greendiff.data.load_dataset`) with a
    :class:`~greendiff.train.Trainer`, writing metrics, samples, checkpoints and the pipeline to ``run_dir``.

    Args:
        tracker: A started :class:`Tracker`; phases ``train``, ``sample``, ``checkpoint`` are windows.
        resume: Continue from the newest checkpoint in ``run_dir``.
        callbacks: :class:`~greendiff.train.TrainerCallback` objects, asked in order: stop signals
            (``should_interrupt``), a :class:`greendiff.plan.CarbonAwareController`, progress and loggers
            (``on_log``), a tuner's pruner (``on_evaluation`` answering a :class:`~greendiff.train.Stop`).
        objective: The loss, called like :func:`diffusion_loss` (default: the family's); distillation passes its own
            (``greendiff.compress.objective_for``), whose teacher runs inside the metered ``train`` window.
        family: The model family (default: the config's, :func:`~greendiff.train.family_for`).
        evaluator: Scores evaluations (default: a :class:`~greendiff.train.QualityEvaluator`).
        cores: A :class:`greendiff.parallel.CoreShare` rebalanced every step (``None``: threads left alone).

    With ``optim.ema_snapshots`` > 0 a :class:`~greendiff.train._posthoc_ema.SnapshotCallback` tracks the post-hoc
    EMAs, ahead of ``callbacks`` (one of them ending the run at a step must not cost the EMAs that step).
    """
    rebalance = [CoreRebalance(cores)] if cores is not None else []
    optim = config.optim
    snapshots = ([SnapshotCallback(run_dir, optim.ema_snapshots, optim.ema_snapshot_stds, config.run.max_steps)]
                 if optim.ema_snapshots > 0 else [])
    trainer = Trainer(config, run_dir, data, tracker, family=family, objective=objective, evaluator=evaluator,
                      callbacks=[*rebalance, *snapshots, *callbacks], resume=resume)
    return trainer.run()
