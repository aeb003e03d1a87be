from __future__ import annotations

import pytest

from greendiff.errors import UserInputError
from greendiff.train import PRESETS, ModelConfig, build_unet, count_macs, count_parameters
from greendiff.train._model import resolve_architecture


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


def _pico(num_classes: int = 0, init_from: str = "", seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return build_unet(ModelConfig(preset="pico", block_out_channels=(8, 16), init_from=init_from), 8, 1, 100,
                      num_classes=num_classes)


def test_a_class_conditional_unet_has_an_embedding_row_per_class_and_the_null_class():
    import torch

    unet = _pico(num_classes=10)
    assert unet.config.num_class_embeds == 11 and unet.config.class_embed_type is None
    assert tuple(unet.class_embedding.weight.shape) == (11, 4 * 8)  # (K + 1, time_embed_dim)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 10])
    with torch.no_grad():
        a = unet(x, t, class_labels=torch.tensor([3, 10])).sample
        b = unet(x, t, class_labels=torch.tensor([3, 4])).sample
    assert a.shape == (2, 1, 8, 8) and torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    unconditional = _pico()
    assert unconditional.config.num_class_embeds is None and unconditional.class_embedding is None


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_a_bad_class_count_is_one_line(k):
    with pytest.raises(UserInputError, match="model.num_classes must be an integer"):
        _pico(num_classes=k)


def test_macs_of_a_conditional_unet_are_those_of_the_unconditional_one():
    assert count_macs(_pico(num_classes=10), 8, 1) == count_macs(_pico(), 8, 1) > 0  # the embedding is a lookup


def test_an_unconditional_init_starts_a_conditional_unet_as_the_same_model_for_every_class(tmp_path):
    import torch

    from greendiff.train._model import check_init_from

    source = _pico(seed=0)
    source.save_pretrained(str(tmp_path / "unet"))
    model = ModelConfig(preset="pico", block_out_channels=(8, 16), init_from=str(tmp_path / "unet"))
    check_init_from(model, 8, 1, 100, num_classes=10)
    unet = _pico(num_classes=10, init_from=str(tmp_path / "unet"), seed=1)
    assert int(torch.count_nonzero(unet.class_embedding.weight)) == 0
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 50, 90])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, class_labels=torch.tensor([0, 7, 10])).sample, source(x, t).sample)


def test_init_from_a_conditional_unet_of_another_class_count_is_refused(tmp_path):
    from greendiff.train._model import check_init_from

    _pico(num_classes=5).save_pretrained(str(tmp_path / "unet"))
    model = ModelConfig(preset="pico", block_out_channels=(8, 16), init_from=str(tmp_path / "unet"))
    for k in (10, 0):
        with pytest.raises(UserInputError, match=rf"num_class_embeds 6\) differs from the config's .*{k + 1 if k else None}\)"):
            check_init_from(model, 8, 1, 100, num_classes=k)
        with pytest.raises(UserInputError, match=r"num_class_embeds 6\) differs"):
            _pico(num_classes=k, init_from=str(tmp_path / "unet"))
    check_init_from(model, 8, 1, 100, num_classes=5)


def test_attention_runs_through_pytorch_sdpa():
    """Every attention layer of a UNet preset with attention uses diffusers' AttnProcessor2_0, i.e. PyTorch's
    scaled_dot_product_attention (fused kernels where the device has them)."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from greendiff.train import ModelConfig, build_unet

    unet = build_unet(ModelConfig(preset="tiny", block_out_channels=(8, 16, 16)), 8, 1, 100)
    processors = [m.processor for m in unet.modules() if isinstance(m, Attention)]
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
