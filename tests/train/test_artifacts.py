"""Reading saved models: safetensors only, a pickled .bin is never read."""

from __future__ import annotations

import os
import pickle

import pytest

from greendiff.errors import UserInputError
from greendiff.train import load_unet
from greendiff.train._model import load_weights


class Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


@pytest.fixture
def saved_unet(tmp_path):
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(str(tmp_path / "unet"))
    return unet, tmp_path / "unet"


def test_a_saved_unet_loads_from_its_safetensors(saved_unet):
    unet, folder = saved_unet
    loaded = load_unet(folder, "teacher")
    assert all((a == b).all() for a, b in zip(unet.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("role", ["teacher", "model.init_from"])
def test_a_pickled_bin_in_place_of_the_weights_is_never_loaded(saved_unet, tmp_path, role):
    unet, folder = saved_unet
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    (folder / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(UserInputError, match=rf"{role} .*never pickled \.bin"):
        load_unet(folder, role) if role == "teacher" else load_weights(unet, folder)
    assert not marker.exists()


def test_truncated_weights_are_one_line_naming_the_file(saved_unet):
    _, folder = saved_unet
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserInputError, match="diffusion_pytorch_model.safetensors: truncated"):
        load_unet(folder, "teacher")


# -- a class-conditional run ---------------------------------------------------------------------------

def _conditional_run(tmp_path, num_classes: int = 3):
    """A run directory whose pipeline/ is a ClassConditionalPipeline (EMA weights copied in)."""
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from greendiff.train import ModelConfig, build_unet, resolve_config, to_toml
    from greendiff.train._artifacts import export_class_pipeline

    run = tmp_path / "run"
    run.mkdir()
    config = resolve_config(overrides={"model.preset": "pico", "model.block_out_channels": "8,16", "data.dataset": "digits",
                                       "data.resolution": 8, "optim.num_train_timesteps": 100})
    (run / "config.toml").write_text(to_toml(config))
    torch.manual_seed(0)
    unet = build_unet(ModelConfig(preset="pico", block_out_channels=(8, 16)), 8, 1, 100, num_classes=num_classes)
    ema = EMAModel(unet.parameters())
    with torch.no_grad():
        for p in ema.shadow_params:
            p.add_(1.0)  # EMA weights that differ from the raw ones
    export_class_pipeline(unet, ema, DDPMScheduler(num_train_timesteps=100), run / "pipeline")
    return run, unet, ema


def test_a_class_conditional_run_reads_back_with_its_class_count_and_ema_weights(tmp_path):
    import torch

    from greendiff.train import load_run_model, sample_images

    run, unet, ema = _conditional_run(tmp_path)
    model = load_run_model(run)
    loaded, sampler = model.unet, model.sampler
    assert (model.num_classes, model.null_class, model.space, model.image_shape) == (3, 3, None, (1, 8, 8))
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), ema.shadow_params))
    assert not torch.equal(next(loaded.parameters()), next(unet.parameters()))
    images = sample_images(loaded, sampler, 2, 2, (1, 8, 8), torch.Generator().manual_seed(0), labels=[0, 2],
                           guidance_scale=2.0)
    assert images.shape == (2, 1, 8, 8) and bool(torch.isfinite(images).all())
    # RunModel.sample is the same draw in pixel space
    assert torch.equal(model.sample(2, 2, torch.Generator().manual_seed(0), labels=[0, 2], guidance_scale=2.0), images)


def test_an_unconditional_run_reads_back_with_no_classes(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from greendiff.train import load_run_model

    run, unet, _ = _conditional_run(tmp_path)  # its config.toml, and a plain DDPMPipeline of an unconditional UNet
    unconditional = UNet2DModel.from_config({**unet.config, "num_class_embeds": None})
    DDPMPipeline(unet=unconditional, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(str(run / "pipeline"))
    model = load_run_model(run)
    assert (model.num_classes, model.null_class) == (0, None) and model.unet.class_embedding is None


@pytest.mark.parametrize("name, embeds, message", [
    ("StableDiffusionPipeline", 4, "names the pipeline \"StableDiffusionPipeline\"; greendiff reads DDPMPipeline or "
                                   "ClassConditionalPipeline"),
    ("DDPMPipeline", 4, "names DDPMPipeline but .* has a class embedding .4 rows.; the pipeline is inconsistent"),
    ("ClassConditionalPipeline", None, "names ClassConditionalPipeline but .* has no class embedding"),
])
def test_a_pipeline_index_that_does_not_match_its_unet_is_one_line(tmp_path, name, embeds, message):
    import json

    from greendiff.train import load_run_model

    run, _, _ = _conditional_run(tmp_path)
    index, config_file = run / "pipeline" / "model_index.json", run / "pipeline" / "unet" / "config.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": name}))
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "num_class_embeds": embeds}))
    with pytest.raises(UserInputError, match=message) as info:
        load_run_model(run)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("edit, message", [
    ({"class_embed_type": "timestep"}, "class_embed_type \"timestep\" is not one greendiff samples"),
    ({"num_class_embeds": 1}, "num_class_embeds must be between 2 and"),
    ({"num_class_embeds": "11"}, "num_class_embeds must be an integer"),
])
def test_a_unet_config_with_a_class_embedding_greendiff_cannot_sample_is_refused(saved_unet, edit, message):
    import json

    _, folder = saved_unet
    config_file = folder / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **edit}))
    with pytest.raises(UserInputError, match=message):
        load_unet(folder, "teacher")


def test_export_replaces_the_previous_pipeline_and_never_writes_through_a_planted_link(tmp_path):
    from diffusers import DDPMScheduler

    from greendiff.train._artifacts import export_class_pipeline

    run, unet, ema = _conditional_run(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / ".tmp-pipeline").symlink_to(outside)
    (run / "pipeline" / "stale.txt").write_text("from the previous export")
    export_class_pipeline(unet, ema, DDPMScheduler(num_train_timesteps=100), run / "pipeline")
    assert list(outside.iterdir()) == [] and not (run / ".tmp-pipeline").exists()
    assert not (run / "pipeline" / "stale.txt").exists() and (run / "pipeline" / "model_index.json").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "pipeline"]


def test_export_of_an_unconditional_unet_is_refused(saved_unet, tmp_path):
    from diffusers import DDPMScheduler

    from greendiff.train._artifacts import export_class_pipeline

    unet, _ = saved_unet
    with pytest.raises(ValueError, match="needs a class-conditional UNet"):
        export_class_pipeline(unet, None, DDPMScheduler(num_train_timesteps=100), tmp_path / "pipeline")
    assert not (tmp_path / "pipeline").exists()
