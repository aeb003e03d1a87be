"""Representation alignment's math and checks: the cosine and dispersive losses on hand-computed values, the
weight's decay to exactly 0, the projector's checkpoint part, the frozen encoder, and the wiring of the loss."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.train import resolve_config
from greendiff.train._align import (
    AlignedLoss, Alignment, FrozenEncoder, Projector, ProjectorPart, alignment_weight, check_align,
    cosine_alignment_loss, dispersive_loss, make_alignment, projected_tokens,
)
from greendiff.train._diffusion import make_noise_scheduler
from greendiff.train._family import UNetFamily
from greendiff.train._step import optimized, setup, trainable
from tests.train.conftest import TINY


def tiny_encoder(folder, side: int = 8):
    """A 1-layer ViT (patch 2, width 16) saved with save_pretrained, and its image processor's config."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=side, patch_size=2, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)).save_pretrained(str(folder))
    ViTImageProcessorPil(size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
                         ).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return tiny_encoder(tmp_path_factory.mktemp("encoder"))


# -- the math --------------------------------------------------------------------------------------------------------

def test_cosine_alignment_is_zero_for_aligned_features_one_for_orthogonal_two_for_opposite():
    y = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    assert float(cosine_alignment_loss(3.0 * y, y)) == pytest.approx(0.0, abs=1e-6)  # same direction, any scale
    assert float(cosine_alignment_loss(-y, y)) == pytest.approx(2.0, abs=1e-6)
    e1, e2 = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    assert float(cosine_alignment_loss(e1, e2)) == pytest.approx(1.0, abs=1e-7)
    mixed = torch.cat([e1, e1], dim=1), torch.cat([e1, e2], dim=1)  # one aligned patch, one orthogonal
    assert float(cosine_alignment_loss(*mixed)) == pytest.approx(0.5, abs=1e-7)


def test_the_target_gets_no_gradient():
    z = torch.randn(1, 3, 4, requires_grad=True)
    y = torch.randn(1, 3, 4, requires_grad=True)
    cosine_alignment_loss(z, y).backward()
    assert z.grad is not None and y.grad is None


def test_dispersive_loss_of_a_hand_computed_three_sample_batch():
    # D = squared distance / d (d = 2): pairs (0,1) and (0,2) 1/2, (1,2) 2/2; the 3 diagonal terms exp(0) = 1
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    for tau in (1.0, 0.5):
        expected = math.log((3 + 4 * math.exp(-0.5 / tau) + 2 * math.exp(-1.0 / tau)) / 9)
        assert float(dispersive_loss(z, tau)) == pytest.approx(expected, abs=1e-6)
    assert float(dispersive_loss(torch.ones(4, 2, 3, 3), 0.5)) == pytest.approx(0.0, abs=1e-6)  # collapsed: 0
    far = torch.eye(3) * 1e3  # spread apart: the minimum, -log B
    assert float(dispersive_loss(far, 0.5)) == pytest.approx(-math.log(3), abs=1e-6)


def test_the_weight_decays_linearly_reaches_exactly_zero_at_align_until_and_stays_zero():
    assert [alignment_weight(s, 10, 0.5, 0.4) for s in range(7)] == pytest.approx([0.5, 0.375, 0.25, 0.125, 0, 0, 0])
    assert alignment_weight(4, 10, 0.5, 0.4) == 0.0 and alignment_weight(10, 10, 0.5, 0.4) == 0.0
    assert alignment_weight(3, 7, 1.0, 0.5) == pytest.approx(1 - 3 / 3.5)  # until x max_steps need not be whole
    assert alignment_weight(4, 7, 1.0, 0.5) == 0.0
    assert all(alignment_weight(s, 100, 2.0, 1.0) > 0 for s in range(100)) and alignment_weight(100, 100, 2.0, 1.0) == 0


def test_projected_tokens_are_resized_to_the_encoder_grid_in_row_major_order():
    torch.manual_seed(0)
    projector = Projector(4, 6)
    tokens = projected_tokens(projector, torch.randn(2, 4, 2, 2), (4, 4))
    assert tokens.shape == (2, 16, 6)
    same = projected_tokens(projector, torch.randn(2, 4, 3, 3), (3, 3))
    assert same.shape == (2, 9, 6)


# -- the projector's checkpoint part ---------------------------------------------------------------------------------

def test_the_projector_part_round_trips_exactly_and_refuses_another_projector():
    torch.manual_seed(0)
    saved = ProjectorPart(Projector(4, 6))
    state = saved.state_dict()
    torch.manual_seed(1)
    loaded = ProjectorPart(Projector(4, 6))
    loaded.load_state_dict(state)
    a, b = saved.projector.state_dict(), loaded.projector.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="another projector"):
        ProjectorPart(Projector(4, 8)).load_state_dict(state)
    with pytest.raises(ValueError, match="unreadable"):
        loaded.load_state_dict({"projector_safetensors_base64": "bm90IHNhZmV0ZW5zb3Jz"})
    with pytest.raises(ValueError, match="unreadable"):
        loaded.load_state_dict({})


