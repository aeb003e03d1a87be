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

import logging

import torch

from greendiff.data import Batch
from greendiff.train._images import unit_images
from greendiff.train._vae import VaeShape

logger = logging.getLogger(__name__)


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

    def x0(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The clean images of ``batch`` in [-1, 1], float32 on the CPU (no draw: ``generator`` unused)."""
        return unit_images(batch.images)

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
        max_cache_gb: The most the cached latents may take in memory (``data.cache_max_gb``); larger ones are
            not cached (every step encodes its batch, as a streamed dataset decodes its own).
    """

    vae: torch.nn.Module
    shape: VaeShape
    vae_sha256: str
    resolution: int
    cache_root: Path | None = None
    max_cache_gb: float = float("inf")
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
        from greendiff.data import PriorPairs

        if isinstance(data, PriorPairs):  # DreamBooth's pairs: the images cached, the pairing kept
            return data.with_inner(self.training_data(data.inner, encode_window, report))
        c, h, w = self.model_shape((data.channels, self.resolution, self.resolution))
        latents_gb = data.num_images * c * h * w * 2 * 4 / 1e9  # mean and std, float32
        if latents_gb > self.max_cache_gb:
            logger.warning("the latents of %s images would take %.1f GB, more than data.cache_max_gb %g: not cached, "
                           "every step encodes its batch", f"{data.num_images:,}", latents_gb, self.max_cache_gb)
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
        return latents.sample(generator, self.scaling_factor, self.shape.shift_factor)

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


def sample_decoded(space: PixelSpace | LatentSpace | None, net, sampler, n: int, steps: int,
                   model_shape: tuple[int, int, int], generator: torch.Generator, device: torch.device | str = "cpu",
                   **kwargs) -> torch.Tensor:
    """``n`` images (n, C, H, W) in [-1, 1]: :func:`~greendiff.train.sample_images` in the model's space
    (``model_shape``; latents left unclipped) then decoded by ``space`` (None: pixels); ``kwargs`` (labels,
    guidance scale, ``on_step``) as there."""
    from greendiff.train._diffusion import sample_images

    latent = space is not None and space.latent
    x = sample_images(net, sampler, n, steps, model_shape, generator, device, clip=not latent, **kwargs)
    return space.decode(x) if latent else x


def space_for(config, device: torch.device | str = "cpu") -> PixelSpace | LatentSpace:
    """The space ``config`` trains in: pixels, or the latent space of ``model.vae`` (loaded now, checked:
    one-line errors for a folder that is not a usable ``AutoencoderKL``), with the latent cache under
    ``data.latent_cache_dir`` (or the default root) unless ``data.latent_cache`` is off."""
    if not config.model.vae:
        return PixelSpace()
    from greendiff.train._vae import load_vae, read_vae_shape, vae_weights_sha256

    folder = Path(config.model.vae)
    shape = read_vae_shape(folder, "model.vae")
    root = cache_root(config) if config.data.latent_cache else None
    space = LatentSpace(load_vae(folder, "model.vae"), shape, vae_weights_sha256(folder), config.data.resolution, root,
                        config.data.cache_max_gb)
    return space.to(device)


def check_space(config, channels: int) -> tuple[int, int]:
    """``(side, channels)`` of the model's samples for ``channels``-channel images of ``config``: the images'
    own in pixel space; in latent space the VAE's. Checked before a run directory or a ledger row exists,
    one line each: a ``model.vae`` folder that is not a usable AutoencoderKL (its weights loaded, so a damaged
    file is caught now), images of other channels than the data's, a resolution its downsampling does not
    divide, a latent cache folder that cannot be written."""
    from greendiff.errors import UserInputError
    from greendiff.names import display_path

    if not config.model.vae:
        return config.data.resolution, channels
    from greendiff.train._vae import latent_size, load_vae, read_vae_shape

    shape = read_vae_shape(Path(config.model.vae), "model.vae")
    if shape.image_channels != channels:
        raise UserInputError(f"model.vae {display_path(Path(config.model.vae))} encodes {shape.image_channels}-channel "
                             f"images; the dataset {config.data.dataset!r} has {channels}: train a VAE on this data "
                             "(greendiff vae train)")
    side = latent_size(shape, config.data.resolution, "model.vae")
    load_vae(Path(config.model.vae), "model.vae")
    if config.data.latent_cache:
        check_writable(cache_root(config))
    return side, shape.latent_channels


def cache_root(config) -> Path:
    """The latent cache's folder of ``config``: ``data.latent_cache_dir``, else the default root."""
    from greendiff.train._latents import default_cache_root

    return Path(config.data.latent_cache_dir) if config.data.latent_cache_dir else default_cache_root()


def check_writable(root: Path) -> None:
    """``root`` (or its nearest existing parent, where it would be made) is a folder this process may write;
    a one-line error naming the way out otherwise."""
    import os

    from greendiff.errors import UserInputError
    from greendiff.names import display_path

    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"the latent cache {display_path(root)} cannot be written ({display_path(existing)} is "
                             "not a writable folder): give --latent-cache-dir DIR, or --no-latent-cache")
