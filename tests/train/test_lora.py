from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (SD3Transformer2DModel, StableDiffusion3Pipeline, StableDiffusionPipeline,
                       UNet2DConditionModel)
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open

from greendiff.errors import UserInputError
from greendiff.train._lora import (DENOISER_TARGETS, TEXT_TARGETS, WEIGHTS_NAME, LoraSettings, add_lora, lora_layers,
                                   merge_lora, save_lora, trainable_parameters)

RANK = 4
SETTINGS = LoraSettings(rank=RANK, alpha=8.0, dropout=0.0, targets=DENOISER_TARGETS)  # scale 2: alpha must survive


def _unet(folder: Path) -> UNet2DConditionModel:
    return UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True).eval()


def _transformer(folder: Path) -> SD3Transformer2DModel:
    return SD3Transformer2DModel.from_pretrained(folder / "transformer", use_safetensors=True).eval()


@torch.no_grad()
def _unet_out(unet) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    x, context = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 16, 16, generator=gen)  # latents, CLIP states
    return unet(x, torch.tensor([10, 70]), context).sample


@torch.no_grad()
def _transformer_out(transformer) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    x, context = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 12, 32, generator=gen)
    pooled = torch.randn(2, 32, generator=gen)
    return transformer(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
                       timestep=torch.tensor([100.0, 700.0])).sample


