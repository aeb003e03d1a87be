"""Where training spends its timesteps, and which noise goes with which image. Pure functions.

- ``uniform``: t ~ U{0, ..., T-1} (Ho et al. 2020).
- ``stratified``: one uniform draw per batch, the batch spread evenly from it (VDM, Kingma et al. 2021):
  the uniform marginal with lower loss variance per batch.
- ``logit-normal``: t = floor(sigmoid(m + s·z)·T), z ~ N(0, 1): SD3's logit-normal sampling (Esser et al.
  2024, "Scaling Rectified Flow Transformers", section 3.1) on integer timesteps; most draws in the middle.
- ``speed``: SpeeD's asymmetric sampling (Wang et al. 2024, "A Closer Look at Time Steps is Worthy of Triple
  Speed-Up for Diffusion Model Training", arXiv 2405.17403): p(t) ∝ k for t < τ·T, 1 above (the convergence
  area near pure noise, where the process barely changes, drawn k times less often), with its change-aware
  loss weights (:meth:`TimestepSampling.weights`): (1 − λ) + (2λ − 1)·norm(d(1 − ᾱ_t)/dt) below τ·T, 1 above,
  norm the min-max normalisation over all t (the reference code, NUS-HPC-AI-Lab/SpeeD, ``weighting="ours"``).
  Its "dual" reflection of half the batch about the schedule's "meaningful step" (reference code only, not in
  the paper's method section) is not implemented.

Immiscible diffusion (Li et al. 2024, "Immiscible Diffusion", arXiv 2406.12303): :func:`assign_noise` pairs a
batch's noise draws with its images by a linear assignment minimising the total L2 distance.

Example:
    >>> s = TimestepSampling("speed", speed_k=5.0, speed_tau=0.7)
    >>> p = s.pmf(10)
    >>> round(float(p.sum()), 6), round(float(p[0] / p[9]), 6)
    (1.0, 5.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

TIMESTEP_SAMPLINGS = ("uniform", "stratified", "logit-normal", "speed")
NOISE_ASSIGNMENTS = ("random", "immiscible")
TimestepKind = Literal["uniform", "stratified", "logit-normal", "speed"]


def sample_timesteps(batch: int, num_timesteps: int, generator: torch.Generator, kind: str = "uniform") -> torch.Tensor:
    """``batch`` integer timesteps in [0, num_timesteps) with the default parameters of ``kind``
    (:class:`TimestepSampling`). ``stratified``: one uniform draw u, then (u + i / batch) mod 1 for i < batch.

    Example:
        >>> t = sample_timesteps(4, 1000, torch.Generator().manual_seed(0), "stratified")
        >>> sorted(int(d) for d in (t.sort().values.diff()))  # one per quarter of the range
        [250, 250, 250]
    """
    return TimestepSampling(kind).draw(batch, num_timesteps, generator)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@dataclass(frozen=True)
class TimestepSampling:
    """A distribution over the integer timesteps 0..T-1 of ε/v training, and its loss weights.

    Attributes:
        kind: ``uniform``, ``stratified``, ``logit-normal`` or ``speed`` (see the module docstring).
        logit_mean: m of logit-normal (0: centred on T/2).
        logit_std: s of logit-normal (> 0).
        speed_k: SpeeD's k: how many times more often t < τ·T is drawn than t >= τ·T (>= 1; 1 is uniform).
        speed_tau: SpeeD's τ as a share of T (0.7: τ = 700 of 1000, the paper's).
        speed_lambda: SpeeD's λ in [0.5, 1]: weights below τ·T run from 1 − λ to λ (0.5: all 0.5).
    """

    kind: TimestepKind = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    speed_k: float = 5.0
    speed_tau: float = 0.7
    speed_lambda: float = 0.6

    def draw(self, batch: int, num_timesteps: int, generator: torch.Generator) -> torch.Tensor:
        """``batch`` int64 timesteps (B,) in [0, num_timesteps) from ``generator``."""
        if self.kind == "stratified":
            u = torch.rand((), generator=generator)
            fractions = (u + torch.arange(batch) / batch) % 1.0
            return (fractions * num_timesteps).long().clamp_(max=num_timesteps - 1)
        if self.kind == "logit-normal":
            z = torch.randn(batch, generator=generator)  # (B,)
            t = torch.sigmoid(self.logit_mean + self.logit_std * z.double())
            return (t * num_timesteps).long().clamp_(max=num_timesteps - 1)
        if self.kind == "speed":
            return torch.multinomial(self.pmf(num_timesteps), batch, replacement=True, generator=generator)
        return torch.randint(0, num_timesteps, (batch,), generator=generator)

    def pmf(self, num_timesteps: int) -> torch.Tensor:
        """P(t = i) for i in 0..T-1, float64 (T,), summing to 1 (stratified: the uniform marginal).

        logit-normal: Φ((logit((i+1)/T) − m)/s) − Φ((logit(i/T) − m)/s), the mass sigmoid(m + s·z) puts
        on [i/T, (i+1)/T). speed: k/Z below τ·T, 1/Z from there, Z = k·⌊τ·T⌋ + T − ⌊τ·T⌋.
        """
        steps = num_timesteps
        if self.kind == "logit-normal":
            edges = torch.arange(steps + 1, dtype=torch.float64) / steps
            logits = torch.log(edges) - torch.log1p(-edges)  # -inf at 0, +inf at 1
            cdf = _normal_cdf((logits - self.logit_mean) / self.logit_std)
            return cdf[1:] - cdf[:-1]
        if self.kind == "speed":
            tau = self._tau(steps)
            p = torch.ones(steps, dtype=torch.float64)
            p[:tau] = self.speed_k
            return p / p.sum()
        return torch.full((steps,), 1.0 / steps, dtype=torch.float64)

    def weights(self, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
        """Per-sample loss weights (B,) float32: SpeeD's change-aware weights for ``speed``, else ones.

        Args:
            timesteps: Integer timesteps (B,).
            alphas_cumprod: The schedule's ᾱ_t (T,).
        """
        if self.kind != "speed":
            return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
        table = speed_weights(alphas_cumprod, self.speed_tau, self.speed_lambda)
        return table[timesteps.cpu()].to(timesteps.device)

    def _tau(self, num_timesteps: int) -> int:
        return int(self.speed_tau * num_timesteps)


def speed_weights(alphas_cumprod: torch.Tensor, tau: float, lam: float) -> torch.Tensor:
    """SpeeD's change-aware weights (T,) float32: the process increment's rate d(1 − ᾱ_t)/dt (central
    differences, ``np.gradient``), min-max normalised to [0, 1] over all t, mapped to [1 − λ, λ] for
    t < ⌊τ·T⌋; 1 from there on (Wang et al. 2024, section 4; reference code ``weighting="ours"``).

    Example:
        >>> abar = torch.tensor([0.99, 0.9, 0.6, 0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001])
        >>> [round(float(x), 3) for x in speed_weights(abar, 0.5, 0.6)]  # 1 - abar rises fastest at t = 2
        [0.458, 0.529, 0.6, 0.566, 0.482, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    rate = np.gradient(1.0 - alphas_cumprod.double().cpu().numpy())
    spread = rate.max() - rate.min()
    norm = (rate - rate.min()) / spread if spread > 0 else np.zeros_like(rate)
    weights = (1 - lam) + (2 * lam - 1) * norm
    weights[int(tau * len(rate)):] = 1.0
    return torch.from_numpy(weights).float()


def assign_noise(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``noise`` (B, ...) permuted along the batch so that image i gets the draw that, over the batch, makes
    the total L2 distance Σ_i ‖x0_i − noise_π(i)‖ smallest (Immiscible Diffusion, Li et al. 2024): the
    Hungarian solution of the (B, B) distance matrix of flattened samples (``scipy.optimize.
    linear_sum_assignment``). Deterministic; ties resolved by scipy. Each draw stays a standard normal.

    Example:
        >>> x0 = torch.tensor([[5.0], [-5.0]]); noise = torch.tensor([[-4.0], [4.0]])
        >>> assign_noise(x0, noise).flatten().tolist()
        [4.0, -4.0]
    """
    return noise[noise_permutation(x0, noise).to(noise.device)]


def noise_permutation(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The permutation π (B,) int64 of :func:`assign_noise`: image i gets ``noise[π[i]]``."""
    from scipy.optimize import linear_sum_assignment

    flat_x, flat_n = x0.detach().reshape(x0.shape[0], -1).float(), noise.detach().reshape(noise.shape[0], -1).float()
    cost = torch.cdist(flat_x.cpu().double(), flat_n.cpu().double()).numpy()  # (B, B): ‖x0_i − noise_j‖
    rows, cols = linear_sum_assignment(cost)
    return torch.from_numpy(cols[np.argsort(rows)]).long()
