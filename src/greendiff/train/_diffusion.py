"""Diffusion math around diffusers' schedulers: the training loss and a sampler. Pure functions.

Class conditioning follows classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion
Guidance"): the loss drops labels to the null class at random, the sampler mixes the conditional and
unconditional predictions (:mod:`greendiff.pipelines`, shared with the exported pipeline).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from greendiff.errors import UserInputError
from greendiff.pipelines import check_class_labels, check_guidance_scale, guided_output, guided_scheduler, num_classes_of
from greendiff.train._config import RecipeConfig
from greendiff.train._objectives import EpsilonObjective, FlowObjective, VObjective
from greendiff.train._timesteps import TimestepSampling


def make_noise_scheduler(optim: RecipeConfig, clip_sample: bool = True):
    """The training scheduler: for epsilon and v a ``DDPMScheduler`` with the recipe's beta schedule and
    prediction type, clipping its predicted clean sample to [-1, 1] only when ``clip_sample`` (pixels: latents
    are not bounded); for flow a ``FlowMatchEulerDiscreteScheduler`` (no shift), which also samples."""
    if optim.objective == "flow":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=optim.num_train_timesteps, shift=1.0)
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=optim.num_train_timesteps, beta_schedule=optim.beta_schedule,
                         prediction_type=optim.prediction_type, clip_sample=clip_sample)


#: The few-step multistep solvers ``optim.sampler`` may name, and their settings over the training scheduler's
#: config: DPM-Solver++ 2M (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
#: Probabilistic Models"), UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
#: Sampling of Diffusion Models"; diffusers' default bh2 predictor-corrector of order 2).
SOLVERS: dict[str, tuple[str, dict[str, object]]] = {
    "dpm-solver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_sampler(optim: RecipeConfig, noise_scheduler):
    """The preview/evaluation sampler on the training scheduler's betas and prediction type: DDPM (all
    steps), DDIM (Song et al. 2021), DPM-Solver++ 2M or UniPC (:data:`SOLVERS`; few steps; clipping their
    predicted clean image by thresholding when the training scheduler clips); a flow objective's Euler
    scheduler samples as it is."""
    import diffusers
    from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

    if optim.objective == "flow" or isinstance(noise_scheduler, FlowMatchEulerDiscreteScheduler):
        return FlowMatchEulerDiscreteScheduler.from_config(noise_scheduler.config)
    if optim.sampler in SOLVERS:
        name, settings = SOLVERS[optim.sampler]
        # a pixel model's scheduler clips the predicted clean image; these solvers have no clip_sample, but their
        # thresholding with ratio 1 > sample_max_value = the clip range is the same clip (unclipped, an untrained
        # or young model's data prediction at t ~ T is ~1/sqrt(alpha_bar) too large and every sample saturates)
        clip = bool(getattr(noise_scheduler.config, "clip_sample", False))
        limits = {"thresholding": clip, "sample_max_value": float(noise_scheduler.config.get("clip_sample_range", 1.0))}
        return getattr(diffusers, name).from_config(noise_scheduler.config, **settings, **limits)
    cls = DDIMScheduler if optim.sampler == "ddim" else DDPMScheduler
    return cls.from_config(noise_scheduler.config)


def recipe_objective(optim: RecipeConfig) -> EpsilonObjective | VObjective | FlowObjective:
    """The recipe's objective (:mod:`greendiff.train._objectives`): ε- or v-prediction drawing timesteps as
    ``optim.timestep_sampling`` says (:class:`~greendiff.train._timesteps.TimestepSampling`), or flow matching at
    logit-normal times (``optim.flow_logit_*``); either with ``optim.noise_assignment``."""
    if optim.objective == "flow":
        return FlowObjective(optim.flow_logit_mean, optim.flow_logit_std, optim.num_train_timesteps,
                             optim.noise_assignment)
    sampling = TimestepSampling(optim.timestep_sampling, optim.timestep_logit_mean, optim.timestep_logit_std,
                                optim.speed_k, optim.speed_tau, optim.speed_lambda)
    kind = EpsilonObjective if optim.objective == "epsilon" else VObjective
    return kind(sampling, optim.noise_assignment)


def loss_weights(noise_scheduler, timesteps: torch.Tensor, optim: RecipeConfig) -> torch.Tensor:
    """Per-sample loss weights: uniform, or Min-SNR-γ (Hang et al., ICCV 2023).

    For epsilon prediction the weight is min(SNR, γ) / SNR; for v-prediction min(SNR, γ) / (SNR + 1); for
    flow t²·min(SNR, γ) with SNR = ((1 − t) / t)² (:class:`~greendiff.train.FlowObjective`).
    """
    gamma = None if optim.loss_weighting == "uniform" else optim.snr_gamma
    return recipe_objective(optim).weights(timesteps, noise_scheduler, gamma)


def noised_batch(noise_scheduler, x0: torch.Tensor, generator: torch.Generator,
                 optim: RecipeConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy, timesteps, target)`` for a batch ``x0`` (B, C, H, W) in [-1, 1]: noise and timesteps
    drawn from ``generator`` (``optim.timestep_sampling``, ``optim.noise_assignment``:
    :mod:`greendiff.train._timesteps`); the target is the noise (epsilon) or the velocity, as
    :func:`recipe_objective` draws them."""
    draw = recipe_objective(optim).draw(x0, noise_scheduler, generator)
    return draw.noisy, draw.timesteps, draw.target


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``weights`` (B,) times each sample's mean squared error, in fp32."""
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=tuple(range(1, prediction.ndim)))
    return (per_sample * weights.to(per_sample.device)).mean()


