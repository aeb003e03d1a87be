"""greendiff finetune's workflow end to end on tiny pipelines (issue 22): LoRA files plain diffusers loads,
merge equal to the adapter applied, caches that change nothing, bit-identical resume, DreamBooth's class
images cached once, SD3, a deterministic validation loss and early stopping on it, the model card's CO2e."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from greendiff.errors import UserInputError
from greendiff.workflows import MeasurementOptions, TrainJob, run_finetune
from tests.train.conftest import captioned_digits, tiny_sd, tiny_sd3, write_captioned_digits  # noqa: F401 (fixtures)

PROMPT = "a handwritten digit seven"
#: 8 steps of 4 images, lr 1e-3 (so 8 steps move the adapter visibly), evaluations and checkpoints every 4 steps;
#: fp32 (the CPU's automatic bf16 would turn the latent cache's float noise into visible differences, below).
BASE = {"optim.mixed_precision": "no", "run.max_steps": 8, "optim.batch_size": 4, "optim.lr": 1e-3, "stop.eval_every": 4, "run.checkpoint_every": 4,
        "optim.sample_steps": 2, "run.sample_every": 1000, "run.log_every": 1, "run.num_samples": 1,
        "finetune.validation_images": 4, "finetune.lora_rank": 4}
LORA_FILE = "pytorch_lora_weights.safetensors"


def finetune(root: Path, pipeline: Path, data: Path | None, resume: Path | None = None, out: str = "runs",
             **overrides):
    """A fine-tune over :data:`BASE` in ``root``: its run directory in ``out``/ (one folder per run: run names
    are timestamps to the second), the latent/text/class caches under cache/, the ledger ledger.sqlite."""
    keys = {**BASE, "finetune.pipeline": str(pipeline), "run.output_dir": str(root / out),
            "data.latent_cache_dir": str(root / "cache" / "latents"),
            **({"data.dataset": str(data)} if data is not None else {}), **overrides}
    job = TrainJob(overrides=keys if resume is None else overrides, resume=resume,
                   measurement=MeasurementOptions(no_gpu=True, ledger=root / "ledger.sqlite"))
    return run_finetune(job)


def losses(run_dir: Path) -> tuple[list[float], list[float]]:
    """``(training losses by step, validation losses by evaluation)`` from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ([r["loss"] for r in records if "loss" in r and "step" in r and "event" not in r],
            [r["val_loss"] for r in records if r.get("event") == "eval"])


def lora_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "lora" / LORA_FILE))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The module's folder; GREENDIFF_THREADS=1 for its runs, as tests/conftest.py sets it per test (a module
    fixture runs before that, and a run at another thread count differs in its last bits)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GREENDIFF_THREADS", "1")
        yield tmp_path_factory.mktemp("finetune")


@pytest.fixture(scope="module")
def lora_run(root, tiny_sd, captioned_digits):
    """8 LoRA steps with the latent and text caches on, the merged pipeline written too."""
    outcome = finetune(root / "cached", tiny_sd, captioned_digits, **{"finetune.merge": True})
    assert outcome.status == "completed" and outcome.step == 8
    return outcome


@torch.no_grad()
def _images(pipe) -> torch.Tensor:
    return pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), height=16, width=16,
                output_type="pt").images


def test_lora_loads_in_plain_diffusers_changes_the_output_and_equals_the_merged_pipeline(lora_run, tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    base = _images(pipe)
    pipe.load_lora_weights(lora_run.run_dir / "lora")
    adapted = _images(pipe)
    merged_pipe = StableDiffusionPipeline.from_pretrained(lora_run.run_dir / "pipeline", use_safetensors=True)
    merged_pipe.set_progress_bar_config(disable=True)
    merged = _images(merged_pipe)
    assert (adapted - base).abs().max() > 1e-3  # 8 steps at lr 1e-3 moved the images
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=0)