def _randomize_lora_b(model, seed: int = 1) -> None:
    """Give every lora_B small random values, as training would (at init they are zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _expected_lora_size(model, targets, rank: int) -> int:
    """r * (in + out) for every linear layer a target names: the sizes of its lora_A (r x in) and lora_B (out x r)."""
    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and any(name == t or name.endswith(f".{t}") for t in targets))


@pytest.mark.parametrize("load, forward", [(_unet, _unet_out), (_transformer, _transformer_out)], ids=["sd", "sd3"])
def test_add_lora_trains_only_the_adapter_and_starts_equal_to_the_base(load, forward, tiny_sd, tiny_sd3):
    model = load(tiny_sd if load is _unet else tiny_sd3)
    expected = _expected_lora_size(model, DENOISER_TARGETS, RANK)
    before = forward(model)
    count = add_lora(model, SETTINGS)
    named = dict(model.named_parameters())
    assert expected > 0 and count == expected
    assert count == sum(p.numel() for n, p in named.items() if ".lora_A." in n or ".lora_B." in n)
    assert all(not p.requires_grad for n, p in named.items() if "lora_" not in n)
    assert [id(p) for p in trainable_parameters(model)] == [id(p) for n, p in named.items() if "lora_" in n]
    assert all(float(p.detach().abs().max()) == 0.0 for n, p in named.items() if "lora_B" in n)
    torch.testing.assert_close(forward(model), before, rtol=0, atol=0)
    layers = lora_layers(model)
    assert sum(v.numel() for v in layers.values()) == count
    assert all(v.device.type == "cpu" and v.is_contiguous() and v.grad_fn is None for v in layers.values())
    assert not any(".default." in k for k in layers)


def test_sd_lora_loads_in_plain_diffusers_with_the_same_outputs(tiny_sd, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, use_safetensors=True)
    add_lora(pipe.unet, SETTINGS)
    add_lora(pipe.text_encoder, LoraSettings(rank=2, alpha=2.0, dropout=0.0, targets=TEXT_TARGETS))
    _randomize_lora_b(pipe.unet)
    _randomize_lora_b(pipe.text_encoder, seed=2)
    ids = pipe.tokenizer(["a photo of sks dog"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        adapted_unet, adapted_text = _unet_out(pipe.unet.eval()), pipe.text_encoder.eval()(ids)[0]
    path = save_lora("StableDiffusionPipeline", tmp_path / "lora", pipe.unet, pipe.text_encoder)
    assert path == tmp_path / "lora" / WEIGHTS_NAME and sorted(p.name for p in path.parent.iterdir()) == [WEIGHTS_NAME]
    with safe_open(path, "pt") as f:
        assert any(k.startswith("unet.") for k in f.keys()) and any(k.startswith("text_encoder.") for k in f.keys())

    base = StableDiffusionPipeline.from_pretrained(tiny_sd, use_safetensors=True)
    fresh = StableDiffusionPipeline.from_pretrained(tiny_sd, use_safetensors=True)
    fresh.load_lora_weights(tmp_path / "lora")
    with torch.no_grad():
        torch.testing.assert_close(_unet_out(fresh.unet), adapted_unet, rtol=0, atol=1e-5)
        torch.testing.assert_close(fresh.text_encoder(ids)[0], adapted_text, rtol=0, atol=1e-5)
        assert float((_unet_out(base.unet) - adapted_unet).abs().max()) > 1e-3
    call = dict(prompt="a photo of sks dog", height=16, width=16, num_inference_steps=2, output_type="np")
    images = [p(**call, generator=torch.Generator().manual_seed(0)).images for p in (fresh, base)]
    assert images[0].shape == (1, 16, 16, 3) and float(np.abs(images[0] - images[1]).max()) > 1e-3


def test_sd3_lora_loads_in_plain_diffusers_with_the_same_outputs(tiny_sd3, tmp_path):
    transformer = _transformer(tiny_sd3)
    add_lora(transformer, SETTINGS)
    _randomize_lora_b(transformer)
    adapted = _transformer_out(transformer)
    save_lora("StableDiffusion3Pipeline", tmp_path / "lora", transformer)

    base = StableDiffusion3Pipeline.from_pretrained(tiny_sd3, use_safetensors=True)
    fresh = StableDiffusion3Pipeline.from_pretrained(tiny_sd3, use_safetensors=True)
    fresh.load_lora_weights(tmp_path / "lora")
    torch.testing.assert_close(_transformer_out(fresh.transformer), adapted, rtol=0, atol=1e-5)
    assert float((_transformer_out(base.transformer) - adapted).abs().max()) > 1e-3
    call = dict(prompt="a photo of sks dog", height=16, width=16, num_inference_steps=2, output_type="np",
                max_sequence_length=16)
    images = [p(**call, generator=torch.Generator().manual_seed(0)).images for p in (fresh, base)]
    assert images[0].shape == (1, 16, 16, 3) and float(np.abs(images[0] - images[1]).max()) > 1e-3


@pytest.mark.parametrize("load, forward", [(_unet, _unet_out), (_transformer, _transformer_out)], ids=["sd", "sd3"])
def test_merge_lora_folds_the_adapter_into_plain_base_weights(load, forward, tiny_sd, tiny_sd3):
    folder = tiny_sd if load is _unet else tiny_sd3
    base = load(folder)
    model = load(folder)
    add_lora(model, SETTINGS)
    _randomize_lora_b(model)
    adapted = forward(model)
    merged = merge_lora(model)
    assert merged is model and not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    assert list(merged.state_dict()) == list(base.state_dict())
    torch.testing.assert_close(forward(merged), adapted, rtol=0, atol=1e-5)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(k.endswith(".weight") and any(f".{t}." in k for t in DENOISER_TARGETS) for k in changed)


def test_merge_lora_refuses_a_model_without_adapter(tiny_sd):
    with pytest.raises(ValueError, match="no LoRA layer"):
        merge_lora(_unet(tiny_sd))


def test_unknown_target_is_one_line_naming_the_projections_and_changes_nothing(tiny_sd):
    unet = _unet(tiny_sd)
    with pytest.raises(UserInputError) as excinfo:
        add_lora(unet, LoraSettings(rank=RANK, alpha=4.0, dropout=0.0, targets=("to_q", "to_x")))
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith("lora target 'to_x' matches no module of UNet2DConditionModel; its linear layers are")
    assert all(name in message for name in ("to_q", "to_k", "to_v", "to_out.0"))
    assert all(p.requires_grad for p in unet.parameters())
    assert not any(isinstance(m, BaseTunerLayer) for m in unet.modules())


@pytest.mark.parametrize("kwargs, word", [({"rank": 0}, "rank"), ({"alpha": 0.0}, "alpha"),
                                          ({"dropout": 1.0}, "dropout"), ({"targets": ()}, "targets")])
def test_bad_settings_are_user_errors(kwargs, word):
    with pytest.raises(UserInputError, match=f"lora {word}"):
        LoraSettings(**{"rank": 4, "alpha": 4.0, "dropout": 0.0, "targets": DENOISER_TARGETS, **kwargs})


def test_settings_scale_is_alpha_over_rank():
    assert LoraSettings(rank=8, alpha=4.0, dropout=0.1, targets=TEXT_TARGETS).scale == 0.5


@pytest.fixture(scope="module")
def adapted_unet(tiny_sd) -> UNet2DConditionModel:
    unet = _unet(tiny_sd)
    add_lora(unet, SETTINGS)
    return unet


def test_existing_non_empty_output_is_refused_untouched(adapted_unet, tmp_path):
    out = tmp_path / "lora"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="exists and is not an empty folder"):
        save_lora("StableDiffusionPipeline", out, adapted_unet)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["lora"]


def test_an_empty_output_folder_is_filled(adapted_unet, tmp_path):
    (tmp_path / "lora").mkdir()
    path = save_lora("StableDiffusionPipeline", tmp_path / "lora", adapted_unet)
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["lora"]


def test_unknown_pipeline_class_is_a_value_error(adapted_unet, tmp_path):
    with pytest.raises(ValueError, match="no LoRA export for 'PixArtAlphaPipeline'"):
        save_lora("PixArtAlphaPipeline", tmp_path / "lora", adapted_unet)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing_behind(adapted_unet, tmp_path, monkeypatch):
    def half_written(save_directory, **kwargs):
        (Path(save_directory) / WEIGHTS_NAME).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StableDiffusionPipeline, "save_lora_weights", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_lora("StableDiffusionPipeline", tmp_path / "made" / "parents" / "lora", adapted_unet)
    assert list(tmp_path.iterdir()) == []
