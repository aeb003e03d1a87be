"""The distillation objective a config asks for and its teacher checks, re-exported by greendiff.compress."""

from __future__ import annotations

import pytest
import torch

import greendiff.compress as compress
from greendiff.compress import DistillationObjective, StepDistillationObjective, load_teacher, objective_for
from greendiff.errors import UserInputError
from greendiff.train import ModelConfig, build_unet, resolve_config


def test_the_package_holds_no_code_only_its_public_names():
    from greendiff.compress import _objective

    assert (compress.objective_for, compress.load_teacher, compress.check_teacher) == \
        (_objective.objective_for, _objective.load_teacher, _objective.check_teacher)
    assert all(getattr(compress, name).__module__.startswith("greendiff.compress._")
               for name in compress.__all__ if callable(getattr(compress, name)))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("teacher")
    build_unet(ModelConfig(preset="nano", block_out_channels=(8, 16)), 8, 1, 100).save_pretrained(str(folder))
    return folder


def config(optim=None, **distill):
    return resolve_config(overrides={"model.preset": "nano", "model.block_out_channels": "8,16", "data.resolution": 8,
                                     **{f"optim.{k}": v for k, v in (optim or {}).items()},
                                     **{f"distill.{k}": v for k, v in distill.items()}})


def test_objective_for_builds_the_loss_the_config_asks_for(teacher_dir):
    assert objective_for(config(), channels=1) is None
    assert isinstance(objective_for(config(kind="output", teacher=str(teacher_dir)), channels=1), DistillationObjective)
    steps = objective_for(config({"sampler": "ddim", "sample_steps": 2}, kind="steps", teacher=str(teacher_dir),
                                teacher_steps=4), channels=1)
    assert isinstance(steps, StepDistillationObjective)


def test_a_teacher_that_cannot_see_the_data_is_one_line(tmp_path, teacher_dir):
    with pytest.raises(UserInputError, match=r"works on 1x8x8 images, the data is 3x8x8"):
        load_teacher(teacher_dir, 8, 3)
    with pytest.raises(UserInputError, match="no saved model"):
        load_teacher(tmp_path, 8, 1)