def test_checkpoints_hold_only_the_lora_tensors(lora_run):
    with safe_open(str(lora_run.run_dir / "checkpoints" / "step-4" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert len(keys) == len(lora_tensors(lora_run.run_dir)) > 0  # one per adapter matrix, nothing else
    assert all("lora" in key for key in keys)


def test_model_card_emissions_in_grams_equal_the_runs_emissions(lora_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(lora_run.run_dir / "lora" / "README.md")
    emissions_kg = json.loads((lora_run.run_dir / "emissions.json").read_text())["emissions_kg"]
    assert emissions_kg > 0
    assert card.data.co2_eq_emissions["emissions"] == pytest.approx(1000 * emissions_kg, rel=1e-9)
    assert card.data.base_model == "pipe"


def test_the_text_cache_changes_nothing_and_the_latent_cache_only_float_noise(lora_run, root, tiny_sd,
                                                                               captioned_digits):
    no_text = finetune(root / "no-text", tiny_sd, captioned_digits, **{"finetune.text_cache": False})
    uncached = finetune(root / "uncached", tiny_sd, captioned_digits,
                        **{"data.latent_cache": False, "finetune.text_cache": False})
    assert (root / "cached" / "cache" / "text").is_dir() and not (root / "no-text" / "cache" / "text").exists()
    assert not (root / "uncached" / "cache").exists()
    cached_losses, cached = losses(lora_run.run_dir), lora_tensors(lora_run.run_dir)
    assert len(cached_losses[0]) == 8 and len(cached_losses[1]) == 2
    # The text table's rows are the encoder's own outputs (CLIP encodes each prompt alone): bit-identical.
    assert losses(no_text.run_dir) == cached_losses
    assert all(torch.equal(tensor, lora_tensors(no_text.run_dir)[k]) for k, tensor in cached.items())
    # The latent cache encodes all 20 images in one VAE call, an uncached step its batch of 4: the VAE's
    # convolutions round differently by batch size (~3e-7 in the posterior's mean), so the runs agree to float
    # noise, not bit for bit (under the CPU's automatic bf16 the noise grows to ~5e-5 in the adapter, hence fp32).
    plain = lora_tensors(uncached.run_dir)
    assert plain.keys() == cached.keys()
    assert all(torch.allclose(plain[k], cached[k], rtol=0, atol=1e-6) for k in cached)
    for got, want in zip(losses(uncached.run_dir), cached_losses):
        assert got == pytest.approx(want, rel=1e-6)


def test_resume_is_bit_identical_to_the_uninterrupted_run(lora_run, root, tiny_sd, captioned_digits):
    first = finetune(root / "cached", tiny_sd, captioned_digits, out="halves", **{"run.max_steps": 4})
    assert first.status == "completed" and first.step == 4
    resumed = finetune(root / "cached", tiny_sd, None, resume=first.run_dir, **{"run.max_steps": 8})
    assert resumed.status == "completed" and resumed.step == 8 and resumed.run_dir == first.run_dir
    whole, parts = lora_tensors(lora_run.run_dir), lora_tensors(resumed.run_dir)
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    assert losses(resumed.run_dir) == losses(lora_run.run_dir)


def test_a_finished_lora_run_resumed_further_writes_its_lora_again(root, tiny_sd, captioned_digits):
    first = finetune(root / "cached", tiny_sd, captioned_digits, out="again", **{"run.max_steps": 2})
    before = lora_tensors(first.run_dir)
    resumed = finetune(root / "cached", tiny_sd, None, resume=first.run_dir, **{"run.max_steps": 4})
    assert resumed.status == "completed" and resumed.step == 4
    after = lora_tensors(resumed.run_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_dreambooth_class_images_are_generated_once_and_reused(root, tiny_sd, tmp_path):
    instances = tmp_path / "subject"
    instances.mkdir()
    for k, png in enumerate(sorted(write_captioned_digits(tmp_path / "digits", 6).glob("*.png"))):
        shutil.copy(png, instances / f"{k}.png")
    keys = {"finetune.instance_data": str(instances), "finetune.instance_prompt": "a photo of sks digit",
            "finetune.class_prompt": "a photo of a digit", "finetune.num_class_images": 4,
            "finetune.validation_images": 1, "optim.batch_size": 2, "run.max_steps": 4, "stop.eval_every": 2}
    first = finetune(tmp_path, tiny_sd, None, out="first", **keys)
    (entry,) = (tmp_path / "cache" / "class-images").iterdir()
    cached = load_file(str(entry))["images"]
    second = finetune(tmp_path, tiny_sd, None, out="second", **keys)
    assert first.status == second.status == "completed"
    assert cached.dtype == torch.uint8 and cached.shape == (4, 3, 16, 16)
    assert [p.name for p in (tmp_path / "cache" / "class-images").iterdir()] == [entry.name]
    # the first run's sample phase has one more window: the class images (the other one is the final preview)
    assert first.summary.phase("sample").count == second.summary.phase("sample").count + 1


def test_sd3_lora_run_loads_in_plain_diffusers(tmp_path, tiny_sd3, captioned_digits):
    from diffusers import StableDiffusion3Pipeline

    outcome = finetune(tmp_path, tiny_sd3, captioned_digits, **{"run.max_steps": 4})
    assert outcome.status == "completed" and outcome.step == 4
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    base = _images(pipe)
    pipe.load_lora_weights(outcome.run_dir / "lora")
    assert (_images(pipe) - base).abs().max() > 1e-4
    assert any("lora_A" in name for name, _ in pipe.transformer.named_parameters())


def test_validation_loss_is_deterministic_and_early_stopping_stops_a_run_that_cannot_learn(
        tmp_path, tiny_sd, captioned_digits):
    outcome = finetune(tmp_path, tiny_sd, captioned_digits,
                       **{"optim.lr": 1e-12, "run.max_steps": 12, "stop.eval_every": 2, "stop.patience": 2})
    _, val = losses(outcome.run_dir)
    assert outcome.status == "stopped" and outcome.step == 6
    assert "no improvement" in outcome.stop_reason and "2 evaluations" in outcome.stop_reason
    # the same held-out images, timesteps and noise at every evaluation: weights that do not move, one value
    assert len(val) == 3 and val[0] > 0 and val[1] == val[0] and val[2] == val[0]


def _bad_case(tmp_path: Path, sd: Path, data: Path, case: str) -> tuple[Path, Path, dict]:
    """``(pipeline, dataset, overrides)`` of one bad input."""
    if case == "pipeline without vae":
        broken = tmp_path / "broken"
        shutil.copytree(sd, broken)
        shutil.rmtree(broken / "vae")
        return broken, data, {}
    if case == "captions missing":
        return sd, write_captioned_digits(tmp_path / "half", 10, caption_every=2), {}
    if case == "caption too long":
        folder = write_captioned_digits(tmp_path / "long", 10)
        rows = (folder / "metadata.jsonl").read_text().splitlines()
        rows[3] = json.dumps({"file_name": "3.png", "text": "a photo of a dog " * 4})
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
        return sd, folder, {}
    empty = tmp_path / "empty"
    empty.mkdir()
    return sd, data, {
        "rank 0": {"finetune.lora_rank": 0}, "rank -1": {"finetune.lora_rank": -1},
        "empty instance folder": {"finetune.instance_data": str(empty), "finetune.instance_prompt": "a sks digit"},
        "instance prompt without folder": {"finetune.instance_prompt": "a sks digit"},
        "class prompt without count": {"finetune.class_prompt": "a photo of a digit"},
    }[case]


@pytest.mark.parametrize("case, words", [
    ("pipeline without vae", "vae"), ("captions missing", "caption"), ("caption too long", "tokens"),
    ("rank 0", "lora_rank"), ("rank -1", "lora_rank"), ("empty instance folder", "--instance-data"),
    ("instance prompt without folder", "--instance-data"), ("class prompt without count", "--num-class-images"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, tiny_sd, captioned_digits, case, words):
    pipeline, data, keys = _bad_case(tmp_path, tiny_sd, captioned_digits, case)
    with pytest.raises(UserInputError) as error:
        finetune(tmp_path / "out", pipeline, data, **keys)
    message = str(error.value)
    assert "\n" not in message and words in message
    assert not (tmp_path / "out").exists()  # no run directory, no ledger, no cache
