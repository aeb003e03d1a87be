"""A pretrained text-to-image pipeline loaded for fine-tuning: its denoiser (trained), VAE and text encoders
(frozen), the conditioning it was trained with, and generation through the pipeline itself.

The text conditioning is diffusers' own (the pipeline's ``encode_prompt``), so a fine-tune sees exactly what
the pipeline feeds its denoiser at inference: a UNet's ``encoder_hidden_states`` (Stable Diffusion), or an
SD3 transformer's ``encoder_hidden_states`` and ``pooled_projections``. The training objective follows the
base model's scheduler: epsilon or v for a DDPM-family scheduler (its ``prediction_type``), rectified flow for
``FlowMatchEulerDiscreteScheduler`` (Esser et al. 2024), so a fine-tune never changes what the model predicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import contextlib
import warnings

import torch

from greendiff.errors import UserInputError
from greendiff.names import display_path, shown
from greendiff.train._pipeline_layout import (
    PipelineLayout, check_pipeline_folder, component_sha256, pipeline_weights_sha256,
)
from greendiff.train._vae import VaeShape

#: Longest T5 prompt an SD3 pipeline encodes (its ``max_sequence_length`` default).
T5_MAX_TOKENS = 256


@dataclass(frozen=True)
class TextCondition:
    """Text embeddings of a batch of prompts, as the denoiser takes them.

    Attributes:
        hidden: ``encoder_hidden_states`` (B, L, D).
        pooled: SD3's ``pooled_projections`` (B, P), or None (Stable Diffusion has none).
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    def take(self, indices: torch.Tensor | Sequence[int]) -> TextCondition:
        index = torch.as_tensor(indices, dtype=torch.long)
        return TextCondition(self.hidden[index], self.pooled[index] if self.pooled is not None else None)

    def to(self, device: torch.device | str) -> TextCondition:
        return TextCondition(self.hidden.to(device), self.pooled.to(device) if self.pooled is not None else None)

    @staticmethod
    def cat(parts: Sequence[TextCondition]) -> TextCondition:
        pooled = [p.pooled for p in parts]
        return TextCondition(torch.cat([p.hidden for p in parts]),
                             torch.cat(pooled) if all(p is not None for p in pooled) and pooled else None)


