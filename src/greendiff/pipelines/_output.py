"""What greendiff's pipelines return, as diffusers' own image pipelines do."""

from __future__ import annotations

import torch
from diffusers import ImagePipelineOutput


def image_output(pipe, images: torch.Tensor, output_type: str, return_dict: bool):
    """``images`` (float (N, C, H, W) in [0, 1]) as ``output_type`` asks (``pt`` as they are, ``np`` (N, H, W, C),
    ``pil`` a list of images), after ``pipe`` frees its offload hooks: an :class:`ImagePipelineOutput`, or a
    1-tuple when ``return_dict`` is False."""
    if output_type != "pt":
        images = images.cpu().permute(0, 2, 3, 1).numpy()
        if output_type == "pil":
            images = pipe.numpy_to_pil(images)
    pipe.maybe_free_model_hooks()
    return ImagePipelineOutput(images=images) if return_dict else (images,)
