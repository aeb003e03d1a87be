"""Training a small ``AutoencoderKL`` on the user's images (for domains without a pretrained VAE, and for offline
tests and benchmarks), its latent scaling factor computed from the data, and the quality of its reconstructions.

The recipe is latent diffusion's first stage (Rombach et al., CVPR 2022, appendix G) without its adversarial
and perceptual terms, which need pretrained networks: a reconstruction loss on a sample of the posterior plus
a KL term of weight 1e-6, and a ``scaling_factor`` of 1 / std of posterior-sampled latents (their sec. 4.3.2:
"we rescale the latents to unit standard deviation"), stored in the saved config.

Example (3 steps of the nano VAE on 8x8 digits):
    >>> from greendiff.data import load_dataset
    >>> data = load_dataset("digits", 8)
    >>> vae = build_vae("nano", image_channels=1, resolution=8)
    >>> result = train_vae(vae, data, max_steps=3, batch_size=8, lr=2e-3)
    >>> images = data.reference_images(64)
    >>> factor = scaling_factor_of(posterior_latents(vae, images, torch.Generator().manual_seed(0)))
    >>> result.steps, result.final_loss > 0, factor > 0
    (3, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from greendiff.errors import UserInputError
from greendiff.train._images import unit_images
from greendiff.train._step import make_optimizer

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

KL_WEIGHT = 1e-6  #: the KL term's weight against the per-image sum of squared errors (latent diffusion's kl_weight)
ENCODE_BATCH = 256  #: images per forward pass when encoding or reconstructing for the scaling factor and metrics
MAX_PSNR_DB = 100.0  #: a perfect reconstruction's PSNR (its MSE floored at 1e-10)


@dataclass(frozen=True)
class VaePreset:
    """A VAE size for small images: ``block_out_channels`` (one encoder/decoder level each; the image side
    shrinks 2x per level after the first), ``latent_channels``, ResNet ``layers_per_block``, GroupNorm groups
    (dividing every width) and the Adam learning rate it trains well with."""

    block_out_channels: tuple[int, ...]
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    lr: float = 1e-3

    @property
    def downsample(self) -> int:
        """Image side / latent side."""
        return 2 ** (len(self.block_out_channels) - 1)


#: VAE sizes, smallest first; each halves the image side twice (32 px images -> 8x8x4 latents).
VAE_PRESETS: dict[str, VaePreset] = {
    "nano": VaePreset((16, 32, 32), lr=2e-3),
    "tiny": VaePreset((32, 64, 64), lr=1e-3),
    "small": VaePreset((64, 128, 128), layers_per_block=2, norm_num_groups=32, lr=5e-4),
}


def vae_preset(name: str) -> VaePreset:
    """The preset called ``name``, or one line listing the presets."""
    preset = VAE_PRESETS.get(name)
    if preset is None:
        raise UserInputError(f"unknown VAE --preset {name!r}: use one of {', '.join(VAE_PRESETS)}")
    return preset


def build_vae(preset: str, image_channels: int, resolution: int = 32, seed: int = 0) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` of ``preset`` for images of ``image_channels`` channels, its weights drawn
    from ``seed`` (the global RNG left as it was); ``resolution`` (pixels) is its config's ``sample_size``."""
    from diffusers import AutoencoderKL

    p = vae_preset(preset)
    levels = len(p.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(in_channels=image_channels, out_channels=image_channels,
                             down_block_types=("DownEncoderBlock2D",) * levels,
                             up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=p.block_out_channels,
                             layers_per_block=p.layers_per_block, latent_channels=p.latent_channels,
                             norm_num_groups=p.norm_num_groups, sample_size=resolution)


def vae_loss(vae, x: torch.Tensor, generator: torch.Generator,
             kl_weight: float = KL_WEIGHT) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, mse)`` of images ``x`` (float (B, C, H, W) in [-1, 1]): the decoder reconstructs a sample
    ``mean + std * eps`` of the posterior (``eps`` from ``generator``, a CPU generator); per image,
    ``loss = (||x_hat - x||^2 + kl_weight * KL(q(z|x) || N(0, I))) / (C * H * W)``, averaged over the batch
    (latent diffusion's per-image sums, divided by the pixels so it reads as a per-pixel MSE). ``mse`` is the
    reconstruction term alone, detached."""
    posterior = vae.encode(x).latent_dist
    eps = torch.randn(posterior.mean.shape, generator=generator).to(device=x.device, dtype=x.dtype)
    recon = vae.decode(posterior.mean + posterior.std * eps).sample
    squared = (recon - x).pow(2).flatten(1).sum(1)  # (B,)
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).flatten(1).sum(1)  # (B,)
    pixels = x[0].numel()
    return ((squared + kl_weight * kl) / pixels).mean(), (squared / pixels).mean().detach()


@dataclass(frozen=True)
class VaeOptim:
    """The optimizer settings :func:`~greendiff.train.make_optimizer` reads (AdamW, no weight decay)."""

    lr: float
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0


@dataclass(frozen=True)
class VaeTrainResult:
    """How training went: optimizer ``steps`` taken, the ``final_loss`` and ``final_mse`` (per pixel, images in
    [-1, 1]) of the last step."""

    steps: int
    final_loss: float
    final_mse: float


def train_vae(vae, data, max_steps: int, batch_size: int, lr: float, seed: int = 0,
              on_step: Callable[[int, float], None] | None = None, kl_weight: float = KL_WEIGHT) -> VaeTrainResult:
    """Train ``vae`` in place for ``max_steps`` AdamW steps on ``data``'s batches (``data.batches``: the same
    images per step for the same ``seed``), the posterior's noise from a generator of ``seed``: bit-identical
    on the CPU for the same arguments. ``on_step(step, loss)`` after every step (1-based). The model is left
    in eval mode without gradients. A loss that is not finite stops it with one line."""
    device = next(vae.parameters()).device
    vae.train().requires_grad_(True)
    optimizer = make_optimizer(vae.parameters(), VaeOptim(lr))
    generator = torch.Generator().manual_seed(seed)
    step, loss_value, mse_value = 0, math.nan, math.nan
    for step, batch in enumerate(data.batches(0, batch_size, seed=seed, stop_step=max_steps), start=1):
        x = unit_images(batch.images.to(device))
        loss, mse = vae_loss(vae, x, generator, kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value, mse_value = float(loss.detach()), float(mse)
        if not math.isfinite(loss_value):
            raise UserInputError(f"the VAE's loss is {loss_value} at step {step}: lower --lr (it was {lr:g})")
        if on_step is not None:
            on_step(step, loss_value)
    vae.eval().requires_grad_(False)
    return VaeTrainResult(step, loss_value, mse_value)


def _chunks(images: torch.Tensor, batch_size: int):
    """``images`` (uint8 (N, C, H, W)) in chunks of ``batch_size``, as float in [-1, 1]."""
    for start in range(0, images.shape[0], batch_size):
        yield unit_images(images[start:start + batch_size])


@torch.no_grad()
def posterior_latents(vae, images: torch.Tensor, generator: torch.Generator,
                      batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """One posterior sample ``mean + std * eps`` per image of ``images`` (uint8 (N, C, H, W)), UNscaled,
    float32 (N, c, h, w) on the CPU, ``eps`` from ``generator`` (a CPU generator)."""
    from greendiff.train._vae import encode_posterior

    out = []
    for x in _chunks(images, batch_size):
        mean, std = encode_posterior(vae, x)
        out.append(mean + std * torch.randn(mean.shape, generator=generator))
    return torch.cat(out)


def scaling_factor_of(latents: torch.Tensor) -> float:
    """1 / std of every element of ``latents`` (posterior samples, UNscaled): latents times it have unit
    variance, as latent diffusion's ``scale_factor`` (Rombach et al. 2022, sec. 4.3.2). One line when the
    latents have no spread (a collapsed encoder)."""
    std = float(latents.double().std())
    if not (math.isfinite(std) and std > 0):
        raise UserInputError(f"the VAE's latents have std {std:g}: no scaling factor (the encoder collapsed); "
                             "train again with another --lr or --seed")
    return 1.0 / std


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """Reconstructions of ``images`` (uint8 (N, C, H, W)) from the posterior mean, float32 in [-1, 1] on the CPU."""
    from greendiff.train._vae import encode_posterior

    out = []
    for x in _chunks(images, batch_size):
        mean, _ = encode_posterior(vae, x)
        decoded = vae.decode(mean.to(next(vae.parameters()).device)).sample
        out.append(decoded.float().clamp(-1.0, 1.0).cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class Reconstruction:
    """How well a VAE reconstructs ``images`` images (from the posterior mean), images read in [0, 1].

    Attributes:
        mse: mean squared error per pixel.
        psnr_db: PSNR in dB, averaged over the images (10 log10(1 / MSE) of each, at most 100 dB).
        fid: FID of the reconstructions against the originals on the ``features`` extractor's features.
        images: images scored.
        features: the feature extractor's name (``mnist``, ``inception``).
    """

    mse: float
    psnr_db: float
    fid: float
    images: int
    features: str

    def to_dict(self) -> dict:
        return {"mse": self.mse, "psnr_db": self.psnr_db, "fid": self.fid, "images": self.images,
                "features": self.features}


def reconstruction_quality(originals: torch.Tensor, recon: torch.Tensor, extractor,
                           features: str) -> Reconstruction:
    """MSE, PSNR and FID of ``recon`` (float (N, C, H, W) in [-1, 1]) against ``originals`` (uint8, the same
    images); ``extractor`` gives the features the FID is computed on (:func:`greendiff.evaluate.resolve_extractor`;
    ``features``: its name). At least 4 images."""
    from greendiff.evaluate import quality, reference_features

    n = originals.shape[0]
    if n < 4:
        raise UserInputError(f"reconstruction quality needs at least 4 images, got {n}")
    per_image = ((recon.double() + 1.0) / 2.0 - originals.double() / 255.0).pow(2).flatten(1).mean(1)  # (N,)
    psnr = (10.0 * torch.log10(1.0 / per_image.clamp(min=10.0 ** (-MAX_PSNR_DB / 10.0)))).mean()
    fid = quality(recon, reference_features(originals, extractor), extractor, kid_subset=min(1000, n)).fid
    return Reconstruction(float(per_image.mean()), float(psnr), float(fid), n, features)
