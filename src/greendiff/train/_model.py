"""Right-sized UNets: presets for small images, built on diffusers' ``UNet2DModel``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from greendiff.errors import UserInputError
from greendiff.train._config import ModelConfig


@dataclass(frozen=True)
class Preset:
    """An architecture, and the green recipe's peak learning rate for it (``lr``): narrower
    networks take larger steps. Measured on the bundled MNIST for nano and tiny (BENCHMARKS.md,
    energy to quality); the others follow the same roughly 1/width scaling."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    attention: bool
    lr: float = 2e-4


PRESETS: dict[str, Preset] = {
    "pico": Preset((8, 16), 1, False, lr=2e-3),
    "nano": Preset((16, 32), 1, False, lr=2e-3),
    "tiny": Preset((32, 64, 64), 1, True, lr=1e-3),
    "small": Preset((64, 128, 128), 2, True, lr=5e-4),
    "base": Preset((128, 256, 256, 512), 2, True, lr=2e-4),
}


def resolve_architecture(model: ModelConfig) -> Preset:
    """The preset with the config's explicit overrides applied."""
    if model.preset not in PRESETS:
        raise UserInputError(f"unknown model preset {model.preset!r}; use one of {', '.join(PRESETS)}")
    base = PRESETS[model.preset]
    return Preset(
        block_out_channels=model.block_out_channels or base.block_out_channels,
        layers_per_block=base.layers_per_block if model.layers_per_block < 0 else model.layers_per_block,
        attention=base.attention if model.attention == "preset" else model.attention == "on",
        lr=base.lr,
    )


def check_architecture(model: ModelConfig, resolution: int) -> Preset:
    """The resolved architecture, or a one-line error if the resolution cannot survive its downsampling."""
    arch = resolve_architecture(model)
    levels = len(arch.block_out_channels)
    factor = 2 ** (levels - 1)
    if resolution % factor:
        raise UserInputError(f"data.resolution {resolution} is not divisible by {factor}, the downsampling of a "
                             f"{levels}-level UNet; pick a multiple of {factor} or fewer model.block_out_channels")
    return arch


def build_unet(model: ModelConfig, resolution: int, channels: int, num_train_timesteps: int, num_classes: int = 0):
    """A ``UNet2DModel``; the resolution must survive its downsampling (divisible by 2**(levels-1)).

    Args:
        num_classes: K > 0 adds diffusers' learned class embedding (``num_class_embeds`` = K + 1, summed
            with the timestep embedding): ids 0..K-1 are the classes and K the *null class* that stands
            for "no label" (classifier-free guidance, Ho & Salimans 2022). 0 (default): unconditional.
    """
    from diffusers import UNet2DModel

    arch = check_architecture(model, resolution)
    check_num_classes(num_classes)
    levels = len(arch.block_out_channels)
    groups = 8 if all(c % 8 == 0 for c in arch.block_out_channels) else 1
    attn = arch.attention
    down = ["DownBlock2D"] * (levels - 1) + ["AttnDownBlock2D" if attn else "DownBlock2D"]
    up = ["AttnUpBlock2D" if attn else "UpBlock2D"] + ["UpBlock2D"] * (levels - 1)
    unet = UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels,
        block_out_channels=arch.block_out_channels, layers_per_block=arch.layers_per_block,
        down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=groups,
        attention_head_dim=8, add_attention=attn, num_train_timesteps=num_train_timesteps,
        num_class_embeds=num_classes + 1 if num_classes else None,
    )
    if model.init_from:
        load_weights(unet, Path(model.init_from))
    return unet


#: Classes a conditional UNet may have (the embedding is (K + 1) x time_embed_dim).
MAX_CLASSES = 100_000


