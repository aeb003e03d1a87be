"""Training in a VAE's latent space, with a UNet or a DiT backbone and each objective: the trainer's latent path
(cached and uncached batches, the metered encode phase), bit-identical resumes, the exported pipelines as plain
diffusers reads them, and what a run directory gives back (:func:`greendiff.train.load_run_model`)."""

from __future__ import annotations

import pytest
import torch

from greendiff.data import ImageSet, load_dataset
from greendiff.train import load_run_model, resolve_config, to_toml
from greendiff.train import train as train_run

TINY_LATENT = {"model.preset": "nano", "model.block_out_channels": "8,16", "data.dataset": "digits",
               "data.resolution": 16, "optim.batch_size": 8, "optim.lr": 2e-3, "optim.warmup_steps": 0,
               "optim.lr_schedule": "constant", "optim.sample_steps": 2, "run.num_samples": 4, "run.log_every": 1,
               "run.sample_every": 1000, "run.checkpoint_every": 1000, "run.max_steps": 4}
DIT = {"model.backbone": "dit", "model.preset": "pico", "model.conditioning": "class", "model.num_classes": 10,
       "model.block_out_channels": None}


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A tiny untrained AutoencoderKL saved as a VAE folder: 1 channel, downsampling 4, 4 latent channels."""
    from greendiff.train._vae_train import build_vae

    vae = build_vae("nano", 1, resolution=16)
    vae.register_to_config(scaling_factor=0.5)
    folder = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def digits16() -> ImageSet:
    full = load_dataset("digits", 16)
    return ImageSet(full.images[:48].clone(), "digits[:48]", labels=full.labels[:48].clone(),
                    class_names=full.class_names)


def latent_config(vae_dir, cache_dir, **overrides):
    settings = {**TINY_LATENT, "model.vae": str(vae_dir), "data.latent_cache_dir": str(cache_dir), **overrides}
    return resolve_config(overrides={k: v for k, v in settings.items() if v is not None})


def train(config, run_dir, data, tracker, **kwargs):
    """:func:`greendiff.train.train`, and the run's config.toml as the train workflow writes it."""
    result = train_run(config, run_dir, data, tracker, **kwargs)
    (run_dir / "config.toml").write_text(to_toml(config))
    return result


def weights(run_dir):
    from safetensors.torch import load_file

    (folder,) = [p for p in (run_dir / "checkpoints").iterdir() if p.name == "step-4"]
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_a_latent_run_resumes_bit_identically_on_cpu(backbone, vae_dir, digits16, tmp_path, tracker):
    extra = DIT if backbone == "dit" else {}
    config = latent_config(vae_dir, tmp_path / "cache", **extra)
    straight = train(config, tmp_path / "straight", digits16, tracker)
    assert (straight.status, straight.step) == ("completed", 4)
    half = latent_config(vae_dir, tmp_path / "cache", **extra, **{"run.max_steps": 2})
    assert train(half, tmp_path / "resumed", digits16, tracker).step == 2
    resumed = train(config, tmp_path / "resumed", digits16, tracker, resume=True)
    assert resumed.step == 4
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = load_run_model(tmp_path / "straight")
    assert model.space.latent and model.image_shape == (1, 16, 16)
    assert (model.unet.config.in_channels, model.unet.config.sample_size) == (4, 4)
    labels = [3, 7] if backbone == "dit" else None
    images = model.sample(2, 2, torch.Generator().manual_seed(0), labels=labels)
    assert images.shape == (2, 1, 16, 16) and float(images.abs().max()) <= 1.0