def test_the_projector_part_refuses_weights_that_are_not_finite():
    part = ProjectorPart(Projector(2, 2))
    with torch.no_grad():
        part.projector.mlp[0].weight[0, 0] = float("nan")
    state = part.state_dict()
    with pytest.raises(ValueError, match="not finite"):
        ProjectorPart(Projector(2, 2)).load_state_dict(state)


# -- the frozen encoder ----------------------------------------------------------------------------------------------

def test_the_encoder_gives_patch_tokens_of_greyscale_images_repeated_to_rgb(encoder_dir):
    encoder = FrozenEncoder(encoder_dir)
    grey = torch.rand(3, 1, 8, 8) * 2 - 1
    tokens, grid = encoder.features(grey)
    assert grid == (4, 4) and tokens.shape == (3, 16, 16)
    rgb_tokens, _ = encoder.features(grey.repeat(1, 3, 1, 1))
    assert torch.equal(tokens, rgb_tokens)
    pixels = encoder.pixel_values(torch.full((1, 1, 8, 8), 1.0))  # white: (1 - 0.5) / 0.5 = 1 in every channel
    assert pixels.shape == (1, 3, 8, 8) and torch.allclose(pixels, torch.ones_like(pixels))
    resized, grid16 = encoder.features(torch.zeros(2, 1, 16, 16))  # other resolutions are resized to the encoder's
    assert grid16 == (4, 4) and resized.shape == (2, 16, 16)
    assert not any(p.requires_grad for p in encoder.model.parameters())


# -- checks before a run ---------------------------------------------------------------------------------------------

def config(**overrides):
    return resolve_config(overrides={**TINY, **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"optim.align_encoder": "x"}, "--align-encoder is used by --align repa only"),
    ({"optim.align": "dispersive", "optim.align_encoder": "x"}, "--align-encoder is used by --align repa only"),
    ({"optim.align": "repa"}, "--align repa needs --align-encoder DIR"),
])
def test_alignment_flags_that_do_not_go_together_are_one_line_errors(overrides, message):
    with pytest.raises(UserInputError, match=message) as info:
        check_align(config(**overrides))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key, value", [("optim.align_weight", -0.1), ("optim.align_until", 0.0),
                                        ("optim.align_until", 1.5), ("optim.align_until", -1.0),
                                        ("optim.align_temperature", 0.0), ("optim.align", "clip")])
def test_out_of_range_alignment_settings_are_refused_by_the_config(key, value):
    with pytest.raises(UserInputError, match=key.split(".")[1]):
        config(**{key: value})


def test_an_until_of_exactly_one_and_a_weight_of_zero_are_accepted():
    assert config(**{"optim.align_until": 1.0, "optim.align_weight": 0.0}).optim.align_until == 1.0


