"""Latent DiTs: presets sized like the UNet presets, built on diffusers' ``DiTTransformer2DModel``, and their
export as a plain diffusers ``DiTPipeline``.

DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", arXiv:2212.09748) cuts the latent
into ``patch_size`` x ``patch_size`` patches (tokens), runs transformer blocks conditioned by adaLN-Zero on
the timestep and the class, and unpatchifies. Class ids are 0..K-1 and the null class (classifier-free
guidance) is K, the last row of diffusers' label table.

Each preset has about the parameters of the UNet preset of the same name (:data:`greendiff.train._model.PRESETS`)
at 4 latent channels and 10 classes (within 10 %); MACs per image on 8x8x4 latents with patch 2 (16 tokens),
measured with PyTorch's FLOP counter (:func:`~greendiff.train.count_macs`, attention included; the UNet's measured the same way):

    ======  ======  =====  =====  ==========  ===========  ===========  ===========  ====
    preset  layers  heads  width  DiT params  UNet params  DiT MACs     UNet MACs    lr
    ======  ======  =====  =====  ==========  ===========  ===========  ===========  ====
    pico         4      2     16      38,720       41,276      265,984      972,288  1e-3
    nano         6      2     32     174,448      161,268    1,397,760    3,815,424  1e-3
    tiny        12      4     64   1,162,448    1,115,940   10,432,512   15,622,144  5e-4
    small        9      6    192   6,874,960    6,476,164   67,608,576   90,595,328  3e-4
    base        14      8    512  72,308,240   72,740,868  737,017,856  405,805,056  1e-4
    ======  ======  =====  =====  ==========  ===========  ===========  ===========  ====

A DiT's MACs grow with the tokens, (latent side / patch)², at a fixed parameter count; a UNet's with the
pixels. The learning rates follow DiT's 1e-4 (AdamW, constant) for the largest and grow for narrower
networks as the UNet presets' do; they are not tuned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from greendiff.errors import UserInputError
from greendiff.pipelines import check_class_names, latent_scheduler, num_classes_of, unwrapped
from greendiff.train._model import check_num_classes


@dataclass(frozen=True)
class DitPreset:
    """A DiT architecture (``num_layers`` blocks of ``num_attention_heads`` x ``attention_head_dim`` wide
    attention) and its peak learning rate ``lr``."""

    num_layers: int
    num_attention_heads: int
    attention_head_dim: int
    lr: float = 1e-4

    @property
    def width(self) -> int:
        """The transformer's hidden size: heads x head dim."""
        return self.num_attention_heads * self.attention_head_dim


DIT_PRESETS: dict[str, DitPreset] = {
    "pico": DitPreset(4, 2, 8, lr=1e-3),
    "nano": DitPreset(6, 2, 16, lr=1e-3),
    "tiny": DitPreset(12, 4, 16, lr=5e-4),
    "small": DitPreset(9, 6, 32, lr=3e-4),
    "base": DitPreset(14, 8, 64, lr=1e-4),
}

#: The null class diffusers' ``DiTPipeline`` hard-codes (ImageNet's 1000 classes): a DiT exported as one
#: has exactly this many classes.
DIT_PIPELINE_CLASSES = 1000


def dit_preset(name: str) -> DitPreset:
    """The preset called ``name``; one-line :class:`UserInputError` for an unknown one."""
    if name not in DIT_PRESETS:
        raise UserInputError(f"unknown model preset {name!r}; use one of {', '.join(DIT_PRESETS)}")
    return DIT_PRESETS[name]


