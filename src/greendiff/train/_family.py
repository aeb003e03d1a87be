"""The model family seam: everything the trainer asks of the kind of model it trains.

The trainer builds the network, draws its default loss, samples preview and evaluation batches and
exports the pipeline through one object, so it never asks what kind of model it trains (diffusers keeps
the per-model logic in its pipelines the same way). :class:`UNetFamily` is diffusers' ``UNet2DModel``
trained as a DDPM; a class-conditional or transformer family plugs in beside it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from greendiff.train._checkpoint import remove_tree
from greendiff.train._config import RecipeConfig, TrainConfig
from greendiff.train._diffusion import diffusion_loss, make_noise_scheduler, make_sampler, sample_images
from greendiff.train._model import build_unet, count_macs, count_parameters


class UNetFamily:
    """An unconditional ``UNet2DModel`` trained with :func:`diffusion_loss`, exported as a ``DDPMPipeline``.

    ``labels`` (class conditioning) and ``guidance_scale`` are accepted so a conditional family has the same
    calls; this family takes only ``labels=None`` and ``guidance_scale=1.0``.

    Example:
        >>> from greendiff.train import resolve_config
        >>> config = resolve_config(overrides={"model.preset": "nano", "model.block_out_channels": "8,16",
        ...                                    "data.resolution": 8})
        >>> net = UNetFamily().build(config, channels=1)
        >>> UNetFamily().size(net, config, channels=1)[0] > 0
        True
    """

    name = "unet"

    def build(self, config: TrainConfig, channels: int) -> torch.nn.Module:
        """The network, initialised from the current torch seed (or ``model.init_from``)."""
        return build_unet(config.model, config.data.resolution, channels, config.optim.num_train_timesteps)

    def size(self, net: torch.nn.Module, config: TrainConfig, channels: int) -> tuple[int, int]:
        """``(parameters, MACs per image)``."""
        return count_parameters(net), count_macs(net, config.data.resolution, channels)

    def noise_scheduler(self, optim: RecipeConfig):
        """The training noise schedule (diffusers ``DDPMScheduler``)."""
        return make_noise_scheduler(optim)

    def sampler(self, optim: RecipeConfig, noise_scheduler):
        """The preview and evaluation sampler (DDPM or DDIM on the same betas)."""
        return make_sampler(optim, noise_scheduler)

    def loss(self, net, noise_scheduler, x0: torch.Tensor, generator: torch.Generator, optim: RecipeConfig,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """The default objective: the weighted denoising loss of ``x0`` (B, C, H, W) in [-1, 1]."""
        _unconditional(labels)
        return diffusion_loss(net, noise_scheduler, x0, generator, optim)

    def sample(self, net, sampler, n: int, steps: int, shape: tuple[int, int, int], generator: torch.Generator,
               device: torch.device | str = "cpu", labels: torch.Tensor | None = None,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [-1, 1] in ``steps`` sampler steps, seeded by ``generator``."""
        _unconditional(labels, guidance_scale)
        return sample_images(net, sampler, n, steps, shape, generator, device)

    def export(self, net, ema, noise_scheduler, path: Path) -> None:
        """The pipeline with the EMA weights: :func:`export_pipeline`."""
        export_pipeline(net, ema, noise_scheduler, path)


def _unconditional(labels: torch.Tensor | None, guidance_scale: float = 1.0) -> None:
    if labels is not None or guidance_scale != 1.0:
        raise ValueError("UNetFamily is unconditional: labels must be None and guidance_scale 1.0")


def export_pipeline(unet, ema, noise_scheduler, path: Path) -> None:
    """``DDPMPipeline.save_pretrained`` with the EMA weights, loadable by plain diffusers. Written beside
    ``path`` and renamed into place, so a kill mid-export leaves the previous pipeline (of a resumed
    run), never half of one."""
    from diffusers import DDPMPipeline

    model = copy.deepcopy(unet).to(memory_format=torch.contiguous_format).float().cpu()
    if ema is not None:
        ema.copy_to(model.parameters())
    tmp, old = path.with_name(f".tmp-{path.name}"), path.with_name(f".old-{path.name}")
    remove_tree(tmp)  # a planted link is unlinked, never written through
    DDPMPipeline(unet=model, scheduler=noise_scheduler).save_pretrained(str(tmp))
    if path.exists() or path.is_symlink():
        remove_tree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    remove_tree(old)
