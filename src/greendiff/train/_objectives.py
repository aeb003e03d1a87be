"""Training objectives behind one interface: what the network sees, what it predicts, how samples weigh.

- :class:`EpsilonObjective`: ε-prediction (Ho et al. 2020), target the noise; Min-SNR-γ weight
  min(SNR, γ) / SNR (Hang et al., ICCV 2023, "Efficient Diffusion Training via Min-SNR Weighting").
- :class:`VObjective`: v-prediction (Salimans & Ho 2022), target α_t·ε − σ_t·x0; Min-SNR-γ weight
  min(SNR, γ) / (SNR + 1) (Hang et al. 2023).
- :class:`FlowObjective`: rectified flow / flow matching as SD3 trains it (Esser et al. 2024, "Scaling
  Rectified Flow Transformers", section 2 and 3.1): x_t = (1 − t)·x0 + t·ε with t from a logit-normal
  (:func:`logit_normal_timesteps`), target the velocity ε − x0, the network's timestep t·T as diffusers'
  ``FlowMatchEulerDiscreteScheduler`` uses (sigma · num_train_timesteps). Min-SNR-γ by the same rule as
  for ε and v (Hang et al. weigh the error of the predicted clean image by min(SNR, γ)): with
  x0 = x_t − t·u, the clean-image error is t² times the velocity's, so the weight is t²·min(SNR, γ), with
  SNR = ((1 − t) / t)².

The recipe's training (:func:`greendiff.train._diffusion.noised_batch` and ``loss_weights``, for
``optim.objective`` epsilon, v or flow) draws through these objects.

Example:
    >>> import torch
    >>> draw = objective_for("flow").draw(torch.zeros(2, 1, 4, 4), None, torch.Generator().manual_seed(0))
    >>> draw.noisy.shape, draw.timesteps.dtype, bool(((draw.timesteps > 0) & (draw.timesteps < 1000)).all())
    (torch.Size([2, 1, 4, 4]), torch.float32, True)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from greendiff.errors import UserInputError
from greendiff.train._timesteps import TimestepSampling, assign_noise, sample_timesteps

__all__ = ["Draw", "Objective", "EpsilonObjective", "VObjective", "FlowObjective", "objective_for",
           "logit_normal_timesteps", "sample_timesteps", "OBJECTIVES"]

OBJECTIVES = ("epsilon", "v", "flow")


@dataclass(frozen=True)
class Draw:
    """One batch's loss inputs.

    Attributes:
        noisy: The network's input (B, C, H, W), x0's dtype and device.
        timesteps: The network's timesteps (B,): integers in [0, T) for ε/v, floats t·T in (0, T) for flow.
        target: What the network should predict (B, C, H, W).
    """

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor


def logit_normal_timesteps(batch: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``batch`` times t = sigmoid(mean + std·z), z ~ N(0, 1) from ``generator``: SD3's logit-normal
    sampling (Esser et al. 2024, section 3.1, "lognorm(m, s)"; diffusers'
    ``compute_density_for_timestep_sampling("logit_normal", ...)``). Float32 in (0, 1), median
    sigmoid(mean); the middle of the path, where the velocity is hardest to predict, is drawn most.

    Example:
        >>> t = logit_normal_timesteps(10_000, torch.Generator().manual_seed(0))
        >>> round(float(t.median()), 1), bool(((t > 0) & (t < 1)).all())
        (0.5, True)
    """
    z = torch.randn(batch, generator=generator)  # (B,) on the generator's device
    return torch.sigmoid(mean + std * z)


class Objective(ABC):
    """A training objective: :meth:`draw` the loss inputs of a batch, :meth:`weights` per sample.

    The noise scheduler is passed in (a diffusers ``DDPMScheduler`` for ε/v; flow needs none).
    """

    name: ClassVar[str]

    @abstractmethod
    def draw(self, x0: torch.Tensor, noise_scheduler, generator: torch.Generator) -> Draw:
        """The :class:`Draw` for a batch ``x0`` (B, C, H, W) in [-1, 1], noise and times from ``generator``."""

    @abstractmethod
    def weights(self, timesteps: torch.Tensor, noise_scheduler, snr_gamma: float | None = None) -> torch.Tensor:
        """Per-sample loss weights (B,) float32: uniform when ``snr_gamma`` is None, else Min-SNR-γ."""

    @abstractmethod
    def at(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, noise_scheduler) -> Draw:
        """The :class:`Draw` of ``x0`` with the given ``noise`` and network ``timesteps`` (B,), nothing random:
        a validation loss at fixed timesteps and noise (:meth:`fixed_timesteps`)."""

    @abstractmethod
    def fixed_timesteps(self, k: int, noise_scheduler) -> torch.Tensor:
        """``k`` network timesteps spread evenly inside the schedule (at fractions (i + 0.5) / k)."""


