"""The model family seam: everything the trainer asks of the kind of model it trains.

The trainer builds the network, takes the loss's inputs from a batch, draws its default loss, samples
preview and evaluation batches and exports the pipeline through one object, so it never asks what kind of
model it trains (diffusers keeps the per-model logic in its pipelines the same way). :class:`UNetFamily` is
an unconditional network; :class:`ClassConditionalFamily` the same with a class embedding and
classifier-free guidance (Ho & Salimans 2022). Each builds the config's backbone (diffusers' ``UNet2DModel``,
or ``DiTTransformer2DModel`` for ``model.backbone = dit``) in its space (:mod:`greendiff.train._space`: pixels,
or a VAE's latents, decoded when sampling), trained with the recipe's objective (epsilon, v or flow).
:func:`family_for` picks one from the config, once, before the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from greendiff.data import Batch
from greendiff.pipelines import check_guidance_scale
from greendiff.train._artifacts import export_class_pipeline, export_pipeline
from greendiff.train._config import RecipeConfig, TrainConfig
from greendiff.train._diffusion import diffusion_loss, make_noise_scheduler, make_sampler
from greendiff.train._latent_artifacts import export_latent_pipeline
from greendiff.train._model import build_unet, check_num_classes, count_macs, count_parameters
from greendiff.train._space import PixelSpace, sample_decoded, space_for


class UNetFamily:
    """An unconditional ``UNet2DModel`` trained with :func:`diffusion_loss`, exported as a ``DDPMPipeline`` (in
    pixel space) or greendiff's ``LatentPipeline`` (in a VAE's latent space).

    ``labels`` (class conditioning) and ``guidance_scale`` are accepted so a conditional family has the same
    calls; this family takes only ``labels=None`` and ``guidance_scale`` 1.0 (or None: its own, 1.0).
    Shapes given to it are the images' (C, H, W); ``space`` maps them to the model's.

    Args:
        space: A :class:`~greendiff.train._space.PixelSpace` (default) or ``LatentSpace``.

    Example:
        >>> from greendiff.train import resolve_config
        >>> config = resolve_config(overrides={"model.preset": "nano", "model.block_out_channels": "8,16",
        ...                                    "data.resolution": 8})
        >>> net = UNetFamily().build(config, channels=1)
        >>> UNetFamily().size(net, config, channels=1)[0] > 0
        True
    """

    name = "unet"
    #: K, the classes the model is conditioned on (0: unconditional).
    num_classes = 0
    #: UNet forwards per sampler step (classifier-free guidance other than 0 or 1 runs two).
    sampling_forwards = 1

    def __init__(self, space=None) -> None:
        self.space = space if space is not None else PixelSpace()

    def build(self, config: TrainConfig, channels: int) -> torch.nn.Module:
        """The network, initialised from the current torch seed (or ``model.init_from``), on the model's
        shape (:attr:`space`'s for ``channels`` x resolution images)."""
        res = config.data.resolution
        c, side, _ = self.space.model_shape((channels, res, res))
        if config.model.backbone == "dit":
            from greendiff.train._dit import build_dit

            return build_dit(config.model.preset, config.model.patch_size, side, c, self.num_classes)
        return build_unet(config.model, side, c, config.optim.num_train_timesteps, self.num_classes)

    def size(self, net: torch.nn.Module, config: TrainConfig, channels: int) -> tuple[int, int]:
        """``(parameters, MACs per image of one forward)`` (the VAE's decoding not included)."""
        res = config.data.resolution
        c, side, _ = self.space.model_shape((channels, res, res))
        return count_parameters(net), count_macs(net, side, c)

    def describe(self, config: TrainConfig, channels: int) -> str:
        """One line naming the network, where it works and its objective, e.g. ``DiT nano (patch 2) on 4x8x8
        latents, flow``."""
        res = config.data.resolution
        c, side, _ = self.space.model_shape((channels, res, res))
        dit = config.model.backbone == "dit"
        net = f"DiT {config.model.preset} (patch {config.model.patch_size})" if dit else f"UNet {config.model.preset}"
        where = f" on {c}x{side}x{side} latents" if self.space.latent else ""
        return f"{net}{where}, {config.optim.objective}"

    def evaluator(self, trainer):
        """The trainer's default evaluator: a :class:`~greendiff.train.QualityEvaluator` of ``stop``'s samples
        and features (with this family's classes, named as the trainer's data names them)."""
        from greendiff.train._evaluation import QualityEvaluator

        stop = trainer.config.stop
        return QualityEvaluator(stop.eval_samples, stop.eval_features, trainer.config.run.seed, trainer.dist,
                                self.num_classes, trainer.class_names)

    def prepare(self, trainer) -> None:
        """What the family computes once before the first step (nothing here; a fine-tune encodes its captions)."""

    def noise_scheduler(self, optim: RecipeConfig):
        """The training noise schedule (:func:`~greendiff.train.make_noise_scheduler`: DDPM's for epsilon and v,
        clipping its clean-sample estimate in pixel space only; flow matching's Euler scheduler)."""
        return make_noise_scheduler(optim, clip_sample=not self.space.latent)

    def sampler(self, optim: RecipeConfig, noise_scheduler):
        """The preview and evaluation sampler (DDPM or DDIM on the same betas)."""
        return make_sampler(optim, noise_scheduler)

    def loss_inputs(self, batch: Batch, device: torch.device | str) -> dict:
        """What the loss takes from ``batch`` besides its images, as keyword arguments: nothing here (a
        labelled dataset trains an unconditional model on its images alone)."""
        return {}

    def loss(self, net, noise_scheduler, x0: torch.Tensor, generator: torch.Generator, optim: RecipeConfig,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """The default objective: the weighted denoising loss of ``x0`` (B, C, H, W) in [-1, 1]."""
        _unconditional(labels)
        return diffusion_loss(net, noise_scheduler, x0, generator, optim)

    def sample(self, net, sampler, n: int, steps: int, shape: tuple[int, int, int], generator: torch.Generator,
               device: torch.device | str = "cpu", labels: Sequence[int] | torch.Tensor | None = None,
               guidance_scale: float | None = None, on_step: Callable[[float], None] | None = None) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [-1, 1] in ``steps`` sampler steps, seeded by ``generator``; ``on_step``:
        the images done so far after every sampler step (:func:`~greendiff.train.sample_images`)."""
        _unconditional(labels, 1.0 if guidance_scale is None else guidance_scale)
        return self._sample(net, sampler, n, steps, shape, generator, device, on_step=on_step)

    def _sample(self, net, sampler, n: int, steps: int, shape: tuple[int, int, int], generator: torch.Generator,
                device, **kwargs) -> torch.Tensor:
        """Images of ``shape`` sampled in the model's space and decoded (:attr:`space`)."""
        return sample_decoded(self.space, net, sampler, n, steps, self.space.model_shape(shape), generator, device,
                              **kwargs)

    def preview(self, net, sampler, num_samples: int, steps: int, shape: tuple[int, int, int],
                generator: torch.Generator, device: torch.device | str = "cpu") -> tuple[torch.Tensor, int | None]:
        """The preview grid's images and its number of columns (None: as square as it gets)."""
        return self.sample(net, sampler, num_samples, steps, shape, generator, device), None

    def export(self, net, ema, noise_scheduler, path: Path, class_names: Sequence[str] | None = None) -> None:
        """The pipeline with the EMA weights: :func:`~greendiff.train.export_pipeline` (a ``DDPMPipeline``;
        ``class_names`` are a conditional family's, unused here), or in latent space
        :func:`~greendiff.train._latent_artifacts.export_latent_pipeline`."""
        if self.space.latent:
            export_latent_pipeline(net, ema, noise_scheduler, self.space.vae, path, class_names)
        else:
            export_pipeline(net, ema, noise_scheduler, path)


def _unconditional(labels, guidance_scale: float = 1.0) -> None:
    if labels is not None or guidance_scale != 1.0:
        raise ValueError("UNetFamily is unconditional: labels must be None and guidance_scale 1.0")


class ClassConditionalFamily(UNetFamily):
    """The UNet with a learned class embedding of ``num_classes`` classes plus the null class K: trained with
    label dropout to K (``optim.cond_dropout``), sampled with classifier-free guidance at ``guidance_scale``,
    exported as a :class:`~greendiff.pipelines.ClassConditionalPipeline`.

    Args:
        num_classes: K > 0, the classes of the data (ids 0..K-1).
        guidance_scale: w of the previews and evaluations (``optim.guidance_scale``): 1 the conditional
            model alone, 0 the unconditional one, otherwise two UNet forwards per sampler step.

    Example:
        >>> family = ClassConditionalFamily(10, guidance_scale=2.0)
        >>> family.sampling_forwards, family.preview_labels(25)[:6]
        (2, [0, 0, 1, 1, 2, 2])
    """

    name = "unet-class"

    def __init__(self, num_classes: int, guidance_scale: float = 1.0, space=None) -> None:
        super().__init__(space)
        check_num_classes(num_classes)
        if num_classes < 1:
            raise ValueError("a class-conditional family needs at least one class")
        self.num_classes, self.guidance_scale = num_classes, check_guidance_scale(guidance_scale)
        self.sampling_forwards = 1 if self.guidance_scale in (0.0, 1.0) else 2

    def loss_inputs(self, batch: Batch, device: torch.device | str) -> dict:
        """The batch's class ids (B,) on ``device``."""
        if batch.labels is None:
            raise ValueError("a class-conditional family trains on labelled batches; this batch has no labels")
        return {"labels": batch.labels.to(device)}

    def loss(self, net, noise_scheduler, x0: torch.Tensor, generator: torch.Generator, optim: RecipeConfig,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """The denoising loss of ``x0`` conditioned on ``labels`` (B,), each dropped to the null class K with
        probability ``optim.cond_dropout``."""
        if labels is None:
            raise ValueError("a class-conditional family's loss needs the batch's labels")
        return diffusion_loss(net, noise_scheduler, x0, generator, optim, labels=labels,
                              cond_dropout=optim.cond_dropout, null_class=self.num_classes)

    def sample(self, net, sampler, n: int, steps: int, shape: tuple[int, int, int], generator: torch.Generator,
               device: torch.device | str = "cpu", labels: Sequence[int] | torch.Tensor | None = None,
               guidance_scale: float | None = None, on_step: Callable[[float], None] | None = None) -> torch.Tensor:
        """``n`` images of the classes ``labels`` (one per image; default: balanced over the classes), guided
        at ``guidance_scale`` (default: the family's); ``on_step`` as :meth:`UNetFamily.sample`'s."""
        from greendiff.evaluate import balanced_labels

        w = self.guidance_scale if guidance_scale is None else guidance_scale
        labels = balanced_labels(n, self.num_classes) if labels is None else labels
        return self._sample(net, sampler, n, steps, shape, generator, device, labels=labels, guidance_scale=w,
                            on_step=on_step)

    def preview_labels(self, num_samples: int) -> list[int]:
        """One row per class: K rows of ``max(1, num_samples // K)`` images, ids row-major."""
        columns = max(1, num_samples // self.num_classes)
        return [k for k in range(self.num_classes) for _ in range(columns)]

    def preview(self, net, sampler, num_samples: int, steps: int, shape: tuple[int, int, int],
                generator: torch.Generator, device: torch.device | str = "cpu") -> tuple[torch.Tensor, int | None]:
        """A grid of one row per class (:meth:`preview_labels`) and its number of columns."""
        labels = self.preview_labels(num_samples)
        images = self.sample(net, sampler, len(labels), steps, shape, generator, device, labels=labels)
        return images, len(labels) // self.num_classes

    def export(self, net, ema, noise_scheduler, path: Path, class_names: Sequence[str] | None = None) -> None:
        """:func:`~greendiff.train.export_class_pipeline` with the EMA weights and the name of each class id
        0..K-1 (``class_names``, the data's; None: ids only); in latent space
        :func:`~greendiff.train._latent_artifacts.export_latent_pipeline` (a DiT trained with epsilon or v: a plain
        ``DiTPipeline``)."""
        if self.space.latent:
            export_latent_pipeline(net, ema, noise_scheduler, self.space.vae, path, class_names)
        else:
            export_class_pipeline(net, ema, noise_scheduler, path, class_names)


def family_for(config: TrainConfig, space=None) -> UNetFamily:
    """The family ``config`` trains: class-conditional on ``model.num_classes`` classes at
    ``optim.guidance_scale`` when ``model.conditioning`` is ``class``, else unconditional; in ``space``
    (default: the config's, :func:`~greendiff.train._space.space_for`, which loads ``model.vae``)."""
    space = space if space is not None else space_for(config)
    if config.model.conditioning == "class":
        return ClassConditionalFamily(config.model.num_classes, config.optim.guidance_scale, space)
    return UNetFamily(space)