def check_patch_size(patch_size: int, latent_size: int, resolution: int | None = None,
                     downsample: int | None = None) -> None:
    """One-line :class:`UserInputError` unless ``patch_size`` is a positive integer dividing ``latent_size``
    (the latent side). ``resolution`` and ``downsample`` (the VAE's), when given, say where the side comes from.

    Example:
        >>> check_patch_size(2, 8)
        >>> check_patch_size(3, 8, resolution=32, downsample=4)
        Traceback (most recent call last):
        ...
        greendiff.errors.UserInputError: model.patch_size 3 does not divide the latent side 8 (data.resolution 32 / the VAE's downsampling 4): pick a divisor of 8 (1, 2, 4, 8)
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise UserInputError(f"model.patch_size must be a positive integer, got {patch_size!r}")
    if latent_size % patch_size:
        source = (f" (data.resolution {resolution} / the VAE's downsampling {downsample})"
                  if resolution is not None and downsample is not None else "")
        divisors = ", ".join(str(d) for d in range(1, latent_size + 1) if latent_size % d == 0)
        raise UserInputError(f"model.patch_size {patch_size} does not divide the latent side {latent_size}{source}: "
                             f"pick a divisor of {latent_size} ({divisors})")


def build_dit(preset: str, patch_size: int, latent_size: int, in_channels: int, num_classes: int):
    """A class-conditional ``DiTTransformer2DModel`` of preset ``preset`` on ``latent_size``² latents of
    ``in_channels`` channels, predicting as many (no learned variance).

    Args:
        num_classes: K >= 1: class ids 0..K-1, the null class K (diffusers' label table has K + 1 rows).

    The module's own random label dropout (diffusers drops 10 % of labels to the null class in training
    mode, from the global RNG) is switched off (:func:`disable_label_dropout`): greendiff drops labels
    itself, from the step's generator, so training stays reproducible. The saved config is a plain DiT's.
    """
    from diffusers import DiTTransformer2DModel

    arch = dit_preset(preset)
    check_patch_size(patch_size, latent_size)
    check_num_classes(num_classes)
    if num_classes < 1:
        raise UserInputError("model.backbone dit is class-conditional: it needs a dataset with class labels "
                             "(model.num_classes >= 1); use model.backbone unet for an unconditional model")
    net = DiTTransformer2DModel(
        num_attention_heads=arch.num_attention_heads, attention_head_dim=arch.attention_head_dim,
        in_channels=in_channels, out_channels=in_channels, num_layers=arch.num_layers,
        sample_size=latent_size, patch_size=patch_size, num_embeds_ada_norm=num_classes,
    )
    return disable_label_dropout(net)


def disable_label_dropout(transformer):
    """``transformer`` (a DiT) with the random label dropout of each of its label embeddings switched off, the
    null row kept (a DiT loaded with ``from_pretrained`` has it on again: call this before training it).
    Returns the same module."""
    from diffusers.models.embeddings import LabelEmbedding

    for module in transformer.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0
    return transformer


def check_dit_pipeline_classes(num_classes: int) -> None:
    """One-line :class:`UserInputError` unless a DiT of ``num_classes`` classes fits a ``DiTPipeline`` (at most
    :data:`DIT_PIPELINE_CLASSES`, whose id is its null class)."""
    if num_classes > DIT_PIPELINE_CLASSES:
        raise UserInputError(f"a DiT with {num_classes:,} classes cannot be saved as a diffusers DiTPipeline "
                             f"(it takes at most {DIT_PIPELINE_CLASSES:,}, the null class being id "
                             f"{DIT_PIPELINE_CLASSES}); export greendiff's LatentPipeline instead")


def export_dit_pipeline(transformer, vae, scheduler, path: Path, class_names: Sequence[str] | None = None) -> None:
    """Save ``transformer`` (a DiT of K classes, null class K), ``vae`` and ``scheduler`` as a plain diffusers
    ``DiTPipeline`` in ``path``, atomically (:func:`greendiff.train._artifacts.save_pipeline_atomically`).

    ``DiTPipeline`` hard-codes the null class 1000, so the DiT is saved widened to 1000 classes: rows 0..K-1
    of each label table are the classes, row 1000 the null class, and rows K..999 (ids the model never saw)
    copies of the null row. :func:`compact_dit` undoes it. The scheduler is saved without ``clip_sample``
    (:func:`greendiff.pipelines.latent_scheduler`: ``DiTPipeline`` clips latents otherwise).

    Args:
        class_names: The name of each class id 0..K-1, saved as ``id2label`` (``pipe.labels`` maps them back
            to ids; diffusers splits a name at commas into synonyms); None: no names.

    Raises:
        UserInputError: more than 1000 classes (:func:`check_dit_pipeline_classes`), or names that do not fit.
        ValueError: a scheduler ``DiTPipeline`` cannot step (no ``scale_model_input``: flow matching), or a
            network that is not a class-conditional DiT.
    """
    from diffusers import DiTPipeline

    from greendiff.train._artifacts import save_pipeline_atomically

    transformer = unwrapped(transformer)
    num_classes = _dit_classes(transformer)
    check_dit_pipeline_classes(num_classes)
    names = check_class_names(class_names, num_classes)
    if not hasattr(scheduler, "scale_model_input"):
        raise ValueError(f"DiTPipeline cannot step a {type(scheduler).__name__}; export a LatentPipeline instead")
    rows = [*range(num_classes), *[num_classes] * (DIT_PIPELINE_CLASSES + 1 - num_classes)]
    wide = _with_label_rows(transformer, DIT_PIPELINE_CLASSES, rows)
    id2label = {str(i): name for i, name in enumerate(names)} if names is not None else None
    pipe = DiTPipeline(transformer=wide, vae=vae, scheduler=latent_scheduler(scheduler), id2label=id2label)
    if id2label is not None:
        pipe.register_to_config(id2label=id2label)  # DiTPipeline does not record it itself
    save_pipeline_atomically(pipe, path)


def compact_dit(transformer, num_classes: int):
    """The DiT of ``num_classes`` (K) classes that :func:`export_dit_pipeline` widened: a copy with label rows
    0..K-1 and the null row 1000 as row K (``num_embeds_ada_norm`` = K), label dropout off; its outputs for
    classes 0..K-1 and the null class K equal the widened model's for 0..K-1 and 1000. A DiT that already has
    K classes is returned as it is.
    """
    transformer = unwrapped(transformer)
    have = _dit_classes(transformer)
    if have == num_classes:
        return transformer
    if have != DIT_PIPELINE_CLASSES or not 1 <= num_classes < DIT_PIPELINE_CLASSES:
        raise ValueError(f"compact_dit takes a DiT of {DIT_PIPELINE_CLASSES} classes to 1..{DIT_PIPELINE_CLASSES - 1}, "
                         f"got {have} -> {num_classes}")
    return _with_label_rows(transformer, num_classes, [*range(num_classes), DIT_PIPELINE_CLASSES])


def _dit_classes(transformer) -> int:
    from diffusers import DiTTransformer2DModel

    if not isinstance(transformer, DiTTransformer2DModel) or num_classes_of(transformer) < 1:
        raise ValueError(f"expected a class-conditional DiTTransformer2DModel, got {type(transformer).__name__}")
    return num_classes_of(transformer)


def _with_label_rows(transformer, num_classes: int, rows: list[int]):
    """A copy of ``transformer`` with ``num_classes`` classes whose label tables ((num_classes + 1, width),
    one per block) hold the source's rows ``rows``; every other weight copied; on the source's device and
    dtype, label dropout off."""
    from diffusers import DiTTransformer2DModel

    weight = next(transformer.parameters())
    # out_channels spelled out: DiTPipeline reads it (a DiT built without it predicts in_channels)
    target = DiTTransformer2DModel.from_config(transformer.config, num_embeds_ada_norm=num_classes,
                                               out_channels=transformer.out_channels)
    if weight.dtype != target.dtype:
        target = target.to(dtype=weight.dtype)
    index = torch.tensor(rows, device=weight.device)
    state = {key: value.index_select(0, index) if key.endswith("class_embedder.embedding_table.weight") else value
             for key, value in transformer.state_dict().items()}
    target.load_state_dict(state)
    return disable_label_dropout(target.to(weight.device).train(transformer.training))
