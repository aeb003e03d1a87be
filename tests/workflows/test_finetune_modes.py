"""greendiff finetune's other modes end to end: a full fine-tune and its resume, text-encoder LoRA with EMA,
gradient checkpointing, a CLIP score, a DreamBooth set too small to hold images out, SD3's shifted flow times,
and the inputs refused before anything exists (an unsupported pipeline, a LoRA target that matches nothing,
--merge with --full, a lever of training from scratch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.train._objectives import FlowObjective
from greendiff.workflows import TrainJob, prepare_finetune
from tests.train.conftest import captioned_digits, tiny_sd, tiny_sd3, write_captioned_digits  # noqa: F401 (fixtures)
from tests.workflows.test_finetune import finetune, losses


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GREENDIFF_THREADS", "1")
        yield tmp_path_factory.mktemp("modes")


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_full_fine_tune_writes_a_pipeline_and_resumes_bit_identically(root, tiny_sd, captioned_digits):
    from diffusers import StableDiffusionPipeline

    whole = finetune(root, tiny_sd, captioned_digits, out="full", **{"finetune.method": "full"})
    half = finetune(root, tiny_sd, captioned_digits, out="full-half", **{"finetune.method": "full", "run.max_steps": 4})
    resumed = finetune(root, tiny_sd, None, resume=half.run_dir, **{"run.max_steps": 8})
    assert whole.status == resumed.status == "completed" and not (whole.run_dir / "lora").exists()
    assert losses(resumed.run_dir) == losses(whole.run_dir)
    a = StableDiffusionPipeline.from_pretrained(whole.run_dir / "pipeline", use_safetensors=True).unet.state_dict()
    b = StableDiffusionPipeline.from_pretrained(resumed.run_dir / "pipeline", use_safetensors=True).unet.state_dict()
    base = StableDiffusionPipeline.from_pretrained(tiny_sd, use_safetensors=True).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], base[k]) for k in a)  # every weight trained: the UNet moved
    assert (whole.run_dir / "pipeline" / "README.md").read_text().count("full fine-tune") >= 1


def test_text_encoder_lora_with_ema_trains_both_and_validates_with_the_encoder_as_it_is(root, tiny_sd,
                                                                                       captioned_digits):
    from safetensors.torch import load_file

    outcome = finetune(root, tiny_sd, captioned_digits, out="te", **{"finetune.text_encoder_lora": True,
                                                                      "optim.ema": True})
    assert outcome.status == "completed"
    keys = load_file(str(outcome.run_dir / "lora" / "pytorch_lora_weights.safetensors")).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    validation = losses(outcome.run_dir)[1]
    assert len(validation) == 2 and validation[0] != validation[1]


def test_gradient_checkpointing_trains_the_same_model(root, tiny_sd, captioned_digits):
    plain = finetune(root, tiny_sd, captioned_digits, out="gc-off")
    checkpointed = finetune(root, tiny_sd, captioned_digits, out="gc-on", **{"finetune.gradient_checkpointing": True})
    a, b = losses(plain.run_dir), losses(checkpointed.run_dir)
    assert a[0] == pytest.approx(b[0], rel=1e-5) and a[1] == pytest.approx(b[1], rel=1e-5)


def test_a_clip_model_scores_the_validation_images(root, tiny_sd, captioned_digits, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from tests.train.tiny_pipelines import tiny_clip_tokenizer

    folder = tmp_path / "clip"
    tokenizer = tiny_clip_tokenizer(folder)
    config = CLIPConfig(text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37,
                                     "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 77},
                        vision_config={"image_size": 16, "patch_size": 4, "hidden_size": 32, "intermediate_size": 37,
                                       "num_hidden_layers": 1, "num_attention_heads": 4}, projection_dim=16)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    outcome = finetune(root, tiny_sd, captioned_digits, out="clip", **{"finetune.clip_model": str(folder)})
    scores = [r["clip_score"] for r in records(outcome.run_dir) if r.get("event") == "eval"]
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores)


def test_a_small_dreambooth_set_holds_nothing_out_and_says_early_stopping_is_off(root, tiny_sd, tmp_path):
    subject = tmp_path / "subject"
    subject.mkdir()
    for k, png in enumerate(sorted(write_captioned_digits(tmp_path / "d", 5).glob("*.png"))):
        shutil.copy(png, subject / f"{k}.png")
    keys = {"finetune.instance_data": str(subject), "finetune.instance_prompt": "a photo of sks digit",
            "optim.batch_size": 2, "run.max_steps": 4, "stop.eval_every": 2}
    prepared = prepare_finetune(TrainJob(overrides={"finetune.pipeline": str(tiny_sd), **keys,
                                                    "run.output_dir": str(tmp_path / "runs")}))
    assert prepared.held_out is None and prepared.train.data.num_images == 5
    assert prepared.config.finetune.validation_images == 0 and prepared.config.stop.patience == 0
    assert any("none held out" in text for text, _ in prepared.train.notes)
    outcome = finetune(root, tiny_sd, None, out="booth", **keys)
    assert outcome.status == "completed"
    evals = [r for r in records(outcome.run_dir) if r.get("event") == "eval"]
    assert len(evals) == 2 and all("val_loss" not in r for r in evals)
    assert (outcome.run_dir / "samples" / "validation-step-2.png").is_file()


def test_sd3_trains_at_its_scheduler_s_shifted_times(tiny_sd3):
    from greendiff.train._base_pipeline import BasePipeline
    from greendiff.train._finetune_family import objective_of
    from greendiff.train import resolve_config

    base = BasePipeline.load(tiny_sd3)
    objective = objective_of(base, resolve_config(overrides={"optim.objective": "flow"}).optim)
    assert objective.shift == float(base.pipe.scheduler.config.shift)
    x0 = torch.zeros(4, 1, 2, 2)
    plain = FlowObjective().draw(x0, None, torch.Generator().manual_seed(1))
    same = FlowObjective(shift=1.0).draw(x0, None, torch.Generator().manual_seed(1))
    assert torch.equal(plain.timesteps, same.timesteps) and torch.equal(plain.noisy, same.noisy)
    shifted = FlowObjective(shift=3.0).draw(x0, None, torch.Generator().manual_seed(1))
    t = plain.timesteps / 1000
    assert torch.allclose(shifted.timesteps / 1000, 3 * t / (1 + 2 * t))
    assert torch.allclose(FlowObjective(shift=3.0).fixed_timesteps(2, None) / 1000,
                          torch.tensor([0.5, 0.9]))  # 0.25 -> 0.75 / 1.5, 0.75 -> 2.25 / 2.5


@pytest.mark.parametrize("change, overrides, message", [
    ("pixart", {}, "greendiff fine-tunes StableDiffusionPipeline and StableDiffusion3Pipeline pipelines"),
    ("", {"finetune.lora_targets": "to_x"}, "lora target 'to_x' matches no module of UNet2DConditionModel"),
    ("", {"finetune.method": "full", "finetune.merge": True}, "a full fine-tune (--full) writes the whole pipeline"),
    ("", {"optim.timestep_sampling": "stratified"}, "optim.timestep_sampling = stratified is a lever of training"),
    ("", {"optim.align": "dispersive"}, "optim.align = dispersive is a lever of training from scratch"),
])
def test_inputs_refused_before_anything_exists(tmp_path, tiny_sd, captioned_digits, change, overrides, message):
    pipeline = tiny_sd
    if change == "pixart":
        pipeline = tmp_path / "pipe"
        shutil.copytree(tiny_sd, pipeline)
        index = json.loads((pipeline / "model_index.json").read_text())
        (pipeline / "model_index.json").write_text(json.dumps({**index, "_class_name": "PixArtAlphaPipeline"}))
    keys = {"finetune.pipeline": str(pipeline), "data.dataset": str(captioned_digits),
            "run.output_dir": str(tmp_path / "runs"), "data.latent_cache_dir": str(tmp_path / "cache"), **overrides}
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        prepare_finetune(TrainJob(overrides=keys))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