def test_the_encoder_folder_is_checked(tmp_path, encoder_dir):
    def refused(folder, message):
        with pytest.raises(UserInputError, match=message) as info:
            check_align(config(**{"optim.align": "repa", "optim.align_encoder": str(folder)}))
        assert "\n" not in str(info.value)

    refused(tmp_path / "missing", "is not a folder")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(encoder_dir / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    refused(pickled, r"pickled weights only \(pytorch_model.bin\); greendiff never unpickles")
    bare = tmp_path / "bare"
    bare.mkdir()
    refused(bare, "has no config.json")
    coded = tmp_path / "coded"
    shutil.copytree(encoder_dir, coded)
    (coded / "config.json").write_text('{"model_type": "vit", "auto_map": {"AutoModel": "x.Y"}}')
    refused(coded, "needs code of its own")
    check_align(config(**{"optim.align": "repa", "optim.align_encoder": str(encoder_dir)}))  # a good folder passes


def test_the_network_that_scores_quality_is_refused_as_the_encoder(tmp_path, encoder_dir):
    from greendiff.evaluate._features import MNIST_WEIGHTS

    bundled = config(**{"optim.align": "repa", "optim.align_encoder": str(MNIST_WEIGHTS.parent)})
    with pytest.raises(UserInputError, match="holds the network that scores quality .stop.eval_features = mnist."):
        check_align(bundled)
    copied = tmp_path / "copied"
    shutil.copytree(encoder_dir, copied)
    shutil.copy(str(MNIST_WEIGHTS), copied / "renamed.safetensors")  # a copy of its weights, under another name
    with pytest.raises(UserInputError, match="optimises the metric itself"):
        check_align(config(**{"optim.align": "repa", "optim.align_encoder": str(copied)}))
    inception = tmp_path / "incep" / "pt_inception.pth"
    inception.parent.mkdir()
    inception.write_bytes(b"weights of the FID network")
    (copied / "renamed.safetensors").unlink()
    shutil.copy(inception, copied / "other.safetensors")
    features = {"stop.eval_features": f"inception:{inception}"}
    with pytest.raises(UserInputError, match="scores quality"):
        check_align(config(**{"optim.align": "repa", "optim.align_encoder": str(copied), **features}))


@pytest.mark.parametrize("overrides, message", [
    ({"model.backbone": "dit", "model.vae": "v", "model.conditioning": "class", "model.num_classes": 10},
     "model.backbone = dit has none"),
    ({"distill.kind": "output", "distill.teacher": "t"}, "a fine-tune or distillation brings its own loss"),
])
def test_alignment_is_refused_where_there_is_no_unet_mid_block_or_a_loss_of_its_own(overrides, message):
    base = {k: v for k, v in TINY.items() if k != "model.block_out_channels"}  # a DiT is sized by its preset
    with pytest.raises(UserInputError, match=message):
        check_align(resolve_config(overrides={**base, "optim.align": "dispersive", **overrides}))


# -- the wiring ------------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self, step: int = 0) -> None:
        self.step = step


def test_the_aligned_loss_is_the_familys_loss_plus_the_weighted_term_of_the_same_forward():
    cfg = config(**{"optim.align": "dispersive", "optim.align_weight": 0.8, "run.max_steps": 10})
    torch.manual_seed(0)
    net = UNetFamily().build(cfg, 1)
    scheduler = make_noise_scheduler(cfg.optim)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    family = UNetFamily()
    alignment = make_alignment(cfg, family, net, torch.device("cpu"))
    clock = Clock(2)
    total = AlignedLoss(family.loss, alignment, clock)(net, scheduler, x0, torch.Generator().manual_seed(3), cfg.optim)
    captured = []
    handle = net.mid_block.register_forward_hook(lambda module, inputs, output: captured.append(output))
    base = family.loss(net, scheduler, x0, torch.Generator().manual_seed(3), cfg.optim)
    handle.remove()
    weight = 0.8 * (1 - 2 / 5)
    expected = base + weight * dispersive_loss(captured[0], cfg.optim.align_temperature)
    assert float(total.detach()) == pytest.approx(float(expected.detach()), abs=1e-6) and weight == pytest.approx(0.48)
    assert alignment.last_term == pytest.approx(float(dispersive_loss(captured[0], 0.5).detach()), abs=1e-6)
    clock.step = 5  # from align_until x max_steps on: the family's loss alone, bit for bit
    off = AlignedLoss(family.loss, alignment, clock)(net, scheduler, x0, torch.Generator().manual_seed(3), cfg.optim)
    assert torch.equal(off, family.loss(net, scheduler, x0, torch.Generator().manual_seed(3), cfg.optim))


def test_with_align_none_the_state_and_the_optimizer_are_the_models_alone():
    cfg = config()
    state = setup(cfg, UNetFamily(), 1, 1, {})
    assert state.align is None and "align" not in state.objects.parts
    assert [id(p) for p in optimized(state.objects.optimizer)] == [id(p) for p in trainable(state.objects.model)]


def test_repa_puts_the_projector_in_the_optimizer_after_the_model_and_its_part_in_the_checkpoint(encoder_dir):
    cfg = config(**{"optim.align": "repa", "optim.align_encoder": str(encoder_dir)})
    state = setup(cfg, UNetFamily(), 1, 1, {})
    model, projector = trainable(state.objects.model), state.align.parameters()
    assert [id(p) for p in optimized(state.objects.optimizer)] == [id(p) for p in (*model, *projector)]
    assert state.objects.parts["align"] is state.align.part and state.align.part.projector is state.align.projector
    assert state.align.projector.mlp[0].in_features == 16 and state.align.projector.mlp[-1].out_features == 16
    torch.manual_seed(cfg.run.seed)  # the model's initialisation is unchanged by the projector built after it
    assert all(torch.equal(a, b) for a, b in zip(UNetFamily().build(cfg, 1).parameters(), model))


def test_repa_on_more_than_one_process_is_refused(encoder_dir):
    cfg = config(**{"optim.align": "repa", "optim.align_encoder": str(encoder_dir)})
    with pytest.raises(UserInputError, match="on one process"):
        setup(cfg, UNetFamily(), 1, 2, {})


def test_a_network_without_a_mid_block_is_refused():
    with pytest.raises(ValueError, match="mid block"):
        Alignment("dispersive", torch.nn.Linear(2, 2), config().optim, 10)


def test_a_convolutional_encoder_gives_its_last_feature_map_as_tokens(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1],
                             layer_type="basic", downsample_in_first_stage=False)).save_pretrained(str(tmp_path))
    (tmp_path / "preprocessor_config.json").write_text('{"size": {"shortest_edge": 32}, "do_center_crop": true, '
                                                       '"crop_size": {"height": 32, "width": 32}}')
    encoder = FrozenEncoder(tmp_path)
    tokens, grid = encoder.features(torch.zeros(2, 1, 16, 16))
    assert grid == (4, 4) and tokens.shape == (2, 16, 12)  # 32 px: stem /4, then a /2 stage
