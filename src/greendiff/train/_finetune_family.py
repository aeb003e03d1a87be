"""The fine-tune family: a pretrained text-to-image pipeline's denoiser trained on captioned images.

The trainer's family seam (:mod:`greendiff.train._family`) with a :class:`~greendiff.train._base_pipeline.BasePipeline`
behind it: the network is the pipeline's denoiser with LoRA adapters (peft; Hu et al. 2021) or every weight
trainable (``--full``), inside a :class:`FinetuneModel` that also holds the text encoder when it has adapters
too; it trains in the pipeline VAE's latent space (the latent cache applies) on the captions' embeddings
(encoded once into a :class:`~greendiff.train._text_cache.TextTable`, cached on disk, unless the text encoder
trains); the loss is the base model's own objective, with DreamBooth's prior-preservation half weighed apart;
samples come from the pipeline itself; evaluations are a validation loss at fixed timesteps and noise on
held-out images (:class:`ValidationLoss`) and, given a local CLIP, a CLIP score of validation images.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from greendiff.train._base_pipeline import BasePipeline, TextCondition
from greendiff.train._diffusion import weighted_mse
from greendiff.train._objectives import FlowObjective, Objective, objective_for

logger = logging.getLogger(__name__)


class FinetuneModel(torch.nn.Module):
    """What a fine-tune trains: the pipeline's ``denoiser``, and its ``text_encoder`` when that has LoRA
    adapters (None otherwise). Checkpoints hold the trainable weights alone."""

    def __init__(self, denoiser: torch.nn.Module, text_encoder: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.text_encoder = text_encoder


def objective_of(base: BasePipeline, optim) -> Objective:
    """The base model's objective (epsilon, v or flow), flow at the recipe's logit-normal times shifted as the
    base pipeline's scheduler says (its ``shift``; SD3: 3)."""
    if base.objective == "flow":
        shift = float(base.pipe.scheduler.config.get("shift", 1.0) or 1.0)
        return FlowObjective(optim.flow_logit_mean, optim.flow_logit_std, optim.num_train_timesteps, shift=shift)
    return objective_for(base.objective)


def prior_split_loss(per_sample: torch.Tensor, prior_from: int | None, prior_weight: float) -> torch.Tensor:
    """The loss of a batch from its per-sample losses (B,): their mean, or with prior preservation (the class
    images from ``prior_from`` on) the instance half's mean plus ``prior_weight`` times the class half's.

    Example:
        >>> float(prior_split_loss(torch.tensor([1.0, 3.0, 10.0, 20.0]), 2, 0.5))
        9.5
    """
    if prior_from is None:
        return per_sample.mean()
    return per_sample[:prior_from].mean() + prior_weight * per_sample[prior_from:].mean()


