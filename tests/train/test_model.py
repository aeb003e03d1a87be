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


def test_init_from_copies_saved_weights_and_refuses_another_architecture(tmp_path):
    import torch

    torch.manual_seed(0)
    source = build_unet(ModelConfig(preset="nano", block_out_channels=(8, 16)), 8, 1, 1000)
    source.save_pretrained(str(tmp_path / "unet"))
    torch.manual_seed(1)
    copy = build_unet(ModelConfig(preset="nano", block_out_channels=(8, 16), init_from=str(tmp_path / "unet")), 8, 1, 1000)
    for a, b in zip(source.parameters(), copy.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(UserInputError, match="differs from the config's"):
        build_unet(ModelConfig(preset="nano", init_from=str(tmp_path / "unet")), 8, 1, 1000)
    with pytest.raises(UserInputError, match="not a saved UNet2DModel"):
        build_unet(ModelConfig(preset="nano", init_from=str(tmp_path)), 8, 1, 1000)
