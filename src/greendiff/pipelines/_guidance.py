"""Classifier-free guidance: the formula, the checks of its inputs, and one guided prediction.

Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (arXiv:2207.12598): one network learns both
the conditional ε(x, t, c) and the unconditional ε(x, t, ∅) by training with the label replaced by a
*null class* ∅ some of the time; sampling mixes the two,

    ε̂ = ε(x, t, ∅) + w · (ε(x, t, c) − ε(x, t, ∅)),

with w = 1 the conditional model alone and w = 0 the unconditional one (the paper writes the same
mix as (1 + w')·ε_c − w'·ε_u, w' = w − 1). The null class is id K of a network with K classes
(a UNet's ``num_class_embeds = K + 1``, a DiT's ``num_embeds_ada_norm = K``). Depends on torch (and numpy)
only, so :mod:`greendiff.pipelines` imports alone.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from greendiff.errors import UserInputError


def num_classes_of(net) -> int:
    """K, the classes a network is conditioned on (0: unconditional), from its config.

    A ``UNet2DModel`` with diffusers' learned class embedding (``class_embed_type`` null) has ``num_class_embeds
    = K + 1`` rows, the last one the null class; a ``DiTTransformer2DModel`` has ``num_embeds_ada_norm = K``
    classes (its label table holds K + 1 rows, the null class K). A model wrapped for data parallelism
    (``.module``) or by ``torch.compile`` (``._orig_mod``) is looked through.
    """
    config = getattr(unwrapped(net), "config", None)
    dit_classes = getattr(config, "num_embeds_ada_norm", None)
    if dit_classes and getattr(config, "norm_type", None) == "ada_norm_zero":
        return int(dit_classes)
    rows = getattr(config, "num_class_embeds", None)
    if not rows or getattr(config, "class_embed_type", None) is not None:
        return 0
    return int(rows) - 1


def unwrapped(net):
    """``net`` without its wrappers: data parallelism's ``.module`` and ``torch.compile``'s ``._orig_mod``,
    however nested."""
    while True:
        inner = getattr(net, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(net, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return net
        net = inner


def check_guidance_scale(guidance_scale: float) -> float:
    """``guidance_scale`` as a float; one-line :class:`UserInputError` (a ``ValueError``) unless it is a
    finite number >= 0."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise UserInputError(f"guidance scale must be a number >= 0, got {guidance_scale!r}")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise UserInputError(f"guidance scale must be a finite number >= 0 (1: conditional only, 0: unconditional), "
                             f"got {guidance_scale}")
    return float(guidance_scale)


def check_class_labels(labels, num_classes: int) -> torch.Tensor:
    """``labels`` as a 1-d int64 tensor; one-line :class:`UserInputError` (a ``ValueError``) for a model
    without classes, no labels (None or an empty list), a label that is not an integer (a bool, a float, a
    string), more than one dimension, or an id outside 0..K-1 (the null class K is not a class to ask for).

    ``labels`` is one id or a sequence of them: Python or numpy integers, 0-d integer tensors, or a 1-d
    integer tensor or numpy array.

    Example:
        >>> import numpy as np
        >>> check_class_labels([np.int64(1), torch.tensor(2), 0], num_classes=3).tolist()
        [1, 2, 0]
    """
    if num_classes < 1:
        raise UserInputError("this model is unconditional (no class embedding); it takes no class labels")
    if labels is None:
        raise UserInputError("class_labels is None; give a class id in 0..K-1 or a list of them")
    ids = _label_tensor(labels)
    if ids.numel() == 0:
        raise UserInputError("no class labels given; ask for at least one class")
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.numel():
        raise UserInputError(f"class id {int(bad[0])} is outside 0..{num_classes - 1}, the classes this model was "
                             "trained on")
    return ids


def _label_tensor(labels) -> torch.Tensor:
    """``labels`` (one id, a sequence, a tensor or an array) as a 1-d int64 tensor; one line unless integral."""
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        kind = str(labels.dtype)
        if labels.ndim > 1:
            raise UserInputError(f"class labels must be one id or a 1-d list of them, got shape {tuple(labels.shape)}")
        if not _integral_dtype(labels.dtype):
            raise UserInputError(f"class labels must be integers, got a {kind} {type(labels).__name__}")
        return torch.as_tensor(labels).reshape(-1).long()
    items = [labels] if _is_id(labels) or isinstance(labels, (str, bytes, float)) else list(labels)
    if not all(_is_id(i) for i in items):
        raise UserInputError(f"class labels must be integers, got {str(items)[:60]}")
    return torch.tensor([int(i) for i in items], dtype=torch.long)