def check_num_classes(num_classes: int) -> None:
    """One-line :class:`UserInputError` unless ``num_classes`` is an integer in 0..MAX_CLASSES."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 0 <= num_classes <= MAX_CLASSES:
        raise UserInputError(f"model.num_classes must be an integer between 0 (unconditional) and {MAX_CLASSES:,}, "
                             f"got {num_classes!r}")


#: The parameters a class-conditional UNet has beyond an unconditional one of the same architecture.
CLASS_EMBEDDING_KEYS = frozenset({"class_embedding.weight"})


def load_weights(unet, folder: Path) -> None:
    """Copy the weights of the ``UNet2DModel`` saved in ``folder`` into ``unet``; the shapes must match.
    An unconditional source may start a class-conditional ``unet``: its class embedding is zeroed, so
    training starts from exactly the source model, for every class."""
    from greendiff.train._artifacts import load_unet

    source = load_unet(folder, "model.init_from")
    state = source.state_dict()
    got = {key: list(value.shape) for key, value in state.items()}
    want = _shapes_to_load(unet.state_dict(), got)
    if got != want:
        raise _architecture_differs(f"model.init_from {folder}", source.config, unet.config)
    adding_classes = want.keys() != unet.state_dict().keys()
    unet.load_state_dict(state, strict=not adding_classes)
    if adding_classes:
        with torch.no_grad():
            unet.class_embedding.weight.zero_()


def _shapes_to_load(target_state: dict, got: dict) -> dict[str, list[int]]:
    """The tensor shapes a source must have to start a UNet with ``target_state``: all of them, less the
    class embedding when the source (tensor name -> shape ``got``) is unconditional."""
    want = {key: list(value.shape) for key, value in target_state.items()}
    if not (CLASS_EMBEDDING_KEYS & got.keys()):
        want = {key: shape for key, shape in want.items() if key not in CLASS_EMBEDDING_KEYS}
    return want


def _architecture_differs(shown: str, saved, target) -> UserInputError:
    """The one-line error for a saved UNet (config ``saved``, a mapping) that cannot start ``target``'s."""
    keys = ("block_out_channels", "layers_per_block", "in_channels", "num_class_embeds")
    theirs = ", ".join(f"{key} {saved.get(key)}" for key in keys)
    ours = ", ".join(str(list(v) if isinstance(v := target.get(key), (list, tuple)) else v) for key in keys)
    return UserInputError(f"{shown}: its architecture ({theirs}) differs from the config's ({ours}); set "
                          "model.block_out_channels (and model.num_classes) to match")


def check_init_from(model: ModelConfig, resolution: int, channels: int, num_train_timesteps: int,
                    num_classes: int = 0) -> None:
    """``model.init_from`` (if set) can start this config's UNet, checked before a run directory or a ledger
    row exists: the folder holds a UNet2DModel's config.json and safetensors weights (read as a header
    only), with the tensor names and shapes of the UNet the config builds (built on the meta device: no
    memory; ``num_classes`` as :func:`build_unet`'s, and an unconditional folder may start a conditional
    UNet). One-line :class:`UserInputError` otherwise, the same :func:`load_weights` would raise."""
    if not model.init_from:
        return
    import json

    from safetensors import safe_open

    from greendiff.names import display_path
    from greendiff.train._artifacts import WEIGHTS_FILE, check_safetensors, check_unet_config

    folder = Path(model.init_from)
    shown = f"model.init_from {display_path(folder)}"
    config_file, weights = folder / "config.json", folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise UserInputError(f"{shown}: no such folder (a saved UNet2DModel: config.json and {WEIGHTS_FILE})")
    if not config_file.is_file():
        raise UserInputError(f"{shown}: not a saved UNet2DModel (no config.json)")
    if not weights.is_file():
        raise UserInputError(f"{shown}: no {WEIGHTS_FILE} (greendiff reads safetensors weights only, never pickled .bin files)")
    check_unet_config(config_file)
    check_safetensors(weights)
    saved = json.loads(config_file.read_text())
    if saved.get("in_channels", 3) != channels:
        where = (f"the latent channels of model.vae ({channels}): start from a UNet trained in this VAE's latent space"
                 if model.vae else f"the dataset's {channels} channel(s)")
        raise UserInputError(f"{shown}: its in_channels {saved.get('in_channels', 3)} are not {where}")
    with safe_open(str(weights), framework="pt") as f:
        got = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    with torch.device("meta"):
        target = build_unet(dataclasses.replace(model, init_from=""), resolution, channels, num_train_timesteps,
                            num_classes)
    if got != _shapes_to_load(target.state_dict(), got):
        raise _architecture_differs(shown, json.loads(config_file.read_text()), target.config)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(unet, resolution: int, channels: int) -> int:
    """Multiply-accumulates of one forward pass on one ``channels`` x ``resolution``² input (a UNet's image or
    latents, a DiT's latents): PyTorch's FLOP counter / 2, with the attention of the CPU's fused SDPA kernel
    counted too (the counter knows only the GPU kernels: on a CPU it would leave out the 2·N²·width MACs of
    each attention over N tokens). A class-conditional network runs on class 0 (the embedding is a lookup: no
    MACs). Guidance with w not 0 or 1 runs two."""
    from torch.utils.flop_counter import FlopCounterMode

    from greendiff.pipelines import num_classes_of

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    sample = torch.zeros(1, channels, resolution, resolution)
    labels = {"class_labels": torch.tensor([0])} if num_classes_of(unet) else {}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        unet(sample, torch.tensor([10]), **labels)
    return counter.get_total_flops() // 2


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one fused attention (PyTorch's formula for its GPU kernels): (B, heads, N, d) shapes."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)
