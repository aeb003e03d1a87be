"""Diffusion math around diffusers' schedulers: the training loss and a sampler. Pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from greendiff.train._config import RecipeConfig


def make_noise_scheduler(optim: RecipeConfig):
    """The training scheduler (``DDPMScheduler``) with the recipe's beta schedule and prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=optim.num_train_timesteps, beta_schedule=optim.beta_schedule,
                         prediction_type=optim.prediction_type)


def make_sampler(optim: RecipeConfig, noise_scheduler):
    """The preview/evaluation sampler: DDPM (all steps) or DDIM (few steps), same betas."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if optim.sampler == "ddim" else DDPMScheduler
    return cls.from_config(noise_scheduler.config)


def loss_weights(noise_scheduler, timesteps: torch.Tensor, optim: RecipeConfig) -> torch.Tensor:
    """Per-sample loss weights: uniform, or Min-SNR-γ (Hang et al., ICCV 2023).

    For epsilon prediction the weight is min(SNR, γ) / SNR; for v-prediction min(SNR, γ) / (SNR + 1).
    """
    if optim.loss_weighting == "uniform":
        return torch.ones_like(timesteps, dtype=torch.float32)
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=optim.snr_gamma)
    return clipped / (snr + 1) if optim.prediction_type == "v_prediction" else clipped / snr


def sample_timesteps(batch: int, num_timesteps: int, generator: torch.Generator, kind: str = "uniform") -> torch.Tensor:
    """``batch`` integer timesteps in [0, num_timesteps). ``uniform``: independent draws.
    ``stratified``: one uniform draw u, then (u + i / batch) mod 1 for i < batch, scaled to the
    timesteps (VDM's low-discrepancy sampler): the same marginal, lower loss variance per batch.

    Example:
        >>> t = sample_timesteps(4, 1000, torch.Generator().manual_seed(0), "stratified")
        >>> sorted(int(d) for d in (t.sort().values.diff()))  # one per quarter of the range
        [250, 250, 250]
    """
    if kind == "stratified":
        u = torch.rand((), generator=generator)
        fractions = (u + torch.arange(batch) / batch) % 1.0
        return (fractions * num_timesteps).long().clamp_(max=num_timesteps - 1)
    return torch.randint(0, num_timesteps, (batch,), generator=generator)


def noised_batch(noise_scheduler, x0: torch.Tensor, generator: torch.Generator,
                 optim: RecipeConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy, timesteps, target)`` for a batch ``x0`` (B, C, H, W) in [-1, 1]: noise and timesteps
    drawn from ``generator`` (uniform, or stratified: see :func:`sample_timesteps`); the target is the
    noise (epsilon) or the velocity."""
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    timesteps = sample_timesteps(x0.shape[0], noise_scheduler.config.num_train_timesteps, generator,
                                 optim.timestep_sampling)
    noise, timesteps = noise.to(x0.device), timesteps.to(x0.device)
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    target = noise if optim.prediction_type == "epsilon" else noise_scheduler.get_velocity(x0, noise, timesteps)
    return noisy, timesteps, target


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``weights`` (B,) times each sample's mean squared error, in fp32."""
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=tuple(range(1, prediction.ndim)))
    return (per_sample * weights.to(per_sample.device)).mean()


def diffusion_loss(unet, noise_scheduler, x0: torch.Tensor, generator: torch.Generator,
                   optim: RecipeConfig) -> torch.Tensor:
    """Weighted denoising loss of a batch ``x0`` (B, C, H, W) in [-1, 1]; noise drawn from ``generator``."""
    noisy, timesteps, target = noised_batch(noise_scheduler, x0, generator, optim)
    prediction = unet(noisy, timesteps).sample
    return weighted_mse(prediction, target, loss_weights(noise_scheduler, timesteps, optim))


@torch.no_grad()
def sample_images(unet, sampler, n: int, steps: int, shape: tuple[int, int, int], generator: torch.Generator,
                  device: torch.device | str = "cpu", batch_size: int = 256) -> torch.Tensor:
    """``n`` images (n, C, H, W) in [-1, 1] from pure noise, ``steps`` sampler steps, seeded by ``generator``."""
    sampler.set_timesteps(steps)
    out = []
    for start in range(0, n, batch_size):
        x = torch.randn((min(batch_size, n - start), *shape), generator=generator).to(device)
        for t in sampler.timesteps:
            model_output = unet(x, t).sample
            x = sampler.step(model_output, t, x, generator=generator).prev_sample
        out.append(x.clamp(-1, 1).float().cpu())
    return torch.cat(out)
