"""greendiff.pipelines.LatentPipeline: a UNet or a DiT on a VAE's latents, any scheduler, decoded; save, load,
generate; bad input is one line."""

from __future__ import annotations

import pytest
import torch

from greendiff.errors import UserInputError
from tests.test_pipelines import assert_never_unpickles

K = 3
NAMES = ("cat", "dog", "bird")


def tiny_vae(latent_channels: int = 4, seed: int = 0):
    """An 8x8 RGB AutoencoderKL with 4x4 latents (one downsampling)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=8, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         scaling_factor=0.5).eval()


def tiny_dit(num_classes: int = K, seed: int = 0):
    """A one-block DiT on 4x4x4 latents, label dropout off, its (untrained) classes made visibly different."""
    from diffusers import DiTTransformer2DModel

    from greendiff.train._dit import disable_label_dropout

    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(num_layers=1, num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                sample_size=4, patch_size=2, num_embeds_ada_norm=num_classes)
    with torch.no_grad():
        for table in (m for name, m in dit.named_modules() if name.endswith("class_embedder.embedding_table")):
            table.weight.mul_(20)
    return disable_label_dropout(dit).eval()


def tiny_unet(num_classes: int = 0, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, num_class_embeds=num_classes + 1 if num_classes else None)
    if num_classes:
        with torch.no_grad():
            unet.class_embedding.weight.mul_(50)
    return unet.eval()


def latent_pipeline(model, scheduler, class_names=None):
    from greendiff.pipelines import LatentPipeline

    pipe = LatentPipeline(model=model, vae=tiny_vae(), scheduler=scheduler, class_names=class_names)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, labels=None, w=1.0, seed=0, steps=3, **kwargs):
    return pipe(labels, guidance_scale=w, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                output_type="pt", **kwargs).images


def loaded(pipe, folder):
    from greendiff.pipelines import LatentPipeline

    pipe.save_pretrained(str(folder))
    back = LatentPipeline.from_pretrained(str(folder))
    back.set_progress_bar_config(disable=True)
    return back


def test_a_dit_with_ddim_round_trips_and_samples_by_class_name(tmp_path):
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    pipe = latent_pipeline(tiny_dit(), DDIMScheduler(num_train_timesteps=100), class_names=NAMES)
    back = loaded(pipe, tmp_path / "pipe")
    assert isinstance(back.model, DiTTransformer2DModel)
    assert (back.num_classes, back.null_class, back.class_names) == (K, K, NAMES)
    assert (tmp_path / "pipe" / "model" / "diffusion_pytorch_model.safetensors").is_file()
    images = generate(back, [2, 0], w=3.0)
    assert images.shape == (2, 3, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(images, generate(pipe, [2, 0], w=3.0))
    assert torch.equal(generate(back, ["bird", "cat"], w=3.0), images)
    assert not torch.equal(generate(back, [0, 0], w=3.0)[0], images[0])  # the class changes the image


def test_images_are_the_vae_decode_of_the_latents_the_scheduler_leaves():
    """A model that predicts zero noise: DDIM (eta 0, final alpha 1) turns the starting noise z into
    z / sqrt(alpha_bar of the first timestep), and the VAE decodes that divided by its scaling factor."""
    from diffusers import DDIMScheduler

    unet = tiny_unet()
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    scheduler = DDIMScheduler(num_train_timesteps=100, clip_sample=True)
    pipe = latent_pipeline(unet, scheduler)
    images = generate(pipe, batch_size=2)
    z = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    scheduler.set_timesteps(3)
    first = int(scheduler.timesteps[0])
    latents = z / scheduler.alphas_cumprod[first].sqrt()
    assert float(latents.abs().max()) > 1  # clip_sample would have cut them: the pipeline never clips latents
    expected = (pipe.vae.decode(latents / 0.5).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


def test_a_class_conditional_unet_with_flow_matching_round_trips_and_restarts_its_steps(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    pipe = latent_pipeline(tiny_unet(K), FlowMatchEulerDiscreteScheduler())
    back = loaded(pipe, tmp_path / "pipe")
    assert isinstance(back.model, UNet2DModel) and back.num_classes == K and back.class_names is None
    first = generate(back, [1, 2], w=2.0)
    assert first.shape == (2, 3, 8, 8)
    assert torch.equal(generate(back, [1, 2], w=2.0), first)  # a second batch starts from step 0 again
    assert torch.equal(generate(pipe, [1, 2], w=2.0), first)
    assert not torch.equal(generate(back, [0, 2], w=2.0)[0], first[0])


def test_flow_matching_moves_latents_by_the_velocity():
    """Euler steps of flow matching, x += (sigma_next - sigma) * v: a model predicting v = 0 leaves the
    starting noise, so the images are the decode of that noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    unet = tiny_unet()
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    pipe = latent_pipeline(unet, FlowMatchEulerDiscreteScheduler())
    z = torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    expected = (pipe.vae.decode(z / 0.5).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(generate(pipe), expected, rtol=0, atol=1e-6)


def test_an_unconditional_unet_makes_batch_size_images_and_takes_no_labels(tmp_path):
    from diffusers import DDPMScheduler

    pipe = loaded(latent_pipeline(tiny_unet(), DDPMScheduler(num_train_timesteps=100)), tmp_path / "pipe")
    assert pipe.num_classes == 0
    images = generate(pipe, batch_size=3)
    assert images.shape == (3, 3, 8, 8) and not torch.equal(images[0], images[1])
    with pytest.raises(UserInputError, match="this model is unconditional"):
        generate(pipe, [0])


@pytest.mark.parametrize("call, message", [
    (dict(class_labels=None), "class_labels is None"),
    (dict(class_labels=[3]), "class id 3 is outside 0..2"),
    (dict(class_labels=["fish"]), "unknown class 'fish'"),
    (dict(class_labels=[0], guidance_scale=-1.0), "guidance scale must be a finite number >= 0"),
    (dict(class_labels=[0], num_inference_steps=0), "num_inference_steps must be a positive integer, got 0"),
    (dict(class_labels=[0], batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(class_labels=[0], output_type="latent"), "output_type must be 'pil', 'np' or 'pt'"),
])
def test_bad_calls_are_one_line(call, message):
    from diffusers import DDIMScheduler

    pipe = latent_pipeline(tiny_dit(), DDIMScheduler(num_train_timesteps=100), class_names=NAMES)
    with pytest.raises(UserInputError, match=message) as info:
        pipe(**call)
    assert "\n" not in str(info.value)


def test_output_types_follow_diffusers():
    from diffusers import DDIMScheduler

    pipe = latent_pipeline(tiny_dit(), DDIMScheduler(num_train_timesteps=100))
    pt = generate(pipe, [0, 1])
    as_np = pipe([0, 1], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    torch.testing.assert_close(torch.from_numpy(as_np), pt.permute(0, 2, 3, 1))
    pil = pipe([0], num_inference_steps=1).images
    assert len(pil) == 1 and pil[0].size == (8, 8)


def test_from_pretrained_never_reads_a_pickled_bin(tmp_path):
    from diffusers import DDIMScheduler

    pipe = latent_pipeline(tiny_dit(), DDIMScheduler(num_train_timesteps=100))
    assert_never_unpickles(pipe, "model", tmp_path / "pipe")