def test_a_latent_dit_exports_a_dit_pipeline_that_plain_diffusers_samples_by_class(vae_dir, digits16, tmp_path, tracker):
    from diffusers import DiTPipeline

    train(latent_config(vae_dir, tmp_path / "cache", **DIT), tmp_path / "run", digits16, tracker)
    pipe = DiTPipeline.from_pretrained(str(tmp_path / "run" / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.labels["7"] == 7 and type(pipe.scheduler).__name__ == "DDIMScheduler"
    images = pipe(class_labels=pipe.get_label_ids(["3", "7"]), num_inference_steps=2, guidance_scale=2.0,
                  generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 1)
    # greendiff reads it back at its own 10 classes (the pipeline's class table is widened to 1,000)
    model = load_run_model(tmp_path / "run")
    assert (model.num_classes, model.unet.config.num_embeds_ada_norm) == (10, 10)


@pytest.mark.parametrize("extra, pipeline", [({}, "LatentPipeline"), ({**DIT, "optim.objective": "flow"}, "LatentPipeline")])
def test_latent_unets_and_flow_dits_export_a_latent_pipeline_that_loads_in_one_line(extra, pipeline, vae_dir, digits16,
                                                                                    tmp_path, tracker):
    import json

    from greendiff.pipelines import LatentPipeline

    train(latent_config(vae_dir, tmp_path / "cache", **extra), tmp_path / "run", digits16, tracker)
    index = json.loads((tmp_path / "run" / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    pipe = LatentPipeline.from_pretrained(str(tmp_path / "run" / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    flow = extra.get("optim.objective") == "flow"
    assert type(pipe.scheduler).__name__ == ("FlowMatchEulerDiscreteScheduler" if flow else "DDIMScheduler")
    labels = {"class_labels": [1, 2]} if extra else {"batch_size": 2}
    out = pipe(**labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (2, 1, 16, 16)


def test_a_cached_and_an_uncached_run_draw_the_same_batches(vae_dir, digits16, tmp_path, tracker):
    from greendiff.train import Trainer

    def drawn(cache: bool) -> list:
        config = latent_config(vae_dir, tmp_path / "cache", **{"data.latent_cache": cache, "run.max_steps": 8})
        trainer = Trainer(config, tmp_path / f"run-{cache}", digits16, tracker)
        trainer._start()
        try:
            return [trainer.draw_batch(step) for step in range(7)]  # past one epoch (6 batches of 8)
        finally:
            trainer.stream.close()

    cached, uncached = drawn(True), drawn(False)
    for a, b in zip(cached, uncached):
        assert torch.equal(a.loss_inputs.get("labels", torch.zeros(1)), b.loss_inputs.get("labels", torch.zeros(1)))
        # the encoder's convolutions round differently for a batch of 8 and the cache's chunk of 48
        assert torch.allclose(a.x0, b.x0, atol=1e-5)
    assert not torch.allclose(cached[0].x0, cached[6].x0)  # a new draw every step


def test_the_encode_phase_is_metered_once_then_the_cache_hits(vae_dir, digits16, tmp_path):
    from greendiff.energy import EnergyMonitor, MonitorOptions
    from greendiff.tracking import Tracker

    def phases(name: str, cache: bool = True) -> dict:
        tracker = Tracker(name, kind="train", ledger=tmp_path / "ledger.sqlite",
                          monitor=EnergyMonitor.detect(MonitorOptions(measure_gpus=False))).start()
        config = latent_config(vae_dir, tmp_path / "cache", **{"run.max_steps": 2, "data.latent_cache": cache})
        train(config, tmp_path / name, digits16, tracker)
        return {p.name: p.count for p in tracker.stop().phases}

    assert phases("cold")["encode"] == 1  # the whole dataset, once
    assert "encode" not in phases("warm")  # a hit: nothing encoded
    assert phases("uncached", cache=False)["encode"] == 2  # every step encodes its batch
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_pixel_flow_run_exports_a_ddpm_pipeline_with_the_flow_scheduler(tiny_config, tiny_data, tmp_path, tracker):
    from diffusers import DDPMPipeline

    train(tiny_config(optim__objective="flow", run__max_steps=2), tmp_path / "run", tiny_data, tracker)
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "run" / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    out = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (2, 8, 8, 1)
    model = load_run_model(tmp_path / "run")
    assert type(model.sampler).__name__ == "FlowMatchEulerDiscreteScheduler" and model.config.optim.sampler_name == "euler"


def test_the_vae_encodes_and_decodes_in_fp32_under_a_callers_autocast(vae_dir):
    from greendiff.train import decode_latents, encode_posterior, load_vae

    vae, z = load_vae(vae_dir), torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    plain = decode_latents(vae, z), encode_posterior(vae, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = decode_latents(vae, z), encode_posterior(vae, images)
    assert torch.equal(plain[0], cast[0]) and all(torch.equal(a, b) for a, b in zip(plain[1], cast[1]))


def test_a_resume_is_pinned_to_the_vae_s_weights_not_its_path(vae_dir, digits16, tmp_path, tracker):
    import shutil

    from greendiff.errors import UserInputError
    from greendiff.train import check_train
    from greendiff.train._vae_train import build_vae

    moved = tmp_path / "moved-vae"
    shutil.copytree(vae_dir, moved)
    train(latent_config(moved, tmp_path / "cache", **{"run.max_steps": 2}), tmp_path / "run", digits16, tracker)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(moved, elsewhere)  # the same weights under another name: the same run
    check_train(latent_config(elsewhere, tmp_path / "cache", **{"run.max_steps": 4}), 1, tmp_path / "run")
    other = build_vae("nano", 1, resolution=16, seed=7)
    other.register_to_config(scaling_factor=0.5)
    other.save_pretrained(str(moved), safe_serialization=True)  # other weights at the same path: another run
    with pytest.raises(UserInputError, match="model.vae_sha256"):
        check_train(latent_config(moved, tmp_path / "cache", **{"run.max_steps": 4}), 1, tmp_path / "run")


def test_latents_over_the_memory_budget_are_not_cached(vae_dir, digits16, tmp_path, caplog):
    from greendiff.train import space_for

    space = space_for(latent_config(vae_dir, tmp_path / "cache", **{"data.cache_max_gb": 1e-9}))
    assert space.training_data(digits16) is digits16  # streamed as images, each batch encoded
    assert "not cached" in caplog.text and not (tmp_path / "cache").exists()


def test_an_unwritable_latent_cache_is_one_line_before_anything_starts(vae_dir, tmp_path):
    from greendiff.errors import UserInputError
    from greendiff.train import check_train

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserInputError, match=r"the latent cache .* cannot be written .* --latent-cache-dir DIR, or "
                                             r"--no-latent-cache") as info:
        check_train(latent_config(vae_dir, blocker / "latents"), 1)
    assert "\n" not in str(info.value)


def test_flow_trains_with_uniform_weights_unless_the_weighting_is_given():
    assert resolve_config(overrides={"optim.objective": "flow"}).optim.loss_weighting == "uniform"
    assert resolve_config(overrides={"optim.objective": "flow", "optim.loss_weighting": "min-snr"}).optim.loss_weighting \
        == "min-snr"
    assert resolve_config(overrides={"optim.objective": "v"}).optim.loss_weighting == "min-snr"


def test_a_latent_pipeline_whose_vae_does_not_fit_its_network_is_one_line(vae_dir, digits16, tmp_path, tracker):
    import json

    from greendiff.errors import UserInputError

    train(latent_config(vae_dir, tmp_path / "cache"), tmp_path / "run", digits16, tracker)
    config = tmp_path / "run" / "pipeline" / "vae" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "latent_channels": 8}))
    with pytest.raises(UserInputError, match="its VAE makes 8-channel latents and its network takes 4 channels"):
        load_run_model(tmp_path / "run")
