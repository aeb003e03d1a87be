"""Compression: structural pruning (Diff-Pruning on Torch-Pruning), knowledge distillation into a
smaller student, and progressive step distillation. Each returns a cheaper ``UNet2DModel`` that
diffusers loads, trained and measured by the ordinary trainer.

The losses here are called like :func:`greendiff.train.diffusion_loss` and passed to
:func:`greendiff.train.train` as its ``objective``; :func:`objective_for` builds the one a config asks for.
The whole jobs (prune then fine-tune, distill, distill steps) are in :mod:`greendiff.workflows`.

Example (pruning half the channels of a tiny UNet, then rebuilding it as a plain ``UNet2DModel``):
    >>> import torch
    >>> from greendiff.compress import prune_in_place, rebuild
    >>> from greendiff.train import ModelConfig, build_unet, count_parameters
    >>> _ = torch.manual_seed(0)
    >>> unet = build_unet(ModelConfig(preset="tiny", block_out_channels=(16, 32, 32)), 8, 1, 1000)
    >>> before = count_parameters(unet)
    >>> prune_in_place(unet, 0.5, "magnitude", torch.randn(2, 1, 8, 8))
    >>> smaller = rebuild(unet)
    >>> smaller.block_out_channels, count_parameters(smaller.unet) < before / 3
    ((8, 16, 16), True)
"""

from __future__ import annotations

from pathlib import Path

from greendiff.compress._distill import DistillationObjective
from greendiff.compress._prune import IMPORTANCES, accumulate_taylor_gradients, check_ratio, prune_in_place, rebuild
from greendiff.compress._steps import StepDistillationObjective, check_rounds
from greendiff.errors import UserInputError
from greendiff.train import TrainConfig


def check_teacher(teacher, folder: Path, resolution: int, channels: int) -> None:
    """One-line error if the teacher ``UNet2DModel`` cannot see data of this resolution and channel count."""
    if teacher.config.sample_size != resolution or teacher.config.in_channels != channels:
        raise UserInputError(f"teacher {folder} works on {teacher.config.in_channels}x{teacher.config.sample_size}x"
                             f"{teacher.config.sample_size} images, the data is {channels}x{resolution}x{resolution}; "
                             "use the teacher's dataset and resolution")


def load_teacher(folder: Path, resolution: int, channels: int):
    """The teacher ``UNet2DModel`` in ``folder``; one-line error if it is missing or cannot see this data."""
    from greendiff.train import load_unet

    if not (folder / "config.json").is_file():
        raise UserInputError(f"teacher {folder}: no saved model (expected a UNet2DModel folder with config.json, "
                             "e.g. RUN/pipeline/unet)")
    teacher = load_unet(folder, "teacher")
    check_teacher(teacher, folder, resolution, channels)
    return teacher


def objective_for(config: TrainConfig, channels: int):
    """The training loss ``config.distill`` asks for, or None for the plain denoising loss."""
    distill = config.distill
    if distill.kind == "none":
        return None
    teacher = load_teacher(Path(distill.teacher), config.data.resolution, channels)
    if distill.kind == "output":
        return DistillationObjective(teacher, distill.data_weight, distill.output_weight, distill.feature_weight)
    return StepDistillationObjective(teacher, distill.teacher_steps)


__all__ = [
    # structural pruning
    "IMPORTANCES", "accumulate_taylor_gradients", "check_ratio", "prune_in_place", "rebuild",
    # distillation objectives, passed to train() as its objective
    "DistillationObjective", "StepDistillationObjective", "objective_for", "check_teacher", "load_teacher",
    "check_rounds",
]
