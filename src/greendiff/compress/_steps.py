"""Progressive distillation (Salimans & Ho, ICLR 2022): halve the sampling steps per round.

The teacher samples with DDIM on ``N`` steps, the student (initialised from the teacher) on ``N/2``.
With diffusers' ``leading`` spacing and ``T % N == 0`` the student's timesteps are every other one
of the teacher's, so one student step from ``t`` must land where two teacher steps from ``t`` land,
at ``s = t - 2T/N``. The student's target ``x~`` solves the DDIM update for that landing point:

    z_s = a_s x~ + (s_s / s_t) (z_t - a_t x~)   =>   x~ = (z_s - (s_s/s_t) z_t) / (a_s - (s_s/s_t) a_t)

(``a``, ``s``: signal and noise scales). The student regresses the noise ``eps~ = (z_t - a_t x~) / s_t``
that this target implies, with the recipe's per-sample (Min-SNR) weights, as in ordinary training.
The paper's loss, ``max(SNR_t, 1) |x^ - x~|^2``, weighs an epsilon-predicting student's high-noise
errors by ``1/SNR`` (over 100x at the top of a 20-step grid); the paper pairs it with v- or x-prediction.
The teacher's steps behind the target are unclipped. A clipped target implies a noise equal to the
clipping error divided by sigma_t, which taught the student to undo clipping at low noise.
"""

from __future__ import annotations

import torch

from greendiff.errors import UserInputError
from greendiff.train import RecipeConfig, loss_weights, weighted_mse


def valid_teacher_steps(num_train_timesteps: int, rounds: int) -> list[int]:
    """Teacher step counts ``N`` (up to 200) for which every one of ``rounds`` halvings stays nested."""
    return [n for n in range(2, min(num_train_timesteps, 200) + 1)
            if n % (2 ** rounds) == 0 and all(num_train_timesteps % (n >> k) == 0 for k in range(rounds))]


def check_rounds(num_train_timesteps: int, teacher_steps: int, rounds: int) -> None:
    if rounds < 1:
        raise UserInputError(f"--rounds must be >= 1, got {rounds}")
    if teacher_steps not in valid_teacher_steps(num_train_timesteps, rounds):
        options = ", ".join(map(str, valid_teacher_steps(num_train_timesteps, rounds)[:8])) or "none"
        raise UserInputError(f"{teacher_steps} teacher steps cannot be halved {rounds} times on nested grids of "
                             f"{num_train_timesteps} timesteps; use --teacher-steps one of: {options}")


def _scales(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales ``(a_t, s_t)`` per sample, shaped to broadcast over images; t < 0 means clean."""
    abar = torch.where(t >= 0, alphas_cumprod[t.clamp_min(0)], torch.ones_like(t, dtype=alphas_cumprod.dtype))
    return abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)


def predicted_clean(model_output: torch.Tensor, z_t: torch.Tensor, a_t: torch.Tensor, s_t: torch.Tensor,
                    prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x^, eps^)`` from a network output of the given prediction type."""
    if prediction_type == "epsilon":
        return (z_t - s_t * model_output) / a_t, model_output
    if prediction_type == "v_prediction":
        return a_t * z_t - s_t * model_output, s_t * z_t + a_t * model_output
    raise UserInputError(f"step distillation supports epsilon and v_prediction, not {prediction_type!r}")


def ddim_step(model_output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
              alphas_cumprod: torch.Tensor, prediction_type: str, clip: float | None) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``t`` to ``s`` as diffusers' ``DDIMScheduler.step`` does it."""
    a_t, s_t = _scales(alphas_cumprod, t)
    a_s, s_s = _scales(alphas_cumprod, s)
    x0, eps = predicted_clean(model_output.float(), z_t, a_t, s_t, prediction_type)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)  # eps stays the unclipped one, as diffusers' default has it
    return a_s * x0 + s_s * eps


def two_step_target(teacher, z_t: torch.Tensor, t: torch.Tensor, gap: int, alphas_cumprod: torch.Tensor,
                    prediction_type: str, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x~, z_s)``: the teacher's two DDIM steps ``t -> t - gap -> s = t - 2 gap`` land on ``z_s``; ``x~`` is
    the clean image with which one DDIM step from ``t`` lands there too (module docstring)."""
    mid, s = t - gap, t - 2 * gap
    z_mid = ddim_step(teacher(z_t, t).sample, z_t, t, mid, alphas_cumprod, prediction_type, clip)
    # from a clean midpoint (mid < 0) the second step is the identity whatever the network says
    z_s = ddim_step(teacher(z_mid, mid.clamp_min(0)).sample, z_mid, mid, s, alphas_cumprod, prediction_type, clip)
    a_t, s_t = _scales(alphas_cumprod, t)
    a_s, s_s = _scales(alphas_cumprod, s)
    ratio = s_s / s_t
    return (z_s - ratio * z_t) / (a_s - ratio * a_t), z_s


class StepDistillationObjective:
    """One round's loss; called like ``diffusion_loss``. ``teacher_steps``: the teacher's DDIM steps."""

    def __init__(self, teacher, teacher_steps: int) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_steps = teacher_steps

    def __call__(self, unet, noise_scheduler, x0: torch.Tensor, generator: torch.Generator,
                 optim: RecipeConfig) -> torch.Tensor:
        if next(self.teacher.parameters()).device != x0.device:
            self.teacher.to(x0.device)
        config = noise_scheduler.config
        gap = config.num_train_timesteps // self.teacher_steps  # one teacher step
        offset = config.steps_offset
        abar = noise_scheduler.alphas_cumprod.to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        k = torch.randint(0, self.teacher_steps // 2, (x0.shape[0],), generator=generator)
        noise, t = noise.to(x0.device), (k * 2 * gap + offset).to(x0.device)  # the student's grid
        z_t = noise_scheduler.add_noise(x0, noise, t)
        with torch.no_grad():  # unclipped: the student's own step is clipped at sampling, as the teacher's is
            target, _ = two_step_target(self.teacher, z_t, t, gap, abar, config.prediction_type, clip=None)
        a_t, s_t = _scales(abar, t)
        _, eps_hat = predicted_clean(unet(z_t, t).sample.float(), z_t, a_t, s_t, config.prediction_type)
        eps_target = (z_t - a_t * target) / s_t
        return weighted_mse(eps_hat, eps_target, loss_weights(noise_scheduler, t, optim))
