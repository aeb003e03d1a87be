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

from greendiff.compress._distill import DistillationObjective
from greendiff.compress._objective import check_teacher, load_teacher, objective_for
from greendiff.compress._prune import IMPORTANCES, accumulate_taylor_gradients, check_ratio, prune_in_place, rebuild
from greendiff.compress._steps import StepDistillationObjective, check_rounds

__all__ = [
    # structural pruning
    "IMPORTANCES", "accumulate_taylor_gradients", "check_ratio", "prune_in_place", "rebuild",
    # distillation objectives, passed to train() as its objective
    "DistillationObjective", "StepDistillationObjective", "objective_for", "check_teacher", "load_teacher",
    "check_rounds",
]