@dataclass(frozen=True)
class _ScheduledObjective(Objective):
    """ε or v on a DDPM-style scheduler (``add_noise``, ``get_velocity``, ``alphas_cumprod``).

    Attributes:
        timestep_sampling: How integer timesteps are drawn: a :class:`~greendiff.train._timesteps.TimestepSampling`,
            or its kind (``uniform``, ``stratified``, ``logit-normal``, ``speed``) with default parameters.
        noise_assignment: ``random`` (each image its own draw) or ``immiscible`` (the batch's draws assigned to
            the images by :func:`~greendiff.train._timesteps.assign_noise`).
    """

    timestep_sampling: TimestepSampling | str = "uniform"
    noise_assignment: str = "random"

    def __post_init__(self) -> None:
        if isinstance(self.timestep_sampling, str):
            object.__setattr__(self, "timestep_sampling", TimestepSampling(self.timestep_sampling))

    def draw(self, x0: torch.Tensor, noise_scheduler, generator: torch.Generator) -> Draw:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)  # noise before timesteps, as always
        timesteps = self.timestep_sampling.draw(x0.shape[0], noise_scheduler.config.num_train_timesteps, generator)
        noise, timesteps = noise.to(x0.device), timesteps.to(x0.device)
        if self.noise_assignment == "immiscible":
            noise = assign_noise(x0, noise)
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)
        return Draw(noisy, timesteps, self._target(noise_scheduler, x0, noise, timesteps))

    def at(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, noise_scheduler) -> Draw:
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)
        return Draw(noisy, timesteps, self._target(noise_scheduler, x0, noise, timesteps))

    def fixed_timesteps(self, k: int, noise_scheduler) -> torch.Tensor:
        steps = noise_scheduler.config.num_train_timesteps
        return ((torch.arange(k, dtype=torch.float64) + 0.5) / k * steps).long().clamp_(max=steps - 1)

    def weights(self, timesteps: torch.Tensor, noise_scheduler, snr_gamma: float | None = None) -> torch.Tensor:
        """Min-SNR-γ (or uniform) times the timestep sampling's own weights (SpeeD's change-aware ones)."""
        sampling = self.timestep_sampling.weights(timesteps, noise_scheduler.alphas_cumprod)  # ones unless speed
        if snr_gamma is None:
            return sampling
        from diffusers.training_utils import compute_snr

        snr = compute_snr(noise_scheduler, timesteps)  # alpha_t^2 / sigma_t^2, (B,)
        return torch.clamp(snr, max=snr_gamma) / self._snr_denominator(snr) * sampling.to(snr.device)

    @abstractmethod
    def _target(self, noise_scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The regression target (B, C, H, W)."""

    @abstractmethod
    def _snr_denominator(self, snr: torch.Tensor) -> torch.Tensor:
        """What min(SNR, γ) is divided by for this target (Hang et al. 2023, section 3.4)."""


@dataclass(frozen=True)
class EpsilonObjective(_ScheduledObjective):
    """ε-prediction: the network predicts the noise; Min-SNR weight min(SNR, γ) / SNR."""

    name: ClassVar[str] = "epsilon"
    prediction_type: ClassVar[str] = "epsilon"

    def _target(self, noise_scheduler, x0, noise, timesteps):
        return noise

    def _snr_denominator(self, snr):
        return snr


@dataclass(frozen=True)
class VObjective(_ScheduledObjective):
    """v-prediction: the network predicts α_t·ε − σ_t·x0; Min-SNR weight min(SNR, γ) / (SNR + 1)."""

    name: ClassVar[str] = "v"
    prediction_type: ClassVar[str] = "v_prediction"

    def _target(self, noise_scheduler, x0, noise, timesteps):
        return noise_scheduler.get_velocity(x0, noise, timesteps)

    def _snr_denominator(self, snr):
        return snr + 1


@dataclass(frozen=True)
class FlowObjective(Objective):
    """Rectified flow: x_t = (1 − t)·x0 + t·ε, target ε − x0, t logit-normal (SD3).

    Attributes:
        logit_mean: m of t = sigmoid(m + s·z); 0 centres the draws on t = 0.5.
        logit_std: s (> 0); larger spreads the draws toward 0 and 1.
        num_train_timesteps: T: the network sees t·T, as ``FlowMatchEulerDiscreteScheduler`` gives it
            (a scheduler passed to :meth:`draw` overrides it with its own config's value).
        noise_assignment: ``random`` or ``immiscible`` (:func:`~greendiff.train._timesteps.assign_noise`).
        shift: s of SD3's shifted times t' = s·t / (1 + (s − 1)·t) (Esser et al. 2024, section 5.3.2;
            ``FlowMatchEulerDiscreteScheduler(shift=s)``); 1 leaves t as drawn. A fine-tune takes its base
            pipeline's, so it trains at the noise levels the base model did.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> _ = torch.randn((1, 1, 2, 2), generator=g)  # the noise is drawn first, then the time
        >>> t = float(logit_normal_timesteps(1, g))
        >>> draw = FlowObjective(shift=3.0).draw(torch.zeros(1, 1, 2, 2), None, torch.Generator().manual_seed(0))
        >>> round(float(draw.timesteps[0]) / 1000, 6) == round(3 * t / (1 + 2 * t), 6)
        True
    """

    name: ClassVar[str] = "flow"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    num_train_timesteps: int = 1000
    noise_assignment: str = "random"
    shift: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.logit_mean) and math.isfinite(self.logit_std) and self.logit_std > 0):
            raise UserInputError(f"flow timestep sampling needs a finite logit mean and a logit std > 0, got "
                                 f"mean {self.logit_mean!r}, std {self.logit_std!r}")

    def draw(self, x0: torch.Tensor, noise_scheduler, generator: torch.Generator) -> Draw:
        steps = self.num_train_timesteps if noise_scheduler is None else noise_scheduler.config.num_train_timesteps
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        if self.noise_assignment == "immiscible":
            noise = assign_noise(x0, noise)
        t = logit_normal_timesteps(x0.shape[0], generator, self.logit_mean, self.logit_std)
        t = self._shifted(t).to(x0.device)
        t_b = t.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1)
        return Draw((1 - t_b) * x0 + t_b * noise, t * steps, noise - x0)

    def at(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, noise_scheduler) -> Draw:
        steps = self.num_train_timesteps if noise_scheduler is None else noise_scheduler.config.num_train_timesteps
        t_b = (timesteps.float() / steps).to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return Draw((1 - t_b) * x0 + t_b * noise, timesteps, noise - x0)

    def fixed_timesteps(self, k: int, noise_scheduler) -> torch.Tensor:
        steps = self.num_train_timesteps if noise_scheduler is None else noise_scheduler.config.num_train_timesteps
        return self._shifted((torch.arange(k, dtype=torch.float32) + 0.5) / k) * steps

    def _shifted(self, t: torch.Tensor) -> torch.Tensor:
        """Times in (0, 1) shifted by :attr:`shift` (unchanged, bit for bit, at 1)."""
        return t if self.shift == 1.0 else self.shift * t / (1 + (self.shift - 1) * t)

    def weights(self, timesteps: torch.Tensor, noise_scheduler, snr_gamma: float | None = None) -> torch.Tensor:
        if snr_gamma is None:
            return torch.ones_like(timesteps, dtype=torch.float32)
        steps = self.num_train_timesteps if noise_scheduler is None else noise_scheduler.config.num_train_timesteps
        t = (timesteps.float() / steps).clamp(1e-6, 1.0)
        snr = ((1 - t) / t) ** 2
        return t**2 * torch.clamp(snr, max=snr_gamma)


_BY_NAME: dict[str, type[Objective]] = {"epsilon": EpsilonObjective, "v": VObjective, "flow": FlowObjective}


def objective_for(name: str) -> Objective:
    """The objective called ``name`` (epsilon, v or flow) with its defaults; one-line
    :class:`UserInputError` for any other name.

    Example:
        >>> objective_for("v").prediction_type
        'v_prediction'
    """
    cls = _BY_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UserInputError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return cls()
