"""Timestep distributions (uniform, stratified, logit-normal, SpeeD) and immiscible noise assignment against
their definitions; the objectives draw through them; bad values are one-line errors."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.train import (
    EpsilonObjective, FlowObjective, RecipeConfig, VObjective, make_noise_scheduler, resolve_config,
)
from greendiff.train._diffusion import loss_weights, noised_batch
from greendiff.train._timesteps import TimestepSampling, assign_noise, noise_permutation, speed_weights

KINDS = ["uniform", "stratified", "logit-normal", "speed"]
DRAWS = 200_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# -- distributions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling", [TimestepSampling(kind) for kind in KINDS]
                         + [TimestepSampling("logit-normal", 0.7, 1.6),
                            TimestepSampling("speed", speed_k=3, speed_tau=0.45)])
@pytest.mark.parametrize("steps", [1, 7, 1000])
def test_every_pmf_sums_to_one_and_is_positive(sampling, steps):
    p = sampling.pmf(steps)
    assert p.shape == (steps,) and p.dtype == torch.float64
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12) and bool((p > 0).all())


def test_pmfs_match_their_definitions_by_hand():
    quarter = phi(math.log(0.25 / 0.75))  # P(sigmoid(z) < 1/4) = Phi(-ln 3) = 0.1359699
    assert TimestepSampling("logit-normal").pmf(4).tolist() == pytest.approx([quarter, 0.5 - quarter, 0.5 - quarter,
                                                                               quarter])
    assert quarter == pytest.approx(0.135969, abs=1e-6)
    m, s = 0.7, 1.6  # an off-centre one: P(t = 0 of 2) = P(m + s z < 0) = Phi(-m / s)
    assert TimestepSampling("logit-normal", m, s).pmf(2).tolist() == pytest.approx([phi(-m / s), 1 - phi(-m / s)])
    speed = TimestepSampling("speed", speed_k=5, speed_tau=0.7).pmf(10)  # 7 steps of weight 5, 3 of 1: Z = 38
    assert speed.tolist() == pytest.approx([5 / 38] * 7 + [1 / 38] * 3)
    assert TimestepSampling("uniform").pmf(4).tolist() == [0.25] * 4


@pytest.mark.parametrize("sampling", [TimestepSampling(kind) for kind in KINDS]
                         + [TimestepSampling("logit-normal", -0.5, 0.8),
                            TimestepSampling("speed", speed_k=4, speed_tau=0.3)])
def test_200k_draws_follow_the_pmf_within_sampling_error(sampling):
    steps, batch = 20, 500
    g = gen(1)
    draws = torch.cat([sampling.draw(batch, steps, g) for _ in range(DRAWS // batch)])
    assert draws.dtype == torch.int64 and int(draws.min()) >= 0 and int(draws.max()) < steps
    counts = torch.bincount(draws, minlength=steps).double()
    expected = sampling.pmf(steps) * DRAWS
    sd = (expected * (1 - expected / DRAWS)).sqrt()
    assert bool(((counts - expected).abs() <= 5 * sd).all()), (counts - expected) / sd  # 5 sigma per bin
    chi2 = float(((counts - expected) ** 2 / expected).sum())  # 19 degrees of freedom: P(chi2 > 50) < 1e-4
    assert chi2 < 50


@pytest.mark.parametrize("kind", KINDS)
def test_draws_are_deterministic_per_seed(kind):
    sampling = TimestepSampling(kind)
    assert torch.equal(sampling.draw(64, 1000, gen(3)), sampling.draw(64, 1000, gen(3)))
    assert not torch.equal(sampling.draw(64, 1000, gen(3)), sampling.draw(64, 1000, gen(4)))


def test_uniform_and_stratified_draw_exactly_as_before():
    g, h = gen(5), gen(5)
    assert torch.equal(TimestepSampling("uniform").draw(16, 1000, g), torch.randint(0, 1000, (16,), generator=h))
    u = torch.rand((), generator=gen(6))
    before = ((u + torch.arange(8) / 8) % 1.0 * 1000).long()
    assert torch.equal(TimestepSampling("stratified").draw(8, 1000, gen(6)), before)


def test_flow_logit_normal_density_integrates_to_one_and_matches_its_draws():
    m, s = 0.3, 1.2
    t = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    density = torch.exp(-((torch.log(t / (1 - t)) - m) ** 2) / (2 * s**2)) / (s * math.sqrt(2 * math.pi) * t * (1 - t))
    assert float(torch.trapezoid(density, t)) == pytest.approx(1.0, abs=1e-4)
    from greendiff.train import logit_normal_timesteps

    draws = logit_normal_timesteps(DRAWS, gen(2), m, s).double()
    below = float((draws < 0.25).double().mean())  # P(t < 1/4) = Phi((logit(1/4) - m) / s)
    assert below == pytest.approx(phi((math.log(1 / 3) - m) / s), abs=5 * math.sqrt(0.25 / DRAWS))


# -- SpeeD's change-aware weights --------------------------------------------------------------------

def test_speed_weights_follow_the_rate_of_the_process_increment():
    scheduler = make_noise_scheduler(RecipeConfig(beta_schedule="linear"))
    abar = scheduler.alphas_cumprod.double()
    rate = torch.empty_like(abar)  # central differences of 1 - abar, one-sided at the ends (np.gradient)
    rate[1:-1] = (abar[:-2] - abar[2:]) / 2
    rate[0], rate[-1] = abar[0] - abar[1], abar[-2] - abar[-1]
    norm = (rate - rate.min()) / (rate.max() - rate.min())
    w = speed_weights(scheduler.alphas_cumprod, 0.7, 0.6)
    assert w.shape == (1000,) and w.dtype == torch.float32
    assert torch.allclose(w[:700].double(), 0.4 + 0.2 * norm[:700], atol=1e-6)
    assert bool((w[700:] == 1.0).all())
    assert float(w[:700].max()) == pytest.approx(0.6, abs=1e-6) and float(w[:700].min()) >= 0.4 - 1e-6
    assert float(speed_weights(scheduler.alphas_cumprod, 0.7, 0.5)[:700].max()) == pytest.approx(0.5)


def test_objectives_multiply_min_snr_by_speeds_weights_and_leave_the_others_alone():
    optim = RecipeConfig(num_train_timesteps=100, timestep_sampling="speed", speed_tau=0.5, speed_lambda=0.8)
    scheduler = make_noise_scheduler(optim)
    t = torch.tensor([0, 20, 49, 50, 99])
    table = speed_weights(scheduler.alphas_cumprod, 0.5, 0.8)
    uniform = dataclasses.replace(optim, loss_weighting="uniform")
    assert torch.equal(loss_weights(scheduler, t, uniform), table[t])
    plain = EpsilonObjective().weights(t, scheduler, 5.0)
    assert torch.allclose(loss_weights(scheduler, t, optim), plain * table[t])
    assert loss_weights(scheduler, t, uniform)[3:].tolist() == [1.0, 1.0]
    logit = dataclasses.replace(uniform, timestep_sampling="logit-normal")
    assert torch.equal(loss_weights(scheduler, t, logit), torch.ones(5))


# -- immiscible noise assignment ---------------------------------------------------------------------

def total_distance(x0: torch.Tensor, noise: torch.Tensor) -> float:
    return float((x0.reshape(len(x0), -1).double() - noise.reshape(len(noise), -1).double()).norm(dim=1).sum())


def test_assignment_is_a_permutation_minimising_total_distance_against_brute_force():
    for seed in range(5):
        g = gen(seed)
        x0, noise = torch.rand((5, 1, 3, 3), generator=g) * 2 - 1, torch.randn((5, 1, 3, 3), generator=g)
        perm = noise_permutation(x0, noise)
        assert sorted(perm.tolist()) == list(range(5))
        best = min(total_distance(x0, noise[list(p)]) for p in itertools.permutations(range(5)))
        assigned = assign_noise(x0, noise)
        assert total_distance(x0, assigned) == pytest.approx(best, rel=1e-12)
        assert torch.equal(assigned, noise[perm])
        assert total_distance(x0, assigned) <= total_distance(x0, noise)


def test_a_known_pairing_is_found():
    x0 = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    noise = torch.tensor([[-2.0, -2.0], [2.5, 0.5], [0.5, 2.5]])
    assert noise_permutation(x0, noise).tolist() == [1, 2, 0]


@pytest.mark.parametrize("objective", [EpsilonObjective(), VObjective(), FlowObjective()])
def test_immiscible_draws_permute_the_random_draws_and_keep_their_timesteps(objective):
    scheduler = None if objective.name == "flow" else make_noise_scheduler(RecipeConfig(num_train_timesteps=100))
    x0 = torch.linspace(-1, 1, 6 * 2 * 4 * 4).reshape(6, 2, 4, 4)
    immiscible = dataclasses.replace(objective, noise_assignment="immiscible")
    plain, paired = objective.draw(x0, scheduler, gen(7)), immiscible.draw(x0, scheduler, gen(7))
    assert torch.equal(plain.timesteps, paired.timesteps)  # the assignment draws nothing
    noise = torch.randn(x0.shape, generator=gen(7))
    perm = noise_permutation(x0, noise)
    again = objective.at(x0, noise[perm], paired.timesteps, scheduler)
    assert torch.equal(paired.noisy, again.noisy) and torch.equal(paired.target, again.target)
    assert perm.tolist() != list(range(6))  # this batch is re-paired, so the test can tell
    assert torch.equal(immiscible.draw(x0, scheduler, gen(7)).noisy, paired.noisy)


@pytest.mark.parametrize("objective", ["epsilon", "v"])
def test_random_assignment_draws_bit_identically_to_before(objective):
    optim = RecipeConfig(num_train_timesteps=100, objective=objective)
    scheduler = make_noise_scheduler(optim)
    x0 = torch.linspace(-1, 1, 4 * 16).reshape(4, 1, 4, 4)
    noisy, timesteps, target = noised_batch(scheduler, x0, gen(9), optim)
    g = gen(9)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 100, (4,), generator=g)
    assert torch.equal(timesteps, t) and torch.equal(noisy, scheduler.add_noise(x0, noise, t))
    assert torch.equal(target, noise if objective == "epsilon" else scheduler.get_velocity(x0, noise, t))


# -- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, words", [
    ("optim.timestep_sampling", "lognormal", "timestep_sampling"),
    ("optim.noise_assignment", "hungarian", "noise_assignment"),
    ("optim.sampler", "dpm", "sampler"),
    ("optim.speed_k", "0.5", "speed_k"),
    ("optim.speed_tau", "0", "speed_tau"),
    ("optim.speed_lambda", "0.3", "speed_lambda"),
    ("optim.timestep_logit_std", "0", "timestep_logit_std"),
])
def test_bad_values_are_one_line_errors(key, value, words):
    with pytest.raises(UserInputError) as err:
        resolve_config(None, {key: value})
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, words", [
    ({"optim.sampler": "dpm-solver"}, "--sampler dpm-solver"),
    ({"optim.sampler": "unipc"}, "--sampler unipc"),
    ({"optim.timestep_sampling": "speed"}, "--timestep-sampling speed"),
    ({"optim.timestep_sampling": "logit-normal"}, "flow_logit_mean"),
])
def test_flow_refuses_the_samplers_and_timesteps_of_epsilon_and_v(overrides, words):
    with pytest.raises(UserInputError) as err:
        resolve_config(None, {"optim.objective": "flow", **overrides})
    assert words in str(err.value) and "\n" not in str(err.value)
    resolve_config(None, {"optim.objective": "flow", "optim.noise_assignment": "immiscible"})  # flow pairs noise too


def test_the_new_keys_resolve_and_default_to_todays_behaviour():
    default = resolve_config(None, {}).optim
    assert (default.timestep_sampling, default.noise_assignment, default.sampler) == ("uniform", "random", "ddim")
    given = resolve_config(None, {"optim.timestep_sampling": "speed", "optim.speed_k": "3", "optim.sampler": "unipc",
                                  "optim.noise_assignment": "immiscible"}).optim
    assert (given.timestep_sampling, given.speed_k, given.sampler, given.noise_assignment) == ("speed", 3.0, "unipc",
                                                                                               "immiscible")
    assert resolve_config(None, {"recipe": "baseline"}).optim.timestep_sampling == "uniform"
    assert np.isclose(default.speed_tau, 0.7) and default.speed_lambda == 0.6
