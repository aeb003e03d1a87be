"""A diffusers pipeline for latent models: denoise latents with a UNet or a DiT, decode them with the VAE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from greendiff.errors import UserInputError
from greendiff.pipelines._classes import ClassTableMixin, check_class_names, names_given
from greendiff.pipelines._guidance import (
    check_class_labels, check_guidance_scale, guided_output, guided_scheduler, latent_scheduler, num_classes_of,
)
from greendiff.pipelines._output import image_output


class LatentPipeline(ClassTableMixin, DiffusionPipeline):
    """Images from a latent diffusion model: a ``UNet2DModel`` (unconditional, or class-conditional with
    ``num_class_embeds`` = K + 1) or a ``DiTTransformer2DModel`` (K classes) denoises latents with any diffusers
    scheduler (DDPM, DDIM, ``FlowMatchEulerDiscreteScheduler`` for a flow-matching model), classes guided by
    classifier-free guidance (Ho & Salimans 2022) as :class:`ClassConditionalPipeline` does, and the
    ``AutoencoderKL`` decodes them: images = vae.decode(z / scaling_factor), z the model's latents. Loads in
    one line, ``LatentPipeline.from_pretrained(folder)`` (safetensors only).

    Example (a tiny untrained DiT of 3 classes on 4x4x4 latents and an 8x8 VAE, saved and loaded back):
        >>> import tempfile, torch
        >>> from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel
        >>> from greendiff.pipelines import LatentPipeline
        >>> dit = DiTTransformer2DModel(num_layers=1, num_attention_heads=2, attention_head_dim=8, in_channels=4,
        ...                             sample_size=4, patch_size=2, num_embeds_ada_norm=3)  # null class 3
        >>> vae = AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=8, latent_channels=4,
        ...                     down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        >>> folder = tempfile.mkdtemp()
        >>> LatentPipeline(model=dit, vae=vae, scheduler=DDIMScheduler(num_train_timesteps=100),
        ...                class_names=["cat", "dog", "bird"]).save_pretrained(folder)
        >>> pipe = LatentPipeline.from_pretrained(folder)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> images = pipe(["dog", "cat"], guidance_scale=2.0, num_inference_steps=2,
        ...               generator=torch.Generator().manual_seed(0), output_type="pt").images
        >>> pipe.num_classes, tuple(images.shape)
        (3, (2, 3, 8, 8))

    Args:
        model: A ``UNet2DModel`` or a ``DiTTransformer2DModel`` on the VAE's latents (in the diffusion scale).
        vae: The ``AutoencoderKL`` whose latents the model learned; its ``scaling_factor`` undoes the scale.
        scheduler: Any diffusers scheduler with ``set_timesteps`` and ``step``; sampled without
            ``clip_sample`` (latents are not bounded by [-1, 1]: :func:`latent_scheduler`).
        class_names: The name of each class id 0..K-1 (kept in ``model_index.json``), or None (default): ids only.
    """

    model_cpu_offload_seq = "model->vae"
    _denoiser = "model"

    def __init__(self, model, vae, scheduler, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.register_modules(model=model, vae=vae, scheduler=scheduler)
        names = check_class_names(class_names, num_classes_of(model))
        self.register_to_config(class_names=list(names) if names is not None else None)

    @torch.no_grad()
    def __call__(self, class_labels: int | str | Sequence[int | str] | torch.Tensor | None = None, batch_size: int = 1,
                 guidance_scale: float = 1.0, num_inference_steps: int = 50,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: Literal["pil", "np", "pt"] = "pil", return_dict: bool = True):
        """One image per entry of ``class_labels`` (a class-conditional model), or ``batch_size`` images (an
        unconditional one).

        Args:
            class_labels: A class id in 0..K-1 or a list of them (integers, a 1-d integer tensor or array), or
                class names (:attr:`class_names`); None (default) for an unconditional model.
            batch_size: Images of an unconditional model (default 1); a conditional one makes one per label.
            guidance_scale: w in ε̂ = ε_uncond + w·(ε_cond − ε_uncond) (any prediction: noise, v or velocity):
                1 (default) the conditional model alone, 0 the unconditional one, else two forwards per step.
            num_inference_steps: Scheduler steps (default 50).
            generator: Seeds the starting noise and the scheduler's noise.
            output_type: ``"pil"``, ``"np"`` ((N, H, W, C) float in [0, 1]) or ``"pt"`` ((N, C, H, W) in [0, 1]).
            return_dict: ``ImagePipelineOutput`` if true, else a one-tuple ``(images,)``.

        Raises:
            UserInputError: (a ``ValueError``) labels for an unconditional model or none for a conditional one,
                a class id outside 0..K-1, an unknown name, a bad guidance scale, step count, batch size or
                ``output_type``.
        """
        if output_type not in ("pil", "np", "pt"):
            raise UserInputError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        for name, value in (("num_inference_steps", num_inference_steps), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name} must be a positive integer, got {value!r}")
        w = check_guidance_scale(guidance_scale)
        labels = self._labels(class_labels)
        latents = self._denoise(labels.shape[0] if labels is not None else batch_size, labels, w,
                                num_inference_steps, generator)
        images = self._decode(latents)
        return image_output(self, images, output_type, return_dict)

    def _labels(self, class_labels) -> torch.Tensor | None:
        """The class ids asked for, checked, on the execution device; None for an unconditional model."""
        if class_labels is None and not self.num_classes:
            return None
        if names_given(class_labels):
            class_labels = self.class_ids(class_labels)
        return check_class_labels(class_labels, self.num_classes).to(self._execution_device)

    def _denoise(self, n: int, labels: torch.Tensor | None, w: float, steps: int, generator) -> torch.Tensor:
        """``n`` latents (n, c, h, w) in the diffusion scale, denoised from the scheduler's starting noise."""
        config = self.model.config
        side = config.sample_size
        size = (side, side) if isinstance(side, int) else tuple(side)
        x = randn_tensor((n, config.in_channels, *size), generator=generator, device=self._execution_device,
                         dtype=self.model.dtype)
        scheduler = guided_scheduler(latent_scheduler(self.scheduler), w)
        scheduler.set_timesteps(steps)  # also restarts a scheduler that counts its steps (flow matching)
        x = x * getattr(scheduler, "init_noise_sigma", 1.0)
        for t in self.progress_bar(scheduler.timesteps):
            model_input = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
            model_output = guided_output(self.model, model_input, t, labels, w, self.null_class).float()
            x = scheduler.step(model_output, t, x, generator=generator).prev_sample
        return x

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) float32 in [0, 1] from latents in the diffusion scale (the VAE's scaling factor)."""
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        return (self.vae.decode(z).sample.clamp(-1, 1) / 2 + 0.5).float()
