"""Where the diffusion model works: on pixels, or in a VAE's latent space (Rombach et al., CVPR 2022).

A space turns a step's batch into the model's clean input ``x0`` and its samples back into images, so the
trainer, the families and the samplers never ask which one they run in. :class:`PixelSpace` maps uint8
images to [-1, 1] and back. :class:`LatentSpace` trains on z = scaling_factor · (mean + std · ε) of the VAE's
posterior (its config's ``scaling_factor``; a fresh ε every step, from the step's own generator) and decodes
samples through the VAE (so their decoding is metered in the phase that samples).

With the latent cache on (``data.latent_cache``), :meth:`LatentSpace.training_data` encodes the dataset once in a
metered ``encode`` phase and the trainer streams the stored posteriors (:mod:`greendiff.train._latents`); off,
every step encodes its own batch, and draws the very same latents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from greendiff.data import Batch


def latent_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s posterior sample (distinct from the loss's noise generator)."""
    return torch.Generator().manual_seed(seed * 6_007 + step * 130_363 + 17)


class PixelSpace:
    """The images themselves: uint8 (B, C, H, W) -> [-1, 1]; samples are clamped images already."""

    latent = False
    name = "pixel"

    def model_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The model's sample shape (C, H, W) for images of ``image_shape``: the same."""
        return tuple(image_shape)

    def training_data(self, data, encode_window=None, report: Callable | None = None):
        """What the trainer streams: the images."""
        return data

    def x0(self, batch, generator: torch.Generator) -> torch.Tensor:
        """The clean images of ``batch`` in [-1, 1], float32 on the CPU."""
        return batch.images.float() / 127.5 - 1.0

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples as images in [-1, 1] (pixel samples are images)."""
        return x


@dataclass
class LatentSpace:
    """A VAE's latent space.

    Attributes:
        vae: The ``AutoencoderKL`` (frozen, eval mode).
        shape: Its :class:`~greendiff.train._vae.VaeShape` (channels, downsampling, scaling factor).
        vae_sha256: Its weights' digest (a part of the latent cache's key).
        resolution: The images' side in pixels.
        cache_root: The latent cache's folder; None: no cache (every step encodes its batch).
    """

    vae: torch.nn.Module
    shape: object
    vae_sha256: str
    resolution: int
    cache_root: Path | None = None
    latent = True
    name = "latent"

    @property
    def scaling_factor(self) -> float:
        return float(self.shape.scaling_factor)

    @property
    def latent_side(self) -> int:
        return self.resolution // self.shape.downsample

    def model_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The latents' shape (c, h, w) for images of ``image_shape`` (C, H, W)."""
        _, height, width = image_shape
        f = self.shape.downsample
        return (self.shape.latent_channels, height // f, width // f)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior (mean, std) of images in [-1, 1], unscaled."""
        from greendiff.train._vae import encode_posterior

        return encode_posterior(self.vae, images)

    def training_data(self, data, encode_window=None, report: Callable | None = None):
        """What the trainer streams: the cached posteriors of ``data`` (encoded now, inside ``encode_window()``,
        on a miss; ``report(done, total)`` after each chunk), or ``data`` itself without a cache."""
        if self.cache_root is None:
            return data
        from greendiff.train._latents import (
            LatentCache, data_fingerprint, encode_and_store, latent_cache_key, latent_key_parts,
        )

        cache = LatentCache(self.cache_root)
        identity = (data_fingerprint(data), self.vae_sha256, self.resolution)
        parts, key = latent_key_parts(*identity), latent_cache_key(*identity)
        cached = cache.lookup(key)
        if cached is not None:
            return cached
        with (encode_window() if encode_window is not None else contextlib.nullcontext()):
            return encode_and_store(cache, key, data, self.encode, on_progress=report, parts=parts)

    def x0(self, batch, generator: torch.Generator) -> torch.Tensor:
        """The scaled latent sample of ``batch``: a cached :class:`~greendiff.train._latents.LatentBatch`, or an
        image :class:`~greendiff.data.Batch` encoded now; the posterior's noise from ``generator``."""
        from greendiff.train._latents import posterior_batch

        latents = posterior_batch(batch, self.encode) if isinstance(batch, Batch) else batch
        return latents.sample(generator, self.scaling_factor)

    def decode(self, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Latent samples (in the model's scale) decoded to images in [-1, 1], fp32 on the CPU, ``batch_size``
        at a time on the VAE's device."""
        from greendiff.train._vae import decode_latents

        device = next(self.vae.parameters()).device
        return torch.cat([decode_latents(self.vae, z[i:i + batch_size].float().to(device)).float().cpu()
                          for i in range(0, z.shape[0], batch_size)])

    def to(self, device: torch.device | str) -> LatentSpace:
        """The VAE moved to ``device`` (left alone when it is there: diffusers warns on every ``to``)."""
        if next(self.vae.parameters()).device != torch.device(device):
            self.vae.to(device)
        return self


def space_for(config, device: torch.device | str = "cpu") -> PixelSpace | LatentSpace:
    """The space ``config`` trains in: pixels, or the latent space of ``model.vae`` (loaded now, checked:
    one-line errors for a folder that is not a usable ``AutoencoderKL``), with the latent cache under
    ``data.latent_cache_dir`` (or the default root) unless ``data.latent_cache`` is off."""
    if not config.model.vae:
        return PixelSpace()
    from greendiff.train._latents import default_cache_root
    from greendiff.train._vae import load_vae, read_vae_shape, vae_weights_sha256

    folder = Path(config.model.vae)
    shape = read_vae_shape(folder, "model.vae")
    root = None
    if config.data.latent_cache:
        root = Path(config.data.latent_cache_dir) if config.data.latent_cache_dir else default_cache_root()
    space = LatentSpace(load_vae(folder, "model.vae"), shape, vae_weights_sha256(folder), config.data.resolution, root)
    return space.to(device)


def check_space(config, channels: int) -> tuple[int, int]:
    """``(side, channels)`` of the model's samples for ``channels``-channel images of ``config``: the images'
    own in pixel space; in latent space the VAE's (``model.vae`` read from its config.json alone: one-line
    errors for a folder that is not a usable AutoencoderKL, images of other channels than the data's, or a
    resolution its downsampling does not divide)."""
    from greendiff.errors import UserInputError
    from greendiff.names import display_path

    if not config.model.vae:
        return config.data.resolution, channels
    from greendiff.train._vae import latent_size, read_vae_shape

    shape = read_vae_shape(Path(config.model.vae), "model.vae")
    if shape.image_channels != channels:
        raise UserInputError(f"model.vae {display_path(Path(config.model.vae))} encodes {shape.image_channels}-channel "
                             f"images; the dataset {config.data.dataset!r} has {channels}: train a VAE on this data "
                             "(greendiff vae train)")
    return latent_size(shape, config.data.resolution, "model.vae"), shape.latent_channels
