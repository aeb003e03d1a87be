"""The loss with label dropout, classifier-free guidance and sampling by class (Ho & Salimans 2022)."""

from __future__ import annotations

import math

import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.pipelines import guided_noise, guided_output
from greendiff.train import ModelConfig, RecipeConfig, build_unet, diffusion_loss, make_noise_scheduler
from greendiff.train._diffusion import drop_labels, loss_weights, noised_batch, sample_images, weighted_mse

K = 3
OPTIM = RecipeConfig(num_train_timesteps=100)


def tiny_unet(num_classes: int = K, seed: int = 0):
    torch.manual_seed(seed)
    return build_unet(ModelConfig(preset="pico", block_out_channels=(8, 16)), 8, 1, 100, num_classes=num_classes).eval()


def ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=100)


class Spy(torch.nn.Module):
    """A UNet that records each forward's batch size and class labels."""

    def __init__(self, unet) -> None:
        super().__init__()
        self.unet, self.calls = unet, []

    @property
    def config(self):
        return self.unet.config

    def forward(self, x, t, class_labels=None):
        self.calls.append((x.shape[0], None if class_labels is None else class_labels.tolist()))
        return self.unet(x, t, class_labels=class_labels)


# -- label dropout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_dropout_rate_is_honoured_within_a_binomial_bound(p):
    n = 40_000
    labels = torch.arange(n) % K
    dropped = drop_labels(labels, p, K, torch.Generator().manual_seed(0))
    share = float((dropped == K).float().mean())
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 sigma: fails about once in 16,000 seeds
    kept = dropped != K
    assert torch.equal(dropped[kept], labels[kept])  # the others keep their own label


def test_rate_zero_keeps_every_label_and_one_drops_them_all():
    labels = torch.arange(1000) % K
    assert torch.equal(drop_labels(labels, 0.0, K, torch.Generator().manual_seed(1)), labels)
    assert torch.equal(drop_labels(labels, 1.0, K, torch.Generator().manual_seed(1)), torch.full_like(labels, K))


def test_dropout_is_deterministic_per_step_generator():
    labels = torch.arange(64) % K
    a = drop_labels(labels, 0.3, K, torch.Generator().manual_seed(7))
    b = drop_labels(labels, 0.3, K, torch.Generator().manual_seed(7))
    c = drop_labels(labels, 0.3, K, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), True])
def test_a_dropout_rate_outside_0_1_is_one_line(p):
    with pytest.raises(UserInputError, match="cond_dropout must be a probability") as info:
        drop_labels(torch.zeros(2, dtype=torch.long), p, K, torch.Generator())
    assert "\n" not in str(info.value)


# -- the loss ----------------------------------------------------------------------------------------

def test_loss_without_labels_is_bit_identical_to_the_unconditional_loss():
    unet, scheduler, x0 = tiny_unet(0), make_noise_scheduler(OPTIM), torch.rand(4, 1, 8, 8) * 2 - 1
    got = diffusion_loss(unet, scheduler, x0, torch.Generator().manual_seed(3), OPTIM)
    noisy, t, target = noised_batch(scheduler, x0, torch.Generator().manual_seed(3), OPTIM)  # the loss before labels
    want = weighted_mse(unet(noisy, t).sample, target, loss_weights(scheduler, t, OPTIM))
    assert torch.equal(got, want)