@contextlib.contextmanager
def _quiet_transformers():
    """While a pipeline loads: no per-component "Loading weights" bars and no import-time notes from
    transformers (the job shows its own progress); its verbosity is restored afterwards."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # a pipeline without transformers components
        yield
        return
    from diffusers.utils import logging as diffusers_logging

    bars = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    before = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:  # the process's own settings back (the job's bars are its own)
        transformers_logging.set_verbosity(before)
        if bars[0]:
            transformers_logging.enable_progress_bar()
        if bars[1]:
            diffusers_logging.enable_progress_bar()


def _objective_of(scheduler) -> str:
    """The objective the base model was trained with, from its scheduler."""
    if type(scheduler).__name__.startswith("FlowMatch"):
        return "flow"
    prediction = scheduler.config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise UserInputError(f"the pipeline's scheduler predicts {shown(prediction)}; greendiff fine-tunes epsilon, "
                             "v_prediction and flow-matching models")
    return "v" if prediction == "v_prediction" else "epsilon"


class BasePipeline:
    """A local diffusers pipeline folder, checked (:func:`check_pipeline_folder`) and loaded once from
    safetensors, fp32 on the CPU, every component frozen (the fine-tune unfreezes what it trains).

    Example::

        base = BasePipeline.load(Path("pipelines/sd-tiny"))
        cond = base.encode(["a photo of a dog"])
        prediction = base.predict(base.denoiser, noisy_latents, timesteps, cond)
    """

    def __init__(self, layout: PipelineLayout, pipe) -> None:
        self.layout, self.pipe = layout, pipe
        self.objective = _objective_of(pipe.scheduler)

    @classmethod
    def load(cls, folder: Path, what: str = "--pipeline") -> BasePipeline:
        layout = check_pipeline_folder(Path(folder), what)
        try:
            with _quiet_transformers(), warnings.catch_warnings():  # diffusers >= 0.36 renames torch_dtype
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                from diffusers import DiffusionPipeline

                pipe = DiffusionPipeline.from_pretrained(str(layout.folder), use_safetensors=True,
                                                         local_files_only=True, torch_dtype=torch.float32)
        except Exception as exc:  # diffusers, transformers and safetensors raise their own kinds
            message = " ".join(str(exc).split())[:200]
            raise UserInputError(f"{what} {display_path(layout.folder)}: the pipeline cannot be loaded "
                                 f"({type(exc).__name__}: {message})") from None
        pipe.set_progress_bar_config(disable=True)  # this pipeline's sampling bars (the job shows its own)
        for name in (layout.denoiser, layout.vae, *(encoder for encoder, _ in layout.text_encoders)):
            getattr(pipe, name).eval().requires_grad_(False)
        return cls(layout, pipe)

    # -- the components ------------------------------------------------------------------------------------------

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.layout.denoiser)

    @property
    def vae(self) -> torch.nn.Module:
        return getattr(self.pipe, self.layout.vae)

    @property
    def text_encoder(self) -> torch.nn.Module:
        """The first text encoder (the one text-encoder LoRA adapts)."""
        return getattr(self.pipe, self.layout.text_encoders[0][0])

    def vae_shape(self) -> VaeShape:
        c = self.vae.config
        return VaeShape(int(c.in_channels), int(c.latent_channels), 2 ** (len(c.block_out_channels) - 1),
                        float(c.scaling_factor), float(getattr(c, "shift_factor", None) or 0.0))

    def default_resolution(self) -> int:
        """The side in pixels the denoiser was built for: its ``sample_size`` times the VAE's downsampling."""
        return int(self.denoiser.config.sample_size) * self.vae_shape().downsample

    def weights_sha256(self) -> str:
        """What identifies the base model in caches and checkpoints (:func:`pipeline_weights_sha256`)."""
        return pipeline_weights_sha256(self.layout.folder)

    def text_weights_sha256(self) -> str:
        """The digest of the text encoders' and tokenizers' files (the text-embedding cache's key)."""
        layout = self.layout
        return component_sha256(layout.folder, [name for pair in layout.text_encoders for name in pair])

    # -- text ----------------------------------------------------------------------------------------------------

    def check_prompts(self, prompts: Sequence[str], what: str) -> None:
        """Every prompt fits each tokenizer (CLIP's 77 tokens with its start and end; T5's 256): a longer one
        would be cut silently by the pipeline, so it is one line naming it and the limit instead."""
        for _, name in self.layout.text_encoders:
            tokenizer = getattr(self.pipe, name)
            limit = T5_MAX_TOKENS if "T5" in type(tokenizer).__name__ else int(tokenizer.model_max_length)
            for k, prompt in enumerate(prompts):
                count = len(tokenizer(prompt, truncation=False).input_ids)
                if count > limit:
                    short = prompt if len(prompt) <= 40 else prompt[:40] + "..."
                    raise UserInputError(f"{what} {k + 1} ({shown(short)}) is {count} tokens long; the "
                                         f"pipeline's {name} takes at most {limit}: shorten it")

    def encode(self, prompts: Sequence[str], device: torch.device | str = "cpu", grad: bool = False) -> TextCondition:
        """The denoiser's conditioning of ``prompts`` (the pipeline's ``encode_prompt``, no guidance pair);
        ``grad``: keep the graph (text-encoder LoRA trains through it)."""
        prompts = list(prompts)
        with torch.set_grad_enabled(grad):
            if self.layout.kind == "unet":
                hidden, _ = self.pipe.encode_prompt(prompts, device, 1, False)
                return TextCondition(hidden)
            hidden, _, pooled, _ = self.pipe.encode_prompt(prompts, None, None, device=device,
                                                           do_classifier_free_guidance=False,
                                                           max_sequence_length=T5_MAX_TOKENS)
            return TextCondition(hidden, pooled)

    # -- the denoiser --------------------------------------------------------------------------------------------

    def predict(self, net, noisy: torch.Tensor, timesteps: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        """The denoiser's prediction for ``noisy`` latents at ``timesteps`` (B,) conditioned on ``cond``."""
        hidden = cond.hidden.to(noisy.dtype)
        if self.layout.kind == "unet":
            return net(noisy, timesteps, encoder_hidden_states=hidden).sample
        return net(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=hidden,
                   pooled_projections=cond.pooled.to(noisy.dtype)).sample

    def training_scheduler(self):
        """The noise schedule of training: a ``DDPMScheduler`` on the pipeline's betas (epsilon, v), or the
        pipeline's flow-matching scheduler (flow: only its ``num_train_timesteps`` is read)."""
        from diffusers import DDPMScheduler

        if self.objective == "flow":
            return self.pipe.scheduler
        return DDPMScheduler.from_config(self.pipe.scheduler.config)

    def generate(self, prompts: Sequence[str], steps: int, guidance_scale: float | None, resolution: int,
                 generator: torch.Generator, device: torch.device | str = "cpu",
                 on_step: Callable[[float], None] | None = None) -> torch.Tensor:
        """Images (n, C, H, W) in [-1, 1], fp32 on the CPU, of ``prompts`` by the pipeline itself (its own
        scheduler and guidance; ``guidance_scale`` None: the pipeline's default) with the denoiser as it is now;
        ``on_step(done)``: images done so far, after every sampler step."""
        n = len(prompts)
        callback = None
        if on_step is not None:
            def callback(pipe, i, t, kwargs):  # diffusers' step-end hook
                on_step(n * (i + 1) / steps)
                return kwargs
        self.pipe.to(device)
        with torch.no_grad():
            guidance = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
            out = self.pipe(list(prompts), num_inference_steps=steps, height=resolution, width=resolution,
                            generator=generator, output_type="pt", callback_on_step_end=callback, **guidance)
        return (out.images.float().cpu() * 2 - 1).clamp(-1, 1)
