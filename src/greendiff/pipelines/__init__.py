"""Pipelines greendiff ships, for generating with the models it trains: :class:`ClassConditionalPipeline`, a
diffusers ``DiffusionPipeline`` that samples by class with classifier-free guidance, and the guidance math
the trainer shares with it. Depends on torch and diffusers only: ``from greendiff.pipelines import
ClassConditionalPipeline`` works without the rest of greendiff.

A class-conditional run exports one to ``RUN/pipeline``; it loads in one line::

    pipe = ClassConditionalPipeline.from_pretrained("runs/mnist-cond/pipeline")
    images = pipe(list(range(10)), guidance_scale=3.0).images

Example (a tiny untrained UNet with 3 classes, saved and loaded back, one image of each class):
    >>> import tempfile, torch
    >>> from diffusers import DDIMScheduler, UNet2DModel
    >>> from greendiff.pipelines import ClassConditionalPipeline
    >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
    ...                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ...                    norm_num_groups=8, num_class_embeds=3 + 1)  # classes 0..2 and the null class 3
    >>> folder = tempfile.mkdtemp()
    >>> ClassConditionalPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100)).save_pretrained(folder)
    >>> pipe = ClassConditionalPipeline.from_pretrained(folder)
    >>> pipe.set_progress_bar_config(disable=True)
    >>> images = pipe([0, 1, 2], guidance_scale=2.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
    ...               output_type="pt").images
    >>> pipe.num_classes, tuple(images.shape)
    (3, (3, 1, 8, 8))
"""

from __future__ import annotations

from greendiff.pipelines._classes import check_class_names
from greendiff.pipelines._guidance import (
    batched_timestep,
    check_class_labels,
    check_guidance_scale,
    guided_noise,
    guided_output,
    guided_scheduler,
    latent_scheduler,
    num_classes_of,
    unwrapped,
)


def __getattr__(name: str):
    # diffusers is imported on first use of the pipeline, not with greendiff.train (which uses the guidance
    # functions): importing it takes seconds.
    if name == "ClassConditionalPipeline":
        from greendiff.pipelines._class_conditional import ClassConditionalPipeline

        return ClassConditionalPipeline
    if name == "LatentPipeline":
        from greendiff.pipelines._latent import LatentPipeline

        return LatentPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClassConditionalPipeline", "LatentPipeline", "batched_timestep", "check_class_labels", "check_class_names",
           "check_guidance_scale", "guided_noise", "guided_output", "guided_scheduler", "latent_scheduler",
           "num_classes_of", "unwrapped"]