def test_loss_feeds_dropped_labels_drawn_after_the_noise():
    spy, scheduler, x0 = Spy(tiny_unet()), make_noise_scheduler(OPTIM), torch.rand(6, 1, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    all_null = diffusion_loss(spy, scheduler, x0, torch.Generator().manual_seed(5), OPTIM, labels, cond_dropout=1.0)
    as_null = diffusion_loss(spy, scheduler, x0, torch.Generator().manual_seed(5), OPTIM, torch.full((6,), K))
    kept = diffusion_loss(spy, scheduler, x0, torch.Generator().manual_seed(5), OPTIM, labels, cond_dropout=0.0)
    assert [c[1] for c in spy.calls] == [[K] * 6, [K] * 6, labels.tolist()]
    assert torch.equal(all_null, as_null)  # same noise and timesteps: the dropout draws come after them
    assert kept.item() != all_null.item()


# -- guidance ----------------------------------------------------------------------------------------

def test_guidance_formula_on_known_tensors():
    cond, uncond = torch.tensor([2.0, 4.0, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    assert guided_noise(cond, uncond, 3.0).tolist() == [4.0, 10.0, -5.0]  # 1 + 3 * (c - 1)
    assert torch.equal(guided_noise(cond, uncond, 1.0), cond)
    assert torch.equal(guided_noise(cond, uncond, 0.0), uncond)


def test_w1_is_one_conditional_forward_w0_one_null_forward_else_one_of_2b():
    spy, x, t, labels = Spy(tiny_unet()), torch.randn(2, 1, 8, 8), torch.tensor(50), torch.tensor([0, 2])
    with torch.no_grad():
        cond = guided_output(spy, x, t, labels, 1.0)
        uncond = guided_output(spy, x, t, labels, 0.0)
        mixed = guided_output(spy, x, t, labels, 2.5)
    assert spy.calls == [(2, [0, 2]), (2, [K, K]), (4, [0, 2, K, K])]
    torch.testing.assert_close(mixed, uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w", [float("nan"), float("inf"), -0.5, "2"])
def test_a_bad_guidance_scale_is_one_line_before_any_forward(w):
    spy = Spy(tiny_unet())
    with pytest.raises(UserInputError, match="guidance scale must be a") as info:
        sample_images(spy, ddim(), 2, 2, (1, 8, 8), torch.Generator().manual_seed(0), labels=[0, 1], guidance_scale=w)
    assert "\n" not in str(info.value) and spy.calls == []


# -- sampling ----------------------------------------------------------------------------------------

def test_sampling_without_labels_is_bit_identical_to_the_unconditional_sampler():
    unet = tiny_unet(0)
    got = sample_images(unet, ddim(), 3, 2, (1, 8, 8), torch.Generator().manual_seed(4), batch_size=2)
    sampler, generator, want = ddim(), torch.Generator().manual_seed(4), []
    sampler.set_timesteps(2)
    with torch.no_grad():  # the sampler before labels existed
        for size in (2, 1):
            x = torch.randn((size, 1, 8, 8), generator=generator)
            for t in sampler.timesteps:
                x = sampler.step(unet(x, t).sample, t, x, generator=generator).prev_sample
            want.append(x.clamp(-1, 1))
    assert torch.equal(got, torch.cat(want))


def test_sampling_by_class_is_deterministic_for_a_seed_and_follows_the_labels():
    unet = tiny_unet()
    with torch.no_grad():
        unet.class_embedding.weight.mul_(50)  # an untrained embedding barely moves the output; make it matter

    def draw(labels, w=3.0, seed=0):
        return sample_images(unet, ddim(), 4, 2, (1, 8, 8), torch.Generator().manual_seed(seed), labels=labels,
                             guidance_scale=w, batch_size=3)

    a = draw([0, 1, 2, 0])
    assert torch.equal(a, draw([0, 1, 2, 0]))
    assert not torch.equal(a, draw([0, 1, 2, 0], seed=1))
    other = draw([1, 1, 2, 0])
    assert not torch.equal(a[0], other[0]) and torch.equal(a[2:], other[2:])  # per-image classes; batch 2 alike


@pytest.mark.parametrize("labels, w, message", [
    (None, 1.0, "class-conditional .3 classes.; give one class label per image"),
    ([0, 1], 1.0, "2 class labels for 3 images"),
    ([0, 1, 3], 1.0, "class id 3 is outside 0..2"),
    ([0, 1, -1], 2.0, "class id -1 is outside 0..2"),
])
def test_bad_labels_for_a_conditional_model_are_one_line(labels, w, message):
    with pytest.raises(UserInputError, match=message):
        sample_images(tiny_unet(), ddim(), 3, 2, (1, 8, 8), torch.Generator(), labels=labels, guidance_scale=w)


def test_an_unconditional_model_takes_no_labels_and_no_guidance():
    with pytest.raises(UserInputError, match="unconditional"):
        sample_images(tiny_unet(0), ddim(), 2, 2, (1, 8, 8), torch.Generator(), labels=[0, 1])
    with pytest.raises(UserInputError, match="guidance scale 2.0 needs class labels"):
        sample_images(tiny_unet(0), ddim(), 2, 2, (1, 8, 8), torch.Generator(), guidance_scale=2.0)


# -- few-step samplers (DPM-Solver++ 2M, UniPC) ------------------------------------------------------

def direct_scheduler(name: str, optim: RecipeConfig):
    """The diffusers scheduler ``name`` built by hand from the recipe's settings (not from a config); a pixel
    model's solvers clip the predicted clean image to [-1, 1] by thresholding at sample_max_value 1."""
    import diffusers

    common = dict(num_train_timesteps=optim.num_train_timesteps, beta_schedule=optim.beta_schedule,
                  prediction_type=optim.prediction_type)
    if name == "dpm-solver":
        return diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                                     thresholding=True, sample_max_value=1.0)
    if name == "unipc":
        return diffusers.UniPCMultistepScheduler(**common, thresholding=True, sample_max_value=1.0)
    return diffusers.DDIMScheduler(**common, clip_sample=True)


@pytest.mark.parametrize("objective", ["epsilon", "v"])
@pytest.mark.parametrize("name", ["ddim", "dpm-solver", "unipc"])
def test_each_sampler_agrees_with_diffusers_scheduler_used_directly(name, objective):
    import dataclasses

    from greendiff.train import make_sampler

    optim = dataclasses.replace(OPTIM, sampler=name, objective=objective)
    sampler = make_sampler(optim, make_noise_scheduler(optim))
    direct = direct_scheduler(name, optim)
    assert type(sampler) is type(direct)
    net = tiny_unet(0)
    out = sample_images(net, sampler, 2, 5, (1, 8, 8), torch.Generator().manual_seed(4))
    direct.set_timesteps(5)
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    first = None
    with torch.no_grad():
        for t in direct.timesteps:
            x = direct.step(net(x, t).sample.float(), t, x).prev_sample
            first = x.clone() if first is None else first
    assert len(sampler.timesteps) == 5 and torch.equal(sampler.timesteps, direct.timesteps)
    assert torch.allclose(out, x.clamp(-1, 1), atol=1e-5)
    assert not torch.allclose(first, x)  # five real steps, not one


@pytest.mark.parametrize("objective", ["epsilon", "v"])
def test_the_solvers_sample_five_steps_deterministically_and_differently(objective):
    import dataclasses

    from greendiff.train import make_sampler

    net, images = tiny_unet(0), {}
    for name in ("ddim", "dpm-solver", "unipc"):
        optim = dataclasses.replace(OPTIM, sampler=name, objective=objective)
        sampler = make_sampler(optim, make_noise_scheduler(optim))
        images[name] = sample_images(net, sampler, 3, 5, (1, 8, 8), torch.Generator().manual_seed(1), batch_size=2)
        again = sample_images(net, sampler, 3, 5, (1, 8, 8), torch.Generator().manual_seed(1), batch_size=2)
        assert images[name].shape == (3, 1, 8, 8) and torch.equal(images[name], again)
        assert bool(images[name].isfinite().all())
    assert not torch.allclose(images["dpm-solver"], images["unipc"])
    assert not torch.allclose(images["ddim"], images["dpm-solver"])


@pytest.mark.parametrize("name", ["dpm-solver", "unipc"])
def test_solvers_clip_like_their_training_scheduler(name):
    import dataclasses

    from greendiff.train import make_sampler

    optim = dataclasses.replace(OPTIM, sampler=name)
    pixel = make_sampler(optim, make_noise_scheduler(optim))
    latent = make_sampler(optim, make_noise_scheduler(optim, clip_sample=False))
    assert (pixel.config.thresholding, pixel.config.sample_max_value, latent.config.thresholding) == (True, 1.0, False)
    x0 = torch.tensor([[[[5.0, -3.0], [0.5, -0.25]]]])
    assert pixel._threshold_sample(x0).flatten().tolist() == [1.0, -1.0, 0.5, -0.25]  # the clip of clip_sample


class PointMassDenoiser(torch.nn.Module):
    """The exact denoiser of data that is one constant image ``c``: ε = (x − √ᾱ·c) / √(1 − ᾱ), or v."""

    def __init__(self, scheduler, c: float, objective: str) -> None:
        super().__init__()
        self.abar, self.c, self.objective = scheduler.alphas_cumprod, c, objective
        self.config = tiny_unet(0).config

    def forward(self, x, t, class_labels=None):
        from types import SimpleNamespace

        abar = self.abar[t.long()].view(-1, 1, 1, 1)  # (B, 1, 1, 1): guided_output gives one t per image
        eps = (x - abar.sqrt() * self.c) / (1 - abar).sqrt()
        out = eps if self.objective == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * self.c
        return SimpleNamespace(sample=out)


@pytest.mark.parametrize("objective", ["epsilon", "v"])
@pytest.mark.parametrize("name", ["ddim", "dpm-solver", "unipc"])
def test_with_the_exact_denoiser_every_sampler_lands_on_the_data_in_five_steps(name, objective):
    import dataclasses

    from greendiff.train import make_sampler

    optim = dataclasses.replace(OPTIM, sampler=name, objective=objective)
    scheduler = make_noise_scheduler(optim)
    net = PointMassDenoiser(scheduler, 0.3, objective)
    out = sample_images(net, make_sampler(optim, scheduler), 4, 5, (1, 8, 8), torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=2e-3)