class TextToImageFamily:
    """The trainer's family for ``greendiff finetune``.

    Args:
        base: The loaded pipeline (its denoiser becomes the trained network).
        config: The resolved :class:`~greendiff.train.TrainConfig` (``finetune`` section).
        space: The pipeline VAE's :class:`~greendiff.train.LatentSpace`.
        held_out: Images (with captions) kept out of training for the validation loss, or None.
        text_cache_root: Where text tables are cached (None: not stored on disk).
        clip: A :class:`greendiff.evaluate.ClipScorer` for the validation images, or None.
    """

    name = "finetune"
    num_classes = 0

    def __init__(self, base: BasePipeline, config, space, held_out=None, text_cache_root: Path | None = None,
                 clip=None) -> None:
        self.base, self.config, self.settings, self.space = base, config, config.finetune, space
        self.held_out, self.text_cache_root, self.clip = held_out, text_cache_root, clip
        self.prompts = tuple(self.settings.validation_prompts)
        self.guidance_scale = config.optim.guidance_scale
        self.sampling_forwards = 1 if self.guidance_scale <= 1.0 else 2
        self.table = None  # the text table (prepare)
        self.tracker, self.device = None, torch.device("cpu")
        self.net: FinetuneModel | None = None

    # -- the network ---------------------------------------------------------------------------------------------

    def build(self, config, channels: int) -> FinetuneModel:
        """The pipeline's denoiser made trainable: LoRA adapters (its base weights frozen) or every weight
        (``--full``); with gradient checkpointing if asked. Adapters are initialised from the torch seed."""
        from greendiff.train._lora import DENOISER_TARGETS, TEXT_TARGETS, LoraSettings, add_lora

        ft, denoiser = self.settings, self.base.denoiser
        text_encoder = None
        if ft.method == "lora":
            add_lora(denoiser, LoraSettings(ft.lora_rank, ft.alpha, ft.lora_dropout, ft.lora_targets or DENOISER_TARGETS))
            if ft.text_encoder_lora:
                text_encoder = self.base.text_encoder
                add_lora(text_encoder, LoraSettings(ft.lora_rank, ft.alpha, ft.lora_dropout, TEXT_TARGETS))
        else:
            denoiser.requires_grad_(True)
        if ft.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        denoiser.train()
        self.net = FinetuneModel(denoiser, text_encoder)
        return self.net

    def size(self, net: FinetuneModel, config, channels: int) -> tuple[int, int]:
        """``(trainable parameters, MACs per image of one denoiser forward)`` (counted by torch's flop counter
        on one latent; the VAE and text encoders not included)."""
        from torch.utils.flop_counter import FlopCounterMode

        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        res = config.data.resolution
        c, h, w = self.space.model_shape((channels, res, res))
        cond = self.base.encode([""])
        x = torch.zeros(1, c, h, w)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            self.base.predict(net.denoiser, x, torch.tensor([1]), cond)
        return trainable, counter.get_total_flops() // 2

    def describe(self, config, channels: int) -> str:
        ft, layout = self.settings, self.base.layout
        res = config.data.resolution
        c, side, _ = self.space.model_shape((channels, res, res))
        how = f"LoRA rank {ft.lora_rank}" if ft.method == "lora" else "full fine-tune"
        return (f"{how} of {layout.folder.name}'s {layout.denoiser_class} on {c}x{side}x{side} latents, "
                f"{self.base.objective}")

    def noise_scheduler(self, optim):
        return self.base.training_scheduler()

    def sampler(self, optim, noise_scheduler):
        return self.base.pipe.scheduler

    def evaluator(self, trainer):
        """A :class:`ValidationLoss` writing validation images into the run's ``samples`` folder."""
        return ValidationLoss(self, trainer)

    # -- text ----------------------------------------------------------------------------------------------------

    def prepare(self, trainer) -> None:
        """Before the first step: the text table of every caption the run will see (training, held-out and
        validation prompts), read from the cache or encoded now in a metered ``encode`` window; none when the
        text encoder trains (its embeddings change every step) or the text cache is off."""
        self.tracker, self.device = trainer.tracker, trainer.state.device
        for encoder, _ in self.base.layout.text_encoders:  # they encode on the training device
            getattr(self.base.pipe, encoder).to(self.device)
        if self.settings.text_encoder_lora or not self.settings.text_cache:
            return
        captions = list(trainer.data.captions or ())
        if self.held_out is not None:
            captions += list(self.held_out.captions or ())
        captions += [*self.prompts, ""]
        self.table = self._table(captions, trainer)

    def _table(self, captions: list[str], trainer):
        from greendiff.train._text_cache import TextEmbeddingCache, TextTable, text_cache_key

        cache = TextEmbeddingCache(self.text_cache_root) if self.text_cache_root is not None else None
        key = text_cache_key(self.base.text_weights_sha256(), captions)
        table = cache.lookup(key) if cache is not None else None
        if table is not None:
            return table
        with trainer.tracker.window("encode"):
            table = TextTable.encode(lambda chunk: self.base.encode(chunk, self.device).to("cpu"), captions,
                                     report=lambda done, total: trainer.report_progress(
                                         "encode", done, total, "encoding the captions, once"))
        if cache is not None and trainer.is_main:
            cache.store(key, table)
        return table

    def condition(self, captions: Sequence[str], device) -> TextCondition:
        """The embeddings of ``captions``: from the table, or encoded now (metered as ``encode``)."""
        if self.table is not None:
            return self.table.lookup(captions).to(device)
        window = self.tracker.window("encode") if self.tracker is not None else contextlib.nullcontext()
        with window:
            return self.base.encode(captions, device)

    def loss_inputs(self, batch, device) -> dict:
        """The batch's text conditioning (or, when the text encoder trains, its captions: encoded inside the
        loss) and where its class half starts (prior preservation)."""
        captions = list(batch.captions or ())
        if len(captions) != batch_size_of(batch):
            raise ValueError("a fine-tune trains on captioned batches; this batch has no captions")
        prior_from = len(captions) // 2 if self.settings.num_class_images else None
        if self.settings.text_encoder_lora:
            return {"captions": captions, "prior_from": prior_from}
        return {"cond": self.condition(captions, device), "prior_from": prior_from}

    # -- the loss ------------------------------------------------------------------------------------------------

    def loss(self, net, noise_scheduler, x0: torch.Tensor, generator: torch.Generator, optim,
             cond: TextCondition | None = None, captions: Sequence[str] | None = None,
             prior_from: int | None = None) -> torch.Tensor:
        """The base model's denoising loss of latents ``x0`` (Min-SNR-γ weighted as the recipe says), the class
        half weighed by ``finetune.prior_loss_weight``."""
        model = net.module if hasattr(net, "module") else net
        if cond is None:
            cond = self.base.encode(list(captions), x0.device, grad=True)
        objective = objective_of(self.base, optim)
        draw = objective.draw(x0, noise_scheduler, generator)
        prediction = self.base.predict(model.denoiser, draw.noisy, draw.timesteps, cond)
        gamma = None if optim.loss_weighting == "uniform" else optim.snr_gamma
        weights = objective.weights(draw.timesteps, noise_scheduler, gamma).to(x0.device)
        per_sample = (prediction.float() - draw.target.float()).pow(2).mean(dim=tuple(range(1, x0.ndim))) * weights
        return prior_split_loss(per_sample, prior_from, self.settings.prior_loss_weight)

    # -- sampling and export -------------------------------------------------------------------------------------

    def sample(self, net, sampler, n: int, steps: int, shape, generator: torch.Generator, device="cpu", labels=None,
               guidance_scale: float | None = None, on_step: Callable[[float], None] | None = None) -> torch.Tensor:
        """``n`` images of the validation prompts (cycled), by the pipeline with the trained weights."""
        prompts = [self.prompts[k % len(self.prompts)] for k in range(n)]
        w = self.guidance_scale if guidance_scale is None else guidance_scale
        return self.base.generate(prompts, steps, w, shape[-1], generator, device, on_step)

    def preview(self, net, sampler, num_samples: int, steps: int, shape, generator, device="cpu"):
        """A grid of the validation prompts, one column each, ``num_samples`` rounded to whole rows."""
        per_prompt = max(1, num_samples // len(self.prompts))
        n = per_prompt * len(self.prompts)
        images = self.sample(net, sampler, n, steps, shape, generator, device)
        return images, len(self.prompts)

    def export(self, net, ema, noise_scheduler, path: Path, class_names=None) -> None:
        """LoRA: ``lora/pytorch_lora_weights.safetensors`` beside ``path`` (plain diffusers loads it with
        ``pipe.load_lora_weights``), and with ``finetune.merge`` the merged pipeline at ``path``; full: the
        fine-tuned pipeline at ``path``. With EMA, its weights are the ones written."""
        from greendiff.train._lora import merge_lora, save_lora

        model = net.module if hasattr(net, "module") else net
        if ema is not None:
            ema.copy_to([p for p in model.parameters() if p.requires_grad])
        if self.settings.method == "lora":
            staging = path.parent / ".lora-export"  # a resumed run's export replaces the earlier segment's
            if staging.exists():
                shutil.rmtree(staging)
            save_lora(self.base.layout.pipeline_class, staging, model.denoiser, model.text_encoder)
            replace_folder(staging, path.parent / "lora")
            if not self.settings.merge:
                return
            setattr(self.base.pipe, self.base.layout.denoiser, merge_lora(model.denoiser))
            if model.text_encoder is not None:
                setattr(self.base.pipe, self.base.layout.text_encoders[0][0], merge_lora(model.text_encoder))
        save_pipeline(self.base.pipe, path)


def batch_size_of(batch) -> int:
    """Images in a batch of images or of latents."""
    return int(batch.images.shape[0]) if hasattr(batch, "images") else int(batch.mean.shape[0])


def replace_folder(new: Path, path: Path) -> None:
    """``new`` (a complete folder) put at ``path`` in place of what is there (an earlier segment's export)."""
    if path.exists():
        shutil.rmtree(path)
    os.replace(new, path)


def save_pipeline(pipe, path: Path) -> None:
    """``pipe.save_pretrained`` (safetensors) into ``path``, atomically: written beside it, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ValidationLoss:
    """The fine-tune's evaluator: the validation loss of held-out images at fixed timesteps and noise, and
    validation images of the fixed prompts (with a CLIP score when a CLIP model is given).

    The loss is the unweighted mean squared error of the base objective's target over every held-out image at
    ``finetune.validation_timesteps`` timesteps spread evenly over the schedule, with noise drawn once from the
    run's seed: the same inputs at every evaluation, so two evaluations differ only by the weights (no
    sampling noise; the modern fine-tune metric, e.g. SD3's training reports). The held-out latents are the
    posterior means (no VAE noise).

    Args:
        family: The :class:`TextToImageFamily` (its network, pipeline and held-out images).
        trainer: The trainer (its step, run directory, tracker, process group, config).
    """

    def __init__(self, family: TextToImageFamily, trainer) -> None:
        self.family, self.trainer = family, trainer
        self.inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, TextCondition | None] | None = None
        self.captions: list[str] = []
        self.last_images: torch.Tensor | None = None

    def prepare(self, images=None) -> None:
        """Encode the held-out images and captions and draw the fixed noise (main process; the caller meters it)."""
        family = self.family
        held = family.held_out
        if held is None or held.num_images == 0:
            return
        k, n = family.settings.validation_timesteps, held.num_images
        from greendiff.train._images import unit_images

        mean = torch.cat([family.space.encode(unit_images(held.images[i:i + 64]))[0] for i in range(0, n, 64)])
        shape = family.space.shape
        z = shape.scaling_factor * (mean - shape.shift_factor)
        objective = objective_of(family.base, self.trainer.config.optim)
        timesteps = objective.fixed_timesteps(k, self.trainer.state.noise_scheduler)
        generator = torch.Generator().manual_seed(self.trainer.config.run.seed + 424_242)
        noise = torch.randn((n * k, *z.shape[1:]), generator=generator)
        self.captions = [c for c in held.captions for _ in range(k)]
        cond = None if family.settings.text_encoder_lora else family.base.encode(self.captions, family.device).to("cpu")
        self.inputs = (z.repeat_interleave(k, 0), timesteps.repeat(n), noise, cond)

    @torch.no_grad()
    def validation_loss(self, batch_size: int = 32) -> float:
        """The mean squared error over the fixed (image, timestep, noise) triples, in fp32."""
        z, timesteps, noise, cond = self.inputs
        family, state = self.family, self.trainer.state
        if cond is None:  # the text encoder trains: its embeddings of the held-out captions as they are now
            cond = family.base.encode(self.captions, state.device).to("cpu")
        objective = objective_of(family.base, self.trainer.config.optim)
        device, total = state.device, 0.0
        for start in range(0, z.shape[0], batch_size):
            part = slice(start, start + batch_size)
            draw = objective.at(z[part].to(device), noise[part].to(device), timesteps[part].to(device),
                                state.noise_scheduler)
            with state.accelerator.autocast():
                prediction = family.base.predict(family.net.denoiser, draw.noisy, draw.timesteps,
                                                 cond.take(torch.arange(start, min(start + batch_size, z.shape[0]))).to(device))
            total += float(weighted_mse(prediction, draw.target, torch.ones(prediction.shape[0])) * prediction.shape[0])
        return total / z.shape[0]

    def evaluate(self, draw: Callable, seeds: int = 1) -> dict:
        """``val_loss`` (with held-out images), ``clip_score`` (with a CLIP model); the validation images of
        the prompts are saved as ``samples/validation-step-N.png``. The same on every process."""
        from greendiff.train._images import save_grid

        dist, scores = self.trainer.dist, {}
        if dist.is_main:
            if self.inputs is not None:
                scores["val_loss"] = self.validation_loss()
            images = draw(len(self.family.prompts), self.trainer.config.run.seed + 54_321, None)
            self.last_images = images
            save_grid(images, self.trainer.run_dir / "samples" / f"validation-step-{self.trainer.step}.png",
                      columns=len(self.family.prompts))
            if self.family.clip is not None:
                scores["clip_score"] = self.family.clip.score(images, list(self.family.prompts))
            if not math.isfinite(scores.get("val_loss", 0.0)):
                logger.warning("the validation loss is not finite at step %d", self.trainer.step)
        return dist.broadcast(scores if dist.is_main else None)
