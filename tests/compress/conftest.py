from __future__ import annotations

import pytest
import torch

from greendiff.train import ModelConfig, build_unet


@pytest.fixture
def unet():
    """A 3-level UNet with attention at 8x8, 16/32/32 channels (GroupNorm 8 groups, 2 heads of 8 at 16)."""
    def make(channels=(16, 32, 32), preset="tiny", layers=-1):
        torch.manual_seed(0)
        return build_unet(ModelConfig(preset=preset, block_out_channels=channels, layers_per_block=layers), 8, 1, 1000)
    return make


def pytest_configure(config):
    torch.set_num_threads(1)
