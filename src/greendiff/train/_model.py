"""Right-sized UNets: presets for small images, built on diffusers' ``UNet2DModel``."""

from __future__ import annotations

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


def build_unet(model: ModelConfig, resolution: int, channels: int, num_train_timesteps: int):
    """A ``UNet2DModel``; the resolution must survive its downsampling (divisible by 2**(levels-1))."""
    from diffusers import UNet2DModel

    arch = check_architecture(model, resolution)
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
    )
    if model.init_from:
        load_weights(unet, Path(model.init_from))
    return unet


def load_weights(unet, folder: Path) -> None:
    """Copy the weights of the ``UNet2DModel`` saved in ``folder`` into ``unet``; the shapes must match."""
    from greendiff.train._artifacts import load_unet

    source = load_unet(folder, "model.init_from")
    try:
        unet.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError:
        raise UserInputError(f"model.init_from {folder}: its architecture (block_out_channels "
                             f"{list(source.config.block_out_channels)}, layers_per_block {source.config.layers_per_block}) "
                             f"differs from the config's ({list(unet.config.block_out_channels)}, "
                             f"{unet.config.layers_per_block}); set model.block_out_channels to match") from None


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(unet, resolution: int, channels: int) -> int:
    """Multiply-accumulates of one forward pass on one image (PyTorch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    sample = torch.zeros(1, channels, resolution, resolution)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, torch.tensor([10]))
    return counter.get_total_flops() // 2
