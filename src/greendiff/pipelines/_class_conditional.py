"""A diffusers pipeline that generates by class, with classifier-free guidance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from greendiff.errors import UserInputError
from greendiff.pipelines._classes import ClassTableMixin, check_class_names, names_given
from greendiff.pipelines._guidance import (
    check_class_labels, check_guidance_scale, guided_output, guided_scheduler, num_classes_of,
)
from greendiff.pipelines._output import image_output


class ClassConditionalPipeline(ClassTableMixin, DiffusionPipeline):
    """Images of the requested classes from a class-conditional ``UNet2DModel`` (K classes, null class K)
    and a scheduler, guided by classifier-free guidance (Ho & Salimans 2022). Saves and loads like any
    diffusers pipeline (``save_pretrained`` writes safetensors; ``from_pretrained`` on this class reads
    them back); ``greendiff train`` exports one for a class-conditional run.

    Example::

        from greendiff.pipelines import ClassConditionalPipeline
        pipe = ClassConditionalPipeline.from_pretrained("runs/mnist-cond/pipeline")
        images = pipe([3, 3, 7], guidance_scale=3.0, num_inference_steps=50,
                      generator=torch.Generator().manual_seed(0)).images  # three PIL images

    With ``class_names`` (the name of each id 0..K-1, kept in ``model_index.json`` as diffusers' DiTPipeline
    keeps ``id2label``) classes may be asked for by name: ``pipe(["cat", "dog"])``, or
    ``pipe.class_ids(["cat", "dog"])`` for their ids.

    Args:
        unet: A ``UNet2DModel`` with diffusers' learned class embedding (``num_class_embeds`` = K + 1).
        scheduler: Any diffusers scheduler with ``set_timesteps`` and ``step`` (DDPM, DDIM, ...).
        class_names: The name of each class id 0..K-1 (K distinct non-empty strings), or None (default;
            pipelines exported before names were recorded load as None): ids only.
    """

    model_cpu_offload_seq = "unet"
    _denoiser = "unet"

    def __init__(self, unet, scheduler, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        names = check_class_names(class_names, num_classes_of(unet))
        self.register_to_config(class_names=list(names) if names is not None else None)

    @torch.no_grad()
    def __call__(self, class_labels: int | str | Sequence[int | str] | torch.Tensor, guidance_scale: float = 1.0, num_inference_steps: int = 1000,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: Literal["pil", "np", "pt"] = "pil", return_dict: bool = True):
        """One image per entry of ``class_labels``.

        Args:
            class_labels: A class id in 0..K-1, or a list of them (mixed classes in one batch): Python or
                numpy integers, or a 1-d integer tensor or array; or class names (:attr:`class_names`).
            guidance_scale: w in ε̂ = ε_uncond + w·(ε_cond − ε_uncond): 1 (default) the conditional model
                alone (one forward per step), 0 the unconditional one, > 1 sharper, more typical images
                of the class (two forwards per step, batched as one).
            num_inference_steps: Denoising steps (default 1000, DDPM's; a DDIM scheduler needs far fewer).
            generator: Seeds the starting noise and the scheduler's noise.
            output_type: ``"pil"`` (a list of PIL images), ``"np"`` ((N, H, W, C) float in [0, 1]) or
                ``"pt"`` ((N, C, H, W) tensor in [0, 1]).
            return_dict: ``ImagePipelineOutput`` if true, else a one-tuple ``(images,)``.

        Raises:
            UserInputError: (a ``ValueError``) no class labels, a class id outside 0..K-1 or a label that
                is not an integer, an unknown class name, a guidance scale that is not a finite number >= 0,
                or an unknown ``output_type``.
        """
        if output_type not in ("pil", "np", "pt"):
            raise UserInputError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise UserInputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        w = check_guidance_scale(guidance_scale)
        if names_given(class_labels):
            class_labels = self.class_ids(class_labels)
        labels = check_class_labels(class_labels, self.num_classes).to(self._execution_device)
        config = self.unet.config
        size = (config.sample_size, config.sample_size) if isinstance(config.sample_size, int) else tuple(config.sample_size)
        x = randn_tensor((labels.shape[0], config.in_channels, *size), generator=generator,
                         device=self._execution_device, dtype=self.unet.dtype)  # (N, C, H, W)
        scheduler = guided_scheduler(self.scheduler, w)
        scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(scheduler.timesteps):
            model_output = guided_output(self.unet, x, t, labels, w, self.null_class)
            x = scheduler.step(model_output, t, x, generator=generator).prev_sample
        images = (x / 2 + 0.5).clamp(0, 1).float()
        return image_output(self, images, output_type, return_dict)
