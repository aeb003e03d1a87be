from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.train._pipeline_layout import PipelineLayout, check_pipeline_folder, read_pipeline_layout
from tests.train.tiny_pipelines import save_tiny_sd3_pipeline, save_tiny_sd_pipeline, tiny_clip_tokenizer


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory) -> Path:
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "pipe")


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory) -> Path:
    return save_tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3") / "pipe")


@pytest.fixture
def sd_copy(sd_folder, tmp_path) -> Path:
    return Path(shutil.copytree(sd_folder, tmp_path / "pipe"))


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_tiny_tokenizer_splits_caption_words_into_single_tokens(tmp_path):
    tokenizer = tiny_clip_tokenizer(tmp_path / "tok")
    ids = tokenizer("a photo of digit seven").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "digit</w>",
                                                    "seven</w>", "<|endoftext|>"]
    assert tokenizer.model_max_length == 16


@pytest.mark.parametrize("which", ["sd", "sd3"])
def test_tiny_pipelines_load_in_plain_diffusers_and_make_an_image(which, sd_folder, sd3_folder):
    from diffusers import DiffusionPipeline

    folder = sd_folder if which == "sd" else sd3_folder
    pipe = DiffusionPipeline.from_pretrained(folder, use_safetensors=True)
    extra = {"max_sequence_length": 16} if which == "sd3" else {}
    images = pipe("a photo of digit seven", num_inference_steps=1, height=16, width=16, output_type="np",
                  generator=torch.Generator().manual_seed(0), **extra).images
    assert type(pipe).__name__ == {"sd": "StableDiffusionPipeline", "sd3": "StableDiffusion3Pipeline"}[which]
    assert images.shape == (1, 16, 16, 3)
    assert np.isfinite(images).all() and 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0


def test_sd_layout_is_read_from_model_index(sd_folder):
    assert check_pipeline_folder(sd_folder) == PipelineLayout(
        folder=sd_folder, kind="unet", pipeline_class="StableDiffusionPipeline", denoiser="unet",
        denoiser_class="UNet2DConditionModel", vae="vae", text_encoders=(("text_encoder", "tokenizer"),),
        scheduler_class="DDPMScheduler")


def test_sd3_layout_is_read_from_model_index(sd3_folder):
    assert check_pipeline_folder(sd3_folder) == PipelineLayout(
        folder=sd3_folder, kind="transformer", pipeline_class="StableDiffusion3Pipeline", denoiser="transformer",
        denoiser_class="SD3Transformer2DModel", vae="vae",
        text_encoders=(("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"),
                       ("text_encoder_3", "tokenizer_3")),
        scheduler_class="FlowMatchEulerDiscreteScheduler")


def test_read_does_not_look_into_subfolders(sd_copy):
    shutil.rmtree(sd_copy / "unet")
    assert read_pipeline_layout(sd_copy).denoiser == "unet"


def test_no_such_folder(tmp_path):
    with pytest.raises(UserInputError) as excinfo:
        read_pipeline_layout(tmp_path / "absent", "--pipeline")
    assert _one_line(excinfo) == f"--pipeline {tmp_path / 'absent'}: no such folder"


def test_no_model_index(tmp_path):
    with pytest.raises(UserInputError) as excinfo:
        check_pipeline_folder(tmp_path, "--pipeline")
    assert _one_line(excinfo).startswith(f"--pipeline {tmp_path}: no model_index.json; give a diffusers pipeline")


def test_invalid_json(sd_copy):
    (sd_copy / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline",\n', encoding="utf-8")
    with pytest.raises(UserInputError) as excinfo:
        check_pipeline_folder(sd_copy)
    assert _one_line(excinfo) == f"--pipeline {sd_copy}: model_index.json is not valid JSON"


def _edit_index(folder: Path, **entries) -> None:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index.update(entries)
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")


@pytest.mark.parametrize("unet", [["diffusers", "UNet2DModel"], [None, None]])
def test_unsupported_or_absent_denoiser(sd_copy, unet):
    _edit_index(sd_copy, unet=unet)
    with pytest.raises(UserInputError) as excinfo:
        check_pipeline_folder(sd_copy)
    found = "unet 'UNet2DModel'" if unet[1] else "none"
    assert _one_line(excinfo).startswith(f"--pipeline {sd_copy}: model_index.json has no supported denoiser "
                                         f"(found: {found}); ")


@pytest.mark.parametrize("name, gone, expected", [
    ("unet", None, "component 'unet' (UNet2DConditionModel) is listed in model_index.json but its folder unet/ "
                   "is missing"),
    ("vae", "config.json", "component 'vae' (AutoencoderKL): vae/ has no config.json"),
    ("text_encoder", "config.json", "component 'text_encoder' (CLIPTextModel): text_encoder/ has no config.json"),
    ("scheduler", "scheduler_config.json",
     "component 'scheduler' (DDPMScheduler): scheduler/ has no scheduler_config.json"),
    ("tokenizer", ("tokenizer.json", "vocab.json"),
     "component 'tokenizer' (CLIPTokenizer): tokenizer/ has no tokenizer files (one of tokenizer.json, vocab.json, "
     "spiece.model)"),
])
def test_missing_component_files(sd_copy, name, gone, expected):
    if gone is None:
        shutil.rmtree(sd_copy / name)
    else:
        for file in (gone,) if isinstance(gone, str) else gone:
            (sd_copy / name / file).unlink()
    with pytest.raises(UserInputError) as excinfo:
        check_pipeline_folder(sd_copy)
    assert _one_line(excinfo) == f"--pipeline {sd_copy}: {expected}"


@pytest.mark.parametrize("name, weights", [("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                                           ("text_encoder", "model")])
def test_pickled_weights_only_are_refused(sd_copy, name, weights):
    (sd_copy / name / f"{weights}.safetensors").rename(sd_copy / name / f"{weights}.bin")
    with pytest.raises(UserInputError) as excinfo:
        check_pipeline_folder(sd_copy)
    assert _one_line(excinfo) == (f"--pipeline {sd_copy}: component '{name}' has only pickled weights ({weights}.bin), "
                                  "which greendiff never loads: re-save the pipeline with save_pretrained(folder, "
                                  "safe_serialization=True)")


def test_no_weights_at_all(sd_copy):
    (sd_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(UserInputError) as excinfo:
        check_pipeline_folder(sd_copy)
    assert _one_line(excinfo) == f"--pipeline {sd_copy}: component 'vae' has no *.safetensors weights in vae/"


def test_denoiser_that_does_not_fit_the_vae_latents(sd_copy):
    config = json.loads((sd_copy / "unet" / "config.json").read_text(encoding="utf-8"))
    (sd_copy / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 9}), encoding="utf-8")
    with pytest.raises(UserInputError) as excinfo:
        check_pipeline_folder(sd_copy)
    assert _one_line(excinfo) == (f"--pipeline {sd_copy}: mismatched components: 'unet' (UNet2DConditionModel) "
                                  "takes in_channels 9 but 'vae' makes latent_channels 4")


def test_text_encoder_without_its_tokenizer(sd_copy):
    _edit_index(sd_copy, tokenizer=[None, None])
    with pytest.raises(UserInputError) as excinfo:
        read_pipeline_layout(sd_copy)
    assert _one_line(excinfo) == (f"--pipeline {sd_copy}: model_index.json lists component 'text_encoder' without "
                                  "its 'tokenizer'")
