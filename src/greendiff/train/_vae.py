"""A local diffusers ``AutoencoderKL`` folder as the latent space of a diffusion model (Rombach et al., CVPR 2022):
its shape read from ``config.json`` alone and checked before anything loads, its weights loaded from safetensors
only (a pickled ``.bin`` is never read), and the two maps the trainer and the samplers use.

The latent scale is the one latent diffusion uses: the diffusion model works on
``z = scaling_factor * (mean + std * eps)`` of the VAE's posterior (``std = exp(logvar / 2)``), and samples are
decoded as ``vae.decode(z / scaling_factor + shift_factor)``; ``scaling_factor`` is the config's (``greendiff vae train`` stores
1 / std of its training data's latents there). A ``shift_factor`` (SD3, Flux; 0 when absent) is subtracted before scaling: ``z = scaling_factor * (x - shift_factor)``.

Example (a tiny VAE built from a config, saved and read back):
    >>> import tempfile, torch
    >>> from diffusers import AutoencoderKL
    >>> folder = Path(tempfile.mkdtemp()) / "vae"
    >>> AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=8,
    ...               down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ...               latent_channels=2, scaling_factor=0.5).save_pretrained(folder)
    >>> shape = read_vae_shape(folder)
    >>> shape, latent_size(shape, 16)
    (VaeShape(image_channels=1, latent_channels=2, downsample=2, scaling_factor=0.5, shift_factor=0.0), 8)
    >>> vae = load_vae(folder)
    >>> mean, std = encode_posterior(vae, torch.zeros(3, 1, 16, 16))
    >>> tuple(mean.shape), tuple(decode_latents(vae, mean * shape.scaling_factor).shape)
    ((3, 2, 8, 8), (3, 1, 16, 16))
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from greendiff.errors import UserInputError
from greendiff.files import read_json_object
from greendiff.names import display_path, shown

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  #: the only weights file read
PICKLED_WEIGHTS = "diffusion_pytorch_model.bin"  #: never read (unpickling runs code)
MAX_CONFIG_BYTES = 1_000_000  #: a VAE's config.json is a few hundred bytes
#: What diffusers' ``AutoencoderKL.__init__`` takes when config.json leaves a key out (tests check the signature).
DIFFUSERS_DEFAULTS = {"in_channels": 3, "out_channels": 3, "block_out_channels": (64,),
                      "down_block_types": ("DownEncoderBlock2D",), "latent_channels": 4, "norm_num_groups": 32,
                      "scaling_factor": 0.18215}


@dataclass(frozen=True)
class VaeShape:
    """What a VAE folder's ``config.json`` says, read without the weights.

    Attributes:
        image_channels: channels of the images it encodes (``in_channels``).
        latent_channels: channels of its latents.
        downsample: image side / latent side: ``2 ** (len(block_out_channels) - 1)``.
        scaling_factor: the config's ``scaling_factor`` (latents times this have unit variance).
        shift_factor: the config's ``shift_factor`` (SD3, Flux: subtracted before scaling; 0 when absent).
    """

    image_channels: int
    latent_channels: int
    downsample: int
    scaling_factor: float
    shift_factor: float = 0.0


def _bad(what: str, folder: Path, why: str) -> UserInputError:
    return UserInputError(f"{what} {display_path(folder)}: {why}")


def _read_config(folder: Path, what: str) -> dict:
    """``config.json`` of ``folder`` as a dict, or one line naming what is wrong."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise _bad(what, folder, f"no {CONFIG_FILE}; give a diffusers AutoencoderKL folder (saved by "
                                 "AutoencoderKL.save_pretrained, or made by greendiff vae train)")
    config = read_json_object(path, CONFIG_FILE, lambda why: _bad(what, folder, why), MAX_CONFIG_BYTES,
                              large_as="a VAE's config", object_as="a model config")
    if config.get("_class_name") != "AutoencoderKL":
        raise _bad(what, folder, f"{CONFIG_FILE} is the config of {shown(config.get('_class_name'))}, not of an "
                                 "AutoencoderKL (a VAE folder, e.g. the vae/ folder of a Stable Diffusion pipeline)")
    return config


