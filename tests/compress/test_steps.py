from __future__ import annotations

import copy

import pytest
import torch

from greendiff.compress import StepDistillationObjective, check_rounds
from greendiff.compress._steps import ddim_step, valid_teacher_steps
from greendiff.compress._steps import _scales, predicted_clean, two_step_target
from greendiff.errors import UserInputError
from greendiff.train import RecipeConfig, make_noise_scheduler


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_step_matches_diffusers(prediction_type):
    from diffusers import DDIMScheduler

    scheduler = make_noise_scheduler(RecipeConfig(objective={"v_prediction": "v"}.get(prediction_type, prediction_type)))
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(10)  # leading spacing: 900, 800, ..., 0
    z = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    for t in (900, 500, 0):  # 0 steps to the clean end (alpha = 1)
        expected = ddim.step(out, t, z).prev_sample
        got = ddim_step(out, z, torch.full((3,), t), torch.full((3,), t - 100), scheduler.alphas_cumprod, prediction_type,
                        clip=1.0)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_one_student_step_on_the_target_lands_where_two_teacher_steps_land(unet):
    teacher = unet((8, 16), preset="nano")
    scheduler = make_noise_scheduler(RecipeConfig())
    abar = scheduler.alphas_cumprod
    z_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([900, 500, 200, 100])
    gap = 50
    with torch.no_grad():
        target, z_s = two_step_target(teacher, z_t, t, gap, abar, "epsilon", clip=None)
    a_t, s_t = _scales(abar, t)
    eps = (z_t - a_t * target) / s_t  # the epsilon a perfect student would predict
    torch.testing.assert_close(ddim_step(eps, z_t, t, t - 2 * gap, abar, "epsilon", clip=None), z_s, rtol=1e-4, atol=1e-4)
    x_hat, _ = predicted_clean(eps, z_t, a_t, s_t, "epsilon")
    torch.testing.assert_close(x_hat, target, rtol=1e-4, atol=1e-4)


def test_a_round_trains_the_student_towards_the_two_step_teacher(unet):
    teacher = unet((8, 16), preset="nano")
    student = copy.deepcopy(teacher)
    torch.manual_seed(1)
    for p in student.parameters():  # start away from the two-step map
        p.data.add_(0.05 * torch.randn_like(p))
    objective = StepDistillationObjective(teacher, teacher_steps=8)
    optim = RecipeConfig(mixed_precision="no")
    scheduler = make_noise_scheduler(optim)
    from greendiff.data import load_dataset

    x0 = load_dataset("digits", 8).images[:32].float() / 127.5 - 1.0
    fixed = torch.Generator().manual_seed(99)
    with torch.no_grad():
        before = objective(student, scheduler, x0, torch.Generator().manual_seed(99), optim).item()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    for step in range(30):
        loss = objective(student, scheduler, x0, torch.Generator().manual_seed(step), optim)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
    with torch.no_grad():
        after = objective(student, scheduler, x0, fixed, optim).item()
    assert after < 0.7 * before


def test_nested_grids_and_their_errors():
    assert 40 in valid_teacher_steps(1000, 3) and 50 not in valid_teacher_steps(1000, 3)
    assert valid_teacher_steps(1000, 1)[:3] == [2, 4, 8]
    check_rounds(1000, 40, 3)
    with pytest.raises(UserInputError, match="use --teacher-steps one of: 8, 40, 200"):
        check_rounds(1000, 50, 3)
    with pytest.raises(UserInputError, match="--rounds must be >= 1"):
        check_rounds(1000, 40, 0)