def _integral_dtype(dtype) -> bool:
    if isinstance(dtype, torch.dtype):
        return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    return np.issubdtype(dtype, np.integer)


def _is_id(value) -> bool:
    """An integral scalar that is not a bool: a Python or numpy integer, or a 0-d integer tensor or array."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 0 and _integral_dtype(value.dtype)
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def guided_noise(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """ε̂ = ε_uncond + w · (ε_cond − ε_uncond) (Ho & Salimans 2022), elementwise; any matching shapes.

    Example:
        >>> guided_noise(torch.tensor([2.0]), torch.tensor([1.0]), 3.0)
        tensor([4.])
    """
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def guided_scheduler(scheduler, guidance_scale: float):
    """``scheduler`` for sampling at ``guidance_scale``: a copy without ``clip_sample`` when guidance mixes two
    predictions (w not 0 or 1). Clipping the predicted clean image while the step keeps the guided noise
    (which grows with w) makes each DDIM/DDPM step inconsistent, and the error compounds over the steps: on
    the benchmark's MNIST model, class accuracy at w = 4 fell to 5.5 % with clipping against 100 % without
    (BENCHMARKS.md, class-conditional). w = 0 and 1 sample one prediction: the scheduler is used as it is.

    Example:
        >>> from diffusers import DDIMScheduler
        >>> guided_scheduler(DDIMScheduler(), 2.0).config.clip_sample, guided_scheduler(DDIMScheduler(), 1.0).config.clip_sample
        (False, True)
    """
    if guidance_scale in (0.0, 1.0):
        return scheduler
    return latent_scheduler(scheduler)


def latent_scheduler(scheduler):
    """``scheduler`` without ``clip_sample`` (a copy; the scheduler itself when it does not clip), for sampling
    latents: a VAE's latents, scaled to unit variance, are not bounded by [-1, 1], so clipping the predicted
    clean latent to it would cut real values at every step. Schedulers without the option (flow matching)
    are returned as they are.

    Example:
        >>> from diffusers import DDIMScheduler
        >>> latent_scheduler(DDIMScheduler()).config.clip_sample
        False
    """
    if not getattr(scheduler.config, "clip_sample", False):
        return scheduler
    return type(scheduler).from_config(scheduler.config, clip_sample=False)


def guided_output(net, x: torch.Tensor, t, labels: torch.Tensor | None, guidance_scale: float = 1.0,
                  null_class: int | None = None) -> torch.Tensor:
    """The network's output for noisy ``x`` (B, C, H, W) at timestep ``t``, guided toward ``labels`` (B,).

    ``net`` is a ``UNet2DModel`` or a ``DiTTransformer2DModel`` (anything called as ``net(x, t,
    class_labels=...)`` returning ``.sample``). ``labels`` None: the plain unconditional call ``net(x, t)``.
    w = 1: one conditional forward; w = 0: one forward on the null class; otherwise one forward of 2B
    (labels, then null) split in two and mixed by :func:`guided_noise`. ``null_class`` defaults to the
    network's (K). ``guidance_scale`` is expected checked (:func:`check_guidance_scale`). A 0-d ``t`` (a
    scheduler's timestep, or a Python number) is given to the network as one timestep per image, (B,) or
    (2B,): a DiT's timestep embedding needs it (a UNet broadcasts either the same way).
    """
    if labels is None:
        return net(x, batched_timestep(t, x)).sample
    labels = labels.to(x.device)
    if guidance_scale == 1.0:
        return net(x, batched_timestep(t, x), class_labels=labels).sample
    null = torch.full_like(labels, num_classes_of(net) if null_class is None else null_class)
    if guidance_scale == 0.0:
        return net(x, batched_timestep(t, x), class_labels=null).sample
    both = torch.cat([x, x])
    out = net(both, batched_timestep(t, both), class_labels=torch.cat([labels, null])).sample  # (2B, C, H, W)
    eps_cond, eps_uncond = out.chunk(2)
    return guided_noise(eps_cond, eps_uncond, guidance_scale)


def batched_timestep(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` as one timestep per image of ``x`` (B, ...) on its device: a 0-d tensor or a Python number
    (int: int64, float: float32) expanded to (B,); a tensor with a batch dimension is moved, not changed.

    Example:
        >>> batched_timestep(torch.tensor(7), torch.zeros(3, 1, 2, 2)).tolist()
        [7, 7, 7]
    """
    t = torch.as_tensor(t, device=x.device)
    return t.reshape(1).expand(x.shape[0]) if t.ndim == 0 else t