def _positive_int(config: dict, key: str, what: str, folder: Path) -> int:
    value = config.get(key, DIFFUSERS_DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65_536:
        raise _bad(what, folder, f"{CONFIG_FILE}: {key} must be a positive integer, got {shown(value)}")
    return value


def _widths(config: dict, what: str, folder: Path) -> tuple[int, ...]:
    """``block_out_channels`` checked: positive ints, each divisible by ``norm_num_groups``, one per down block."""
    widths = config.get("block_out_channels", DIFFUSERS_DEFAULTS["block_out_channels"])
    if (not isinstance(widths, (list, tuple)) or not 0 < len(widths) <= 16
            or any(isinstance(w, bool) or not isinstance(w, int) or not 0 < w <= 65_536 for w in widths)):
        raise _bad(what, folder, f"{CONFIG_FILE}: block_out_channels must be a list of 1 to 16 positive integers, "
                                 f"got {shown(widths)}")
    groups = _positive_int(config, "norm_num_groups", what, folder)
    if any(w % groups for w in widths):
        raise _bad(what, folder, f"{CONFIG_FILE}: norm_num_groups {groups} does not divide block_out_channels "
                                 f"{list(widths)}")
    blocks = config.get("down_block_types", DIFFUSERS_DEFAULTS["down_block_types"])
    if not isinstance(blocks, (list, tuple)) or len(blocks) != len(widths):
        raise _bad(what, folder, f"{CONFIG_FILE}: down_block_types must list one block per block_out_channels "
                                 f"entry ({len(widths)}), got {shown(blocks)}")
    return tuple(widths)


def read_vae_shape(folder: Path, what: str = "--vae") -> VaeShape:
    """The shape of the VAE in ``folder`` from its ``config.json`` (weights not read), checked.

    Args:
        folder: a diffusers ``AutoencoderKL`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``).
        what: how messages name it (the flag or config key that gave it).

    Raises:
        UserInputError: one line for no such folder, no ``config.json``, a config that is not an
            ``AutoencoderKL``'s, no safetensors weights (pickled ``.bin`` weights are never read), or a bad
            value (channels not positive integers, a scaling factor not finite and > 0, ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _bad(what, folder, "no such folder" if not folder.exists() else "not a folder")
    config = _read_config(folder, what)
    if not (folder / WEIGHTS_FILE).is_file():
        pickled = (folder / PICKLED_WEIGHTS).exists()
        raise _bad(what, folder, f"no {WEIGHTS_FILE}" + (
            f" (only pickled {PICKLED_WEIGHTS}, which greendiff never loads: save it again with "
            "save_pretrained(folder, safe_serialization=True))" if pickled else ""))
    channels = _positive_int(config, "in_channels", what, folder)
    if _positive_int(config, "out_channels", what, folder) != channels:
        raise _bad(what, folder, f"{CONFIG_FILE}: out_channels {config['out_channels']} differs from in_channels "
                                 f"{channels}; the VAE must decode the images it encodes")
    latent_channels = _positive_int(config, "latent_channels", what, folder)
    widths = _widths(config, what, folder)
    factor = config.get("scaling_factor", DIFFUSERS_DEFAULTS["scaling_factor"])
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (math.isfinite(factor) and factor > 0):
        raise _bad(what, folder, f"{CONFIG_FILE}: scaling_factor must be a finite number > 0, got {shown(factor)}")
    shift = config.get("shift_factor") or 0.0
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift):
        raise _bad(what, folder, f"{CONFIG_FILE}: shift_factor must be a finite number or null, got {shown(shift)}")
    return VaeShape(channels, latent_channels, 2 ** (len(widths) - 1), float(factor), float(shift))


def load_vae(folder: Path, what: str = "--vae") -> AutoencoderKL:
    """The ``AutoencoderKL`` of ``folder`` (checked by :func:`read_vae_shape` first), from its safetensors
    weights only, frozen: ``eval()``, no gradients, float32, on the CPU. Weights that do not fit the config
    (a damaged file, missing or misshapen tensors) are one line."""
    from diffusers import AutoencoderKL

    read_vae_shape(folder, what)
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                            torch_dtype=torch.float32)
    except Exception as exc:  # safetensors and diffusers raise their own kinds for a damaged or foreign file
        message = " ".join(str(exc).split())[:200]
        raise _bad(what, Path(folder), f"the weights cannot be loaded ({type(exc).__name__}: {message})") from None
    return vae.eval().requires_grad_(False)  # loaded fp32 on the CPU (a later .to(dtype) makes diffusers warn)


def vae_weights_sha256(folder: Path) -> str:
    """The sha256 (hex) of ``folder``'s safetensors weights: what identifies the VAE in a latent cache key and a
    latent run's checkpoints. Read once per file version (path, size, modification time): a run asks for it
    when it checks a resume, fingerprints its checkpoints and keys its cache."""
    path = Path(folder) / WEIGHTS_FILE
    try:
        stat = path.stat()
        return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise UserInputError(f"{display_path(path)} cannot be read ({exc.strerror or exc})") from None


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file at ``path``; ``size`` and ``mtime_ns`` key the cache (a rewritten file is read again)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_input(vae, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the VAE's device and in its dtype."""
    parameter = next(vae.parameters())
    return x.to(device=parameter.device, dtype=parameter.dtype)


def _full_precision(vae):
    """No autocast around the VAE (a caller's bf16/fp16 autocast would decode in half precision: Stable
    Diffusion's VAE overflows in fp16), on its device's type."""
    return torch.autocast(next(vae.parameters()).device.type, enabled=False)


@torch.no_grad()
def encode_posterior(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior of ``images`` (float (B, C, H, W) in [-1, 1]): ``(mean, std)``, float32 (B, c, h, w) on
    the CPU, UNscaled (multiply a sample by the scaling factor for the diffusion model's scale)."""
    with _full_precision(vae):
        posterior = vae.encode(_model_input(vae, images)).latent_dist
    return posterior.mean.float().cpu(), posterior.std.float().cpu()


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """Images (float32 (B, C, H, W) in [-1, 1], on the CPU) of latents ``z`` in the diffusion model's scale
    (``scaling_factor`` times the posterior's, less ``shift_factor`` where the config has one)."""
    with _full_precision(vae):
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        images = vae.decode(_model_input(vae, z) / float(vae.config.scaling_factor) + shift).sample
    return images.float().clamp(-1.0, 1.0).cpu()


def latent_size(shape: VaeShape, resolution: int, what: str = "--vae") -> int:
    """The latent side of ``resolution``-pixel images: ``resolution // shape.downsample``; one line when the
    resolution is not a multiple of the VAE's downsampling factor."""
    if resolution % shape.downsample:
        lower = resolution - resolution % shape.downsample
        raise UserInputError(f"resolution {resolution} px is not a multiple of the {what} VAE's downsampling "
                             f"factor {shape.downsample}; use --resolution {lower or shape.downsample} "
                             f"or {lower + shape.downsample}")
    return resolution // shape.downsample
