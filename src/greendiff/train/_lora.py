"""LoRA adapters on a pipeline's denoiser or text encoder: add, read, save for plain diffusers, merge.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) freezes a
weight ``W`` and learns ``W + (alpha / r) * B @ A`` with ``A`` (r x in) and ``B`` (out x r). As diffusers'
``examples/text_to_image/train_text_to_image_lora.py`` and ``train_dreambooth_lora*.py`` do, the adapter
is peft's ``LoraConfig`` on the attention projections (``to_q, to_k, to_v, to_out.0`` of a UNet or DiT;
``q_proj, k_proj, v_proj, out_proj`` of a CLIP text encoder), ``init_lora_weights="gaussian"`` (``A`` drawn
from N(0, 1/r), ``B`` zero, so the adapted model starts equal to the base), rank 4 and alpha = rank by
default in those scripts. The saved file is what ``pipe.load_lora_weights(folder)`` reads, written by the
pipeline class's own ``save_lora_weights`` with the adapter's config as metadata (so an alpha other than
the rank survives the round trip).

Example (a target that matches nothing is one line):
    >>> add_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)), LoraSettings(4, 4.0, 0.0, ("to_q",)))
    Traceback (most recent call last):
    ...
    greendiff.errors.UserInputError: lora target 'to_q' matches no module of Sequential; its linear layers are named 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from greendiff.errors import UserInputError
from greendiff.files import staged_folder
from greendiff.names import display_path

DENOISER_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
ADAPTER = "default"
# The keyword each pipeline class's save_lora_weights takes the denoiser's layers under.
DENOISER_KEYWORDS = {"StableDiffusionPipeline": "unet", "StableDiffusion3Pipeline": "transformer"}
SHOWN_SUFFIXES = 10


@dataclass(frozen=True)
class LoraSettings:
    """One LoRA adapter's shape.

    Attributes:
        rank: ``r``, the inner dimension of ``B @ A`` (>= 1).
        alpha: ``alpha``; the update is scaled by ``alpha / rank`` (> 0).
        dropout: dropout probability on the adapter's input while training, in [0, 1).
        targets: module-name suffixes to adapt, e.g. :data:`DENOISER_TARGETS`.

    Example:
        >>> LoraSettings(rank=8, alpha=16.0, dropout=0.0, targets=DENOISER_TARGETS).scale
        2.0
    """

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise UserInputError(f"lora rank must be a whole number >= 1, not {self.rank!r}")
        if not self.alpha > 0:
            raise UserInputError(f"lora alpha must be > 0, not {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise UserInputError(f"lora dropout must be in [0, 1), not {self.dropout!r}")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise UserInputError(f"lora targets must be module-name suffixes such as to_q, not {self.targets!r}")

    @property
    def scale(self) -> float:
        """``alpha / rank``, the factor on ``B @ A``."""
        return self.alpha / self.rank


def _linear_suffixes(model: torch.nn.Module) -> list[str]:
    """The names LoRA can target in ``model``: each linear layer's last name part (two when the last is an
    index, as ``to_out.0``), sorted, unique."""
    suffixes = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name:
            parts = name.split(".")
            suffixes.add(".".join(parts[-2:]) if parts[-1].isdecimal() and len(parts) > 1 else parts[-1])
    return sorted(suffixes)


def check_targets(model: torch.nn.Module, targets: tuple[str, ...]) -> None:
    """Raise a one-line UserInputError for the first target that names no module of ``model``, matched as
    peft matches (the whole name, or its end after a dot)."""
    names = [name for name, _ in model.named_modules() if name]
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in names):
            shown = _linear_suffixes(model)
            listed = ", ".join(shown[:SHOWN_SUFFIXES]) + (", ..." if len(shown) > SHOWN_SUFFIXES else "")
            raise UserInputError(f"lora target {target!r} matches no module of {type(model).__name__}; "
                                 f"its linear layers are named {listed or '(none)'}")


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> int:
    """Freeze every parameter of ``model`` and add a trainable LoRA adapter on ``settings.targets``.

    A diffusers model gets it through its own ``add_adapter``; a transformers text encoder through peft's
    ``inject_adapter_in_model`` (transformers 5's ``add_adapter`` asks for a newer peft than diffusers
    does; the layers, their names and ``model.peft_config`` are the same). ``lora_A`` is Gaussian and
    ``lora_B`` zero, so the model's outputs are unchanged until it trains.

    Args:
        model: A ``UNet2DConditionModel``, ``SD3Transformer2DModel``, CLIP/T5 text encoder (changed in place).
        settings: Rank, alpha, dropout and target module suffixes.

    Returns:
        The number of trainable parameters (the adapter's ``lora_A`` and ``lora_B`` elements).

    Raises:
        UserInputError: a target matches no module of ``model``.
    """
    from peft import LoraConfig, inject_adapter_in_model

    check_targets(model, settings.targets)
    model.requires_grad_(False)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        init_lora_weights="gaussian", target_modules=list(settings.targets))
    if _is_diffusers_model(model):
        model.add_adapter(config, adapter_name=ADAPTER)
    else:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    return sum(p.numel() for p in trainable_parameters(model))


def _is_diffusers_model(model: torch.nn.Module) -> bool:
    from diffusers.loaders.peft import PeftAdapterMixin

    return isinstance(model, PeftAdapterMixin)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of ``model`` with ``requires_grad``, in module order (after :func:`add_lora`: the
    adapter's), for the optimizer."""
    return [p for p in model.parameters() if p.requires_grad]


def lora_layers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights of ``model`` (peft's ``get_peft_model_state_dict``: keys such as
    ``...attn1.to_q.lora_A.weight``, no adapter name), detached, on CPU, contiguous."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def _adapter_metadata(model: torch.nn.Module) -> dict:
    """The adapter's LoraConfig as a dict, which diffusers stores beside the weights (rank, alpha, targets)."""
    return model.peft_config[ADAPTER].to_dict()


def save_lora(pipeline_class: str, folder: Path, denoiser: torch.nn.Module,
              text_encoder: torch.nn.Module | None = None) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors``, which plain diffusers loads with
    ``pipe.load_lora_weights(folder)``.

    The file is written by ``<pipeline_class>.save_lora_weights`` into a hidden folder beside ``folder``,
    renamed into place once complete; on any failure that folder (and the parents this made) is removed.

    Args:
        pipeline_class: ``"StableDiffusionPipeline"`` or ``"StableDiffusion3Pipeline"``.
        folder: The output folder: new, or empty.
        denoiser: The UNet or transformer with the adapter from :func:`add_lora`.
        text_encoder: The (first) text encoder with its adapter, or None when it was not adapted.

    Returns:
        The path of the weights file.

    Raises:
        ValueError: an unknown ``pipeline_class``.
        UserInputError: ``folder`` exists and is not empty (or is a file), or cannot be created.
    """
    if pipeline_class not in DENOISER_KEYWORDS:
        raise ValueError(f"no LoRA export for {pipeline_class!r}; known: {', '.join(DENOISER_KEYWORDS)}")
    import diffusers

    name = DENOISER_KEYWORDS[pipeline_class]
    layers = {f"{name}_lora_layers": lora_layers(denoiser),
              f"{name}_lora_adapter_metadata": _adapter_metadata(denoiser)}
    if text_encoder is not None:
        layers.update(text_encoder_lora_layers=lora_layers(text_encoder),
                      text_encoder_lora_adapter_metadata=_adapter_metadata(text_encoder))
    folder = Path(os.path.abspath(folder))
    _check_new_folder(folder)
    with staged_folder(folder, "LoRA output") as staging:
        getattr(diffusers, pipeline_class).save_lora_weights(staging, safe_serialization=True, **layers)
    return folder / WEIGHTS_NAME


def _check_new_folder(folder: Path) -> None:
    """Raise UserInputError unless ``folder`` is missing or an empty folder."""
    try:
        taken = folder.is_symlink() or folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    except OSError as exc:
        raise UserInputError(f"LoRA output {display_path(folder)} cannot be read ({exc.strerror or exc})") from None
    if taken:
        raise UserInputError(f"LoRA output {display_path(folder)} exists and is not an empty folder: give a new folder")


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the adapter into the base weights (``W += alpha / r * B @ A``) and remove its layers, in place.

    Args:
        model: A model with an adapter from :func:`add_lora` (or loaded by diffusers).

    Returns:
        ``model`` itself, now plain: its ``state_dict`` keys are the base model's and its outputs those of
        the adapted model.

    Raises:
        ValueError: ``model`` has no LoRA layer.
    """
    from diffusers.utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuned = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not tuned:
        raise ValueError(f"{type(model).__name__} has no LoRA layer to merge")
    for module in tuned:
        module.merge()
    recurse_remove_peft_layers(model)
    if hasattr(model, "peft_config"):
        del model.peft_config
    if hasattr(model, "_hf_peft_config_loaded"):
        model._hf_peft_config_loaded = False
    return model
