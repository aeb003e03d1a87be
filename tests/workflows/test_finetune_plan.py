"""A fine-tune's config in the planning and tuning jobs: ``greendiff profile`` forecasts it and ``greendiff tune``
searches it on the validation loss, each loading the pipeline and splitting the images as ``finetune`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greendiff.data import load_digits
from greendiff.workflows import ProfileJob, StudyJob, new_study, resolve_settings, run_profile_job, work_on_study
from tests.train.tiny_pipelines import save_tiny_sd_pipeline
from tests.workflows.conftest import measurement

WORDS = "zero one two three four five six seven eight nine".split()


@pytest.fixture(scope="module")
def finetune_base(tmp_path_factory) -> dict[str, str]:
    """A tiny SD pipeline and 30 captioned 16x16 digits: the finetune keys a config names."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ft")
    pipeline = save_tiny_sd_pipeline(root / "sd")
    data, digits = root / "digits", load_digits(16)
    data.mkdir()
    rows = []
    for i in range(30):
        Image.fromarray(digits.images[i, 0].numpy()).save(data / f"{i:02d}.png")
        rows.append(json.dumps({"file_name": f"{i:02d}.png", "text": f"a digit {WORDS[int(digits.labels[i])]}"}))
    (data / "metadata.jsonl").write_text("\n".join(rows))
    return {"finetune.pipeline": str(pipeline), "data.dataset": str(data), "optim.batch_size": "4",
            "data.latent_cache_dir": str(root / "cache" / "latents"), "optim.sample_steps": "2", "run.log_every": "2"}


def test_profile_forecasts_a_finetune_config_with_its_pipeline_and_held_out_images(tmp_path, finetune_base):
    sets = {**finetune_base, "run.max_steps": "40", "stop.eval_every": "20"}
    outcome = run_profile_job(ProfileJob(overrides=sets, steps=8, warmup=2, output=tmp_path / "p.json",
                                         measurement=measurement(tmp_path / "l.sqlite")))
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["config"]["finetune"]["validation_images"] == 6  # a fifth of 30: held out as finetune does
    assert saved["config"]["data"]["resolution"] == 16 and saved["config"]["optim"]["num_train_timesteps"] == 100
    assert outcome.forecast.energy_kwh > 0 and outcome.forecast.steps == 40
    assert outcome.summary.phase("train").count == 8  # the profiled steps, on the pipeline's denoiser


def test_tune_searches_a_finetune_config_on_its_validation_loss(tmp_path, finetune_base):
    (tmp_path / "space.toml").write_text('[space]\n"optim.lr" = {low = 1e-5, high = 1e-3, log = true}\n')
    sets = {**finetune_base, "run.max_steps": "4"}
    study = new_study(StudyJob(space=tmp_path / "space.toml", trials=2, sets=sets, mode="pareto", name="s",
                               output_dir=tmp_path / "tune"))
    finished = []
    work_on_study(study, resolve_settings(measurement(tmp_path / "l.sqlite")), on_trial_end=finished.append)
    assert [t.state.name for t in finished] == ["COMPLETE", "COMPLETE"]
    losses = [t.values[0] for t in finished]
    assert all(0 < loss < 10 for loss in losses)  # the validation loss (an MSE of the noise), not an FID
    trial_dirs = sorted((study.folder / "trials").iterdir())
    assert all((d / "lora" / "pytorch_lora_weights.safetensors").is_file() for d in trial_dirs)
    first = (trial_dirs[0] / "config.toml").read_text()
    assert 'metric = "val_loss"' in first and str(Path(finetune_base["finetune.pipeline"])) in first
