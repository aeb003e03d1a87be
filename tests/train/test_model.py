from __future__ import annotations

import pytest

from greendiff.errors import UserInputError
from greendiff.train import PRESETS, ModelConfig, build_unet, count_macs, count_parameters, resolve_architecture


def test_presets_grow_in_size():
    sizes = [count_parameters(build_unet(ModelConfig(preset=p), 16, 1, 1000)) for p in ("pico", "nano", "tiny", "small")]
    assert sizes == sorted(sizes) and sizes[0] > 10_000 and sizes[1] > 3 * sizes[0]


def test_explicit_overrides_beat_the_preset():
    arch = resolve_architecture(ModelConfig(preset="tiny", block_out_channels=(8, 16), layers_per_block=2, attention="off"))
    assert (arch.block_out_channels, arch.layers_per_block, arch.attention) == ((8, 16), 2, False)
    assert resolve_architecture(ModelConfig(preset="nano")) == PRESETS["nano"]


def test_macs_scale_with_resolution():
    unet = build_unet(ModelConfig(preset="nano"), 16, 1, 1000)
    assert count_macs(unet, 16, 1) == pytest.approx(4 * count_macs(unet, 8, 1), rel=0.05)


def test_resolution_must_survive_downsampling():
    with pytest.raises(UserInputError, match="resolution 18 is not divisible by 4"):
        build_unet(ModelConfig(preset="tiny"), 18, 1, 1000)


def test_unknown_preset():
    with pytest.raises(UserInputError, match="unknown model preset 'huge'"):
        build_unet(ModelConfig(preset="huge"), 16, 1, 1000)