def drop_labels(labels: torch.Tensor, cond_dropout: float, null_class: int, generator: torch.Generator) -> torch.Tensor:
    """``labels`` (B,) with each one replaced by ``null_class`` with probability ``cond_dropout``, drawn
    from ``generator`` (B uniform draws, always, so a step's later draws do not depend on the rate): the
    model learns the unconditional prediction too (Ho & Salimans 2022, section 3.2). 0 keeps every label,
    1 drops them all.

    Example:
        >>> drop_labels(torch.tensor([0, 1, 2]), 1.0, 10, torch.Generator().manual_seed(0)).tolist()
        [10, 10, 10]
    """
    if isinstance(cond_dropout, bool) or not isinstance(cond_dropout, (int, float)) or not math.isfinite(cond_dropout) \
            or not 0.0 <= cond_dropout <= 1.0:
        raise UserInputError(f"optim.cond_dropout must be a probability between 0 and 1, got {cond_dropout!r}")
    dropped = torch.rand(labels.shape[0], generator=generator) < cond_dropout  # (B,) on the generator's device
    return torch.where(dropped.to(labels.device), torch.full_like(labels, null_class), labels)


def diffusion_loss(unet, noise_scheduler, x0: torch.Tensor, generator: torch.Generator, optim: RecipeConfig,
                   labels: torch.Tensor | None = None, cond_dropout: float = 0.0,
                   null_class: int | None = None) -> torch.Tensor:
    """Weighted denoising loss of a clean batch ``x0`` (B, C, H, W): images in [-1, 1], or scaled latents; noise
    drawn from ``generator``.

    Args:
        labels: Class ids (B,) of a class-conditional UNet; None (default): unconditional, the same
            draws and result as before conditioning existed.
        cond_dropout: Probability that a label is replaced by the null class (:func:`drop_labels`),
            drawn from ``generator`` after the noise and timesteps.
        null_class: The null class id; default the UNet's (K, from its config).
    """
    noisy, timesteps, target = noised_batch(noise_scheduler, x0, generator, optim)
    if labels is None:
        prediction = unet(noisy, timesteps).sample
    else:
        null = num_classes_of(unet) if null_class is None else null_class
        conditioned = drop_labels(labels, cond_dropout, null, generator).to(x0.device)
        prediction = unet(noisy, timesteps, class_labels=conditioned).sample
    return weighted_mse(prediction, target, loss_weights(noise_scheduler, timesteps, optim))


def check_sampling_labels(unet, n: int, labels, guidance_scale: float) -> tuple[torch.Tensor | None, float]:
    """``(labels as an (n,) tensor or None, guidance scale)`` for :func:`sample_images`; one-line
    :class:`UserInputError` for labels a class-conditional UNet lacks (or an unconditional one is given),
    a count other than ``n``, an id outside 0..K-1, or a guidance scale that is not a finite number >= 0."""
    w = check_guidance_scale(guidance_scale)
    num_classes = num_classes_of(unet)
    if labels is None:
        if num_classes:
            raise UserInputError(f"this model is class-conditional ({num_classes} classes); give one class label per "
                                 "image (e.g. a balanced list)")
        if w != 1.0:
            raise UserInputError(f"guidance scale {w} needs class labels; this model is unconditional")
        return None, w
    ids = check_class_labels(labels, num_classes)
    if ids.shape[0] != n:
        raise UserInputError(f"{ids.shape[0]} class labels for {n} images; give one per image")
    return ids, w


def takes_generator(scheduler) -> bool:
    """Whether ``scheduler.step`` takes a ``generator`` (DDPM, DDIM, DPM-Solver++ do; UniPC does not)."""
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters


@torch.no_grad()
def sample_images(unet, sampler, n: int, steps: int, shape: tuple[int, int, int], generator: torch.Generator,
                  device: torch.device | str = "cpu", batch_size: int = 256,
                  labels: Sequence[int] | torch.Tensor | None = None, guidance_scale: float = 1.0,
                  on_step: Callable[[float], None] | None = None, clip: bool = True) -> torch.Tensor:
    """``n`` images (n, C, H, W) in [-1, 1] from pure noise, ``steps`` sampler steps, seeded by ``generator``
    (``clip`` False: samples of a latent space, left unbounded and in fp32 for the decoder).

    Args:
        labels: One class id per image for a class-conditional UNet (None: an unconditional one).
        guidance_scale: Classifier-free guidance w (:func:`greendiff.pipelines.guided_noise`): 1 the
            conditional model alone, 0 the unconditional one, otherwise two forwards per step (one batch).
        on_step: Called after every sampler step with the images done so far (a float: a batch halfway
            through its steps counts half), for a progress bar; the last call gives ``n``.
    """
    ids, w = check_sampling_labels(unet, n, labels, guidance_scale)
    sampler = guided_scheduler(sampler, w)  # no clip_sample when two predictions are mixed (see there)
    extra = {"generator": generator} if takes_generator(sampler) else {}  # UniPC's step() draws nothing
    out = []
    for start in range(0, n, batch_size):
        sampler.set_timesteps(steps)  # per batch: a flow-matching Euler scheduler counts its steps
        x = torch.randn((min(batch_size, n - start), *shape), generator=generator).to(device)
        batch_labels = None if ids is None else ids[start:start + x.shape[0]]
        for i, t in enumerate(sampler.timesteps, 1):
            model_output = guided_output(unet, x, t, batch_labels, w).float()  # the step in fp32 (flow's casts back)
            x = sampler.step(model_output, t, x, **extra).prev_sample
            if on_step is not None:
                on_step(start + x.shape[0] * i / len(sampler.timesteps))
        out.append((x.clamp(-1, 1) if clip else x).float().cpu())
    return torch.cat(out)
