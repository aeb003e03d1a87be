from __future__ import annotations

import torch

from greendiff.compress import DistillationObjective
from greendiff.compress._distill import matching_blocks
from greendiff.train import RecipeConfig, make_noise_scheduler

OPTIM = RecipeConfig(mixed_precision="no")


def digits() -> torch.Tensor:
    from greendiff.data import load_dataset

    return load_dataset("digits", 8).images[:32].float() / 127.5 - 1.0


def test_matching_blocks_pairs_only_same_shaped_block_outputs(unet):
    teacher = unet((16, 32), preset="nano", layers=2)
    deeper_is_same_shape = unet((16, 32), preset="nano", layers=1)  # BK-SDM style: fewer resnets per block
    narrower = unet((8, 16), preset="nano", layers=1)
    x = torch.zeros(1, 1, 8, 8)
    assert matching_blocks(deeper_is_same_shape, teacher, x) == ["down_blocks.0", "down_blocks.1", "mid_block",
                                                                 "up_blocks.0", "up_blocks.1"]
    assert matching_blocks(narrower, teacher, x) == []


def test_distillation_loss_falls_and_the_student_approaches_the_teacher_on_fixed_inputs(unet):
    teacher = unet((16, 32), preset="nano", layers=2)
    student = unet((16, 32), preset="nano", layers=1)
    torch.manual_seed(1)
    for p in student.parameters():  # start far from the teacher
        p.data.add_(0.05 * torch.randn_like(p))
    objective = DistillationObjective(teacher, data_weight=0.0, output_weight=1.0, feature_weight=0.1)
    scheduler = make_noise_scheduler(OPTIM)
    x0 = digits()
    probe_x, probe_t = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(7)), torch.arange(0, 1000, 63)[:16]

    def gap() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(student(probe_x, probe_t).sample, teacher(probe_x, probe_t).sample).item()

    before = gap()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss = objective(student, scheduler, x0, torch.Generator().manual_seed(step), OPTIM)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert objective.feature_blocks and "feature" in objective.last_terms
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert gap() < 0.5 * before
    assert all(p.grad is None for p in teacher.parameters()), "the teacher is frozen"


def test_data_term_is_the_plain_denoising_loss(unet):
    from greendiff.train import diffusion_loss

    student, teacher = unet((8, 16), preset="nano"), unet((16, 32), preset="nano")
    objective = DistillationObjective(teacher, data_weight=1.0, output_weight=0.0, feature_weight=0.0)
    scheduler = make_noise_scheduler(OPTIM)
    x0 = digits()
    torch.testing.assert_close(objective(student, scheduler, x0, torch.Generator().manual_seed(3), OPTIM),
                               diffusion_loss(student, scheduler, x0, torch.Generator().manual_seed(3), OPTIM))
