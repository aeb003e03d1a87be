"""Each training objective's target and weights against its formula; ε and v equal today's loss inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.train import (
    EpsilonObjective, FlowObjective, RecipeConfig, VObjective, logit_normal_timesteps, loss_weights, make_noise_scheduler,
    noised_batch, objective_for,
)

OPTIM = RecipeConfig(num_train_timesteps=100)


def x0_batch() -> torch.Tensor:
    return torch.linspace(-1, 1, 4 * 1 * 4 * 4).reshape(4, 1, 4, 4)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name, objective", [("epsilon", EpsilonObjective), ("v", VObjective)])
@pytest.mark.parametrize("sampling", ["uniform", "stratified"])
def test_epsilon_and_v_draw_and_weigh_exactly_as_todays_code(name, objective, sampling):
    optim = dataclasses.replace(OPTIM, objective=name, timestep_sampling=sampling,
                                loss_weighting="min-snr", snr_gamma=5.0)
    scheduler = make_noise_scheduler(optim)
    old = noised_batch(scheduler, x0_batch(), gen(3), optim)
    new = objective(timestep_sampling=sampling).draw(x0_batch(), scheduler, gen(3))
    for before, after in zip(old, (new.noisy, new.timesteps, new.target)):
        assert torch.equal(before, after)
    assert torch.equal(loss_weights(scheduler, new.timesteps, optim), objective().weights(new.timesteps, scheduler, 5.0))
    uniform = dataclasses.replace(optim, loss_weighting="uniform")
    assert torch.equal(loss_weights(scheduler, new.timesteps, uniform), objective().weights(new.timesteps, scheduler))


def test_targets_and_min_snr_weights_follow_their_formulas():
    scheduler = make_noise_scheduler(OPTIM)
    x0 = x0_batch()
    eps, v = EpsilonObjective().draw(x0, scheduler, gen(1)), VObjective().draw(x0, scheduler, gen(1))
    noise = torch.randn(x0.shape, generator=gen(1))
    abar = scheduler.alphas_cumprod[eps.timesteps].view(-1, 1, 1, 1)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    assert torch.allclose(eps.noisy, alpha * x0 + sigma * noise, atol=1e-6)
    assert torch.equal(eps.target, noise)
    assert torch.allclose(v.target, alpha * noise - sigma * x0, atol=1e-6)
    t = torch.tensor([0, 10, 50, 99])
    snr = scheduler.alphas_cumprod[t] / (1 - scheduler.alphas_cumprod[t])
    gamma = 5.0
    assert torch.allclose(EpsilonObjective().weights(t, scheduler, gamma), torch.minimum(snr, torch.tensor(gamma)) / snr)
    assert torch.allclose(VObjective().weights(t, scheduler, gamma), torch.minimum(snr, torch.tensor(gamma)) / (snr + 1))
    assert EpsilonObjective().weights(t, scheduler, gamma)[0] == pytest.approx(gamma / float(snr[0]))  # high SNR is clipped
    assert EpsilonObjective().weights(t, scheduler, gamma)[3] == pytest.approx(1.0)  # low SNR keeps weight 1


def test_flow_interpolates_and_targets_the_velocity_at_t_times_1000():
    x0 = x0_batch()
    draw = FlowObjective().draw(x0, None, gen(2))
    g = gen(2)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.sigmoid(torch.randn(4, generator=g))  # logit-normal, m=0, s=1
    assert torch.allclose(draw.timesteps, t * 1000)
    tb = t.view(-1, 1, 1, 1)
    assert torch.allclose(draw.noisy, (1 - tb) * x0 + tb * noise, atol=1e-6)
    assert torch.equal(draw.target, noise - x0)
    assert torch.equal(FlowObjective().weights(draw.timesteps, None), torch.ones(4))
    shifted = FlowObjective(logit_mean=1.0, logit_std=0.5).draw(x0, None, gen(2))
    assert torch.allclose(shifted.timesteps, torch.sigmoid(1.0 + 0.5 * torch.logit(t)) * 1000, atol=1e-3)


def test_flow_timesteps_follow_a_schedulers_train_timesteps():
    from diffusers import FlowMatchEulerDiscreteScheduler

    draw = FlowObjective().draw(x0_batch(), FlowMatchEulerDiscreteScheduler(num_train_timesteps=50), gen(2))
    assert torch.allclose(draw.timesteps, FlowObjective().draw(x0_batch(), None, gen(2)).timesteps / 20)


def test_logit_normal_draws_lie_in_0_1_with_median_a_half_as_diffusers_draws_them():
    from diffusers.training_utils import compute_density_for_timestep_sampling

    t = logit_normal_timesteps(20_000, gen(0))
    assert 0 < float(t.min()) and float(t.max()) < 1
    assert float(t.median()) == pytest.approx(0.5, abs=0.01)
    assert float(logit_normal_timesteps(20_000, gen(0), mean=1.0).median()) == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))), abs=0.01)
    theirs = compute_density_for_timestep_sampling("logit_normal", 8, logit_mean=0.3, logit_std=1.5, generator=gen(4))
    assert torch.allclose(logit_normal_timesteps(8, gen(4), 0.3, 1.5), theirs, atol=1e-6)


def test_flow_min_snr_weighs_the_clean_image_error_by_min_snr_gamma():
    t = torch.tensor([0.1, 0.5, 0.9])
    snr = ((1 - t) / t) ** 2  # 81, 1, 1/81
    weights = FlowObjective().weights(t * 1000, None, 5.0)
    assert torch.allclose(weights, t**2 * torch.clamp(snr, max=5.0))
    assert weights.tolist() == pytest.approx([0.01 * 5.0, 0.25, 0.81 / 81])
    # the recipe draws flow through loss_weights like epsilon and v
    optim = dataclasses.replace(OPTIM, objective="flow", loss_weighting="min-snr", snr_gamma=5.0)
    scheduler = make_noise_scheduler(optim)
    assert torch.allclose(loss_weights(scheduler, t * 100, optim), weights)


def test_bad_logit_parameters_are_one_line_errors():
    for bad in ({"logit_std": 0.0}, {"logit_std": -1.0}, {"logit_mean": float("nan")}):
        with pytest.raises(UserInputError, match="logit std > 0"):
            FlowObjective(**bad)


def test_objective_for_names_the_choices():
    assert [type(objective_for(n)) for n in ("epsilon", "v", "flow")] == [EpsilonObjective, VObjective, FlowObjective]
    for bad in ("v_prediction", "", None, "rectified"):
        with pytest.raises(UserInputError, match="epsilon, v, flow") as info:
            objective_for(bad)
        assert "\n" not in str(info.value)
