"""Representation alignment: an extra loss on the UNet's mid-block features, added to the denoising loss.

- ``repa``: REPA (Yu et al. 2024, "Representation Alignment for Generation: Training Diffusion Transformers
  Is Easier Than You Think", arXiv 2410.06940) as U-REPA adapts it to UNets (Tian et al. 2025, arXiv
  2503.18414): a small MLP (:class:`Projector`) maps each position of the mid-block (bottleneck) output to
  the encoder's width, the map is resized to the encoder's patch grid (after the MLP, as U-REPA does), and
  each position is aligned by cosine similarity to a frozen encoder's patch feature of the *clean* image
  (:func:`cosine_alignment_loss`). The encoder is a local transformers vision model (:class:`FrozenEncoder`).
- ``dispersive``: Dispersive Loss (Wang & He 2025, "Diffuse and Disperse", arXiv 2506.09027), encoder-free:
  the InfoNCE-L2 form without positives, log mean_{i,j} exp(-D(z_i, z_j) / tau) over the batch's flattened
  mid-block outputs (:func:`dispersive_loss`).

The weight decays linearly from ``optim.align_weight`` to 0 at ``optim.align_until`` x ``run.max_steps`` and
stays 0 (:func:`alignment_weight`): alignment helps early and can hurt late (HASTE, Wang et al. 2025, arXiv
2505.16792); once it is 0 the term (and the encoder's forward) is skipped. The projector is trained with the
network (in the optimizer, saved in checkpoints by :class:`ProjectorPart`) but never exported.

Example:
    >>> import torch
    >>> z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> round(float(dispersive_loss(z, temperature=1.0)), 4)
    -0.3788
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from greendiff.errors import UserInputError
from greendiff.names import display_path

#: Pickle-based weight files greendiff never loads.
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: The projector's hidden width cap (REPA's own MLP is 2048 wide at DiT-XL widths).
MAX_PROJECTOR_WIDTH = 2048
_DEFAULT_MEAN, _DEFAULT_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, when the folder has none


# -- the math ------------------------------------------------------------------------------------------------------

def alignment_weight(step: int, max_steps: int, weight: float, until: float) -> float:
    """The alignment term's weight at ``step`` (steps done so far): ``weight`` x (1 - step / (until x max_steps)),
    exactly 0 from step ``until x max_steps`` on (HASTE's early stop, as a linear decay).

    Example:
        >>> [alignment_weight(s, 100, 0.5, 0.5) for s in (0, 25, 50, 80)]
        [0.5, 0.25, 0.0, 0.0]
    """
    end = until * max_steps
    if end <= 0 or step >= end:
        return 0.0
    return weight * (1.0 - step / end)


def cosine_alignment_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and the patches of 1 - cos(projected, target): REPA's negative cosine similarity
    shifted by 1, so perfectly aligned features give 0 (its minimum) and opposite ones 2; fp32.

    Args:
        projected: The network's projected features (B, N, D).
        target: The frozen encoder's features (B, N, D) (no gradient flows into them).
    """
    cos = F.cosine_similarity(projected.float(), target.float().detach(), dim=-1, eps=1e-8)  # (B, N)
    return (1.0 - cos).mean()


def dispersive_loss(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """Dispersive Loss, InfoNCE-L2 form (Wang & He 2025, eq. 6): log mean_{i,j} exp(-D_ij / tau) over all B x B
    pairs (i = j included), D_ij = ||z_i - z_j||^2 / d the mean squared distance of the flattened features
    (d of them, as the authors' release scales it); fp32. Its minimum, -log B, is reached as the samples
    spread apart; identical samples give 0.

    Args:
        features: (B, ...) features of the batch, flattened per sample.
        temperature: tau > 0.
    """
    z = features.float().flatten(1)  # (B, d)
    distance = torch.cdist(z, z).pow(2) / z.shape[1]  # (B, B)
    return torch.logsumexp(-distance.flatten() / temperature, dim=0) - math.log(distance.numel())


# -- the network side ------------------------------------------------------------------------------------------------

class Projector(nn.Module):
    """REPA's MLP, per position: Linear(c, h) - SiLU - Linear(h, h) - SiLU - Linear(h, d), h = min(2048, 2 max(c, d)).

    Args:
        in_channels: c, the mid-block's channels.
        out_dim: d, the encoder's feature width.

    Example:
        >>> Projector(16, 32)(torch.zeros(2, 16, 4, 4)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_dim: int) -> None:
        super().__init__()
        hidden = min(MAX_PROJECTOR_WIDTH, 2 * max(in_channels, out_dim))
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c, h, w) -> (B, d, h, w)."""
        return self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def projected_tokens(projector: Projector, mid: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The mid-block output (B, c, h, w) projected, resized to the encoder's patch ``grid`` (bilinear, after the
    MLP as U-REPA does) and laid out as tokens (B, gh x gw, d) in row-major order."""
    z = projector(mid)  # (B, d, h, w)
    if tuple(z.shape[-2:]) != tuple(grid):
        z = F.interpolate(z.float(), size=grid, mode="bilinear", align_corners=False)
    return z.flatten(2).transpose(1, 2)


class MidBlockTap:
    """A forward hook on ``model.mid_block`` that keeps its output while armed (one training forward).

    Example:
        >>> tap = MidBlockTap(nn.Module())
        Traceback (most recent call last):
        ...
        ValueError: alignment needs a network with a mid block (a UNet2DModel)
    """

    def __init__(self, model: nn.Module) -> None:
        mid = getattr(model, "mid_block", None)
        if not isinstance(mid, nn.Module):
            raise ValueError("alignment needs a network with a mid block (a UNet2DModel)")
        self.armed = False
        self.output: torch.Tensor | None = None
        self.handle = mid.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        if self.armed:
            self.output = output

    def take(self) -> torch.Tensor:
        """The captured output (B, c, h, w), released; ``RuntimeError`` when the forward did not reach it."""
        out, self.output = self.output, None
        if out is None:
            raise RuntimeError("the loss's forward did not run the network's mid block")
        return out


class ProjectorPart:
    """The projector's weights in a checkpoint's books (``train_state.json`` key ``align``): a safetensors
    blob, base64-encoded (exact, never pickled); its optimizer moments travel with the optimizer's."""

    state_key = "align"

    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    def state_dict(self) -> dict:
        from safetensors.torch import save

        blob = save({k: v.detach().cpu().contiguous() for k, v in self.projector.state_dict().items()})
        return {"projector_safetensors_base64": base64.b64encode(blob).decode("ascii")}

    def load_state_dict(self, state: dict) -> None:
        """``ValueError`` unless ``state`` holds this projector's tensors, same names and shapes, finite."""
        from safetensors.torch import load

        try:
            tensors = load(base64.b64decode(state["projector_safetensors_base64"], validate=True))
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"the projector's weights are unreadable ({exc})") from None
        except Exception as exc:  # noqa: BLE001 -- safetensors' own error type for a damaged blob
            raise ValueError(f"the projector's weights are unreadable ({type(exc).__name__})") from None
        mine = self.projector.state_dict()
        if set(tensors) != set(mine) or any(tensors[k].shape != mine[k].shape for k in mine):
            raise ValueError("the projector's weights are another projector's (names or shapes differ)")
        if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
            raise ValueError("the projector's weights are not finite")
        self.projector.load_state_dict(tensors)

    def __deepcopy__(self, memo) -> ProjectorPart:  # a checkpoint's state is tried on a copy of the projector alone
        import copy

        return ProjectorPart(copy.deepcopy(self.projector, memo))


# -- the frozen encoder ----------------------------------------------------------------------------------------------

class FrozenEncoder:
    """A local transformers vision model (``AutoModel``, safetensors only), frozen, giving patch features of
    clean images: resized and normalised as its ``preprocessor_config.json`` says (ImageNet's mean and std and
    the config's ``image_size`` without one), greyscale repeated to its input channels.

    Args:
        folder: A folder written by ``save_pretrained`` (checked by :func:`check_encoder_folder`).
        device: Where it runs.
    """

    def __init__(self, folder: Path, device: torch.device | str = "cpu") -> None:
        from transformers import AutoModel

        from greendiff.train._base_pipeline import _quiet_transformers

        with _quiet_transformers():  # no "Loading weights" bar: the run shows its own progress
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        self.model.requires_grad_(False).eval().to(device)
        self.side, self.crop, self.mean, self.std = _preprocessing(folder, self.model.config)
        self.channels = int(getattr(self.model.config, "num_channels", 3) or 3)
        self.patch = getattr(self.model.config, "patch_size", None)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> the encoder's input (B, channels, S, S), fp32."""
        x = (images.float().clamp(-1, 1) + 1) / 2  # [0, 1], as the processor's rescale gives
        if x.shape[1] != self.channels:
            x = x.mean(dim=1, keepdim=True).repeat(1, self.channels, 1, 1)
        if tuple(x.shape[-2:]) != (self.side, self.side):
            x = F.interpolate(x, size=(self.side, self.side), mode="bicubic", align_corners=False,
                              antialias=self.side < x.shape[-1]).clamp(0, 1)
        if self.crop < self.side:
            top = (self.side - self.crop) // 2
            x = x[..., top:top + self.crop, top:top + self.crop]
        mean = torch.tensor(self.mean[:self.channels], device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std[:self.channels], device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch features (B, N, D) of images (B, C, H, W) in [-1, 1] and their grid (gh, gw), gh x gw = N: a
        transformer's last hidden state without its class and register tokens, or a CNN's last feature map."""
        pixels = self.pixel_values(images).to(next(self.model.parameters()).device)
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.ndim == 4:  # (B, D, gh, gw): a convolutional encoder
            return hidden.flatten(2).transpose(1, 2).float(), (hidden.shape[-2], hidden.shape[-1])
        if not self.patch:
            raise UserInputError("the align encoder's config has no patch_size; use a ViT, DINOv2 or CNN folder")
        side = self.crop // int(self.patch if isinstance(self.patch, int) else self.patch[0])
        return hidden[:, -side * side:].float(), (side, side)  # the patch tokens come last (after CLS, registers)


def _preprocessing(folder: Path, config) -> tuple[int, int, tuple, tuple]:
    """(resize side, centre-crop side, mean, std) from ``preprocessor_config.json`` (or the model config)."""
    path = folder / "preprocessor_config.json"
    spec = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    side = int(getattr(config, "image_size", 224) or 224)
    size = spec.get("size", {}) if spec.get("do_resize", True) else {}
    if isinstance(size, dict):
        side = int(size.get("shortest_edge") or size.get("height") or side)
    elif isinstance(size, int):
        side = size
    crop = spec.get("crop_size", {}) if spec.get("do_center_crop", False) else {}
    crop_side = int(crop.get("height", side)) if isinstance(crop, dict) else int(crop or side)
    normalise = spec.get("do_normalize", True)
    mean = tuple(spec.get("image_mean", _DEFAULT_MEAN)) if normalise else (0.0, 0.0, 0.0)
    std = tuple(spec.get("image_std", _DEFAULT_STD)) if normalise else (1.0, 1.0, 1.0)
    return side, min(crop_side, side), (mean * 3)[:3], (std * 3)[:3]


# -- checks before a run ---------------------------------------------------------------------------------------------

def check_align(config) -> None:
    """What alignment would refuse, checked before a run directory exists (one-line :class:`UserInputError`):
    an encoder without ``repa`` or ``repa`` without one, a backbone or mode it cannot hook, and the encoder's
    folder (:func:`check_encoder_folder`)."""
    optim = config.optim
    if optim.align_encoder and optim.align != "repa":
        raise UserInputError("--align-encoder is used by --align repa only; add --align repa, or drop --align-encoder")
    if optim.align == "none":
        return
    if config.model.backbone != "unet":
        backbone = config.model.backbone
        raise UserInputError(f"--align {optim.align} hooks a UNet's mid block; model.backbone = {backbone} has none: "
                             "use --backbone unet, or --align none")
    if config.finetune.enabled or config.distill.kind != "none":
        raise UserInputError(f"--align {optim.align} trains from-scratch UNets; a fine-tune or distillation brings its "
                             "own loss: use --align none")
    if optim.align == "repa":
        if not optim.align_encoder:
            raise UserInputError("--align repa needs --align-encoder DIR, a local transformers vision model folder "
                                 "(e.g. DINOv2 saved with save_pretrained)")
        check_encoder_folder(Path(optim.align_encoder), config.stop.eval_features)


def check_encoder_folder(folder: Path, eval_features: str = "mnist") -> None:
    """``folder`` is a transformers model folder with safetensors weights, no code of its own, and not the
    network that scores quality (the bundled MNIST features, or ``eval_features``'s Inception file): aligning to
    the metric's own network would optimise the metric directly."""
    shown = display_path(str(folder))
    if not folder.is_dir():
        raise UserInputError(f"align encoder {shown} is not a folder; give a local transformers model folder")
    if _is_quality_network(folder, eval_features):
        raise UserInputError(f"align encoder {shown} holds the network that scores quality (stop.eval_features = "
                             f"{eval_features}); aligning to it optimises the metric itself: use another encoder")
    config = folder / "config.json"
    if not config.is_file():
        raise UserInputError(f"align encoder {shown} has no config.json; save the model with save_pretrained")
    try:
        spec = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"align encoder {shown}: config.json is unreadable ({exc})") from None
    if not isinstance(spec, dict) or "auto_map" in spec:
        raise UserInputError(f"align encoder {shown} needs code of its own (auto_map); greendiff runs no code from a "
                             "model folder")
    files = [p for p in folder.iterdir() if p.is_file()]
    if not any(p.suffix == ".safetensors" for p in files):
        pickled = sorted(p.name for p in files if p.suffix in PICKLED_SUFFIXES)
        if pickled:
            raise UserInputError(f"align encoder {shown} holds pickled weights only ({pickled[0]}); greendiff never "
                                 "unpickles: save it with save_pretrained(safe_serialization=True)")
        raise UserInputError(f"align encoder {shown} has no .safetensors weights")


def _is_quality_network(folder: Path, eval_features: str) -> bool:
    """Whether ``folder`` is the quality network's folder or holds a copy of its weights file (same bytes)."""
    from greendiff.evaluate._features import MNIST_WEIGHTS

    scorers = [Path(str(MNIST_WEIGHTS))]
    if isinstance(eval_features, str) and eval_features.startswith("inception:"):
        scorers.append(Path(eval_features.split(":", 1)[1]))
    scorers = [p for p in scorers if p.is_file()]
    if any(folder.resolve() == p.parent.resolve() for p in scorers):
        return True
    sizes = {p.stat().st_size: p for p in scorers}
    for candidate in folder.iterdir():
        if candidate.is_file() and (match := sizes.get(candidate.stat().st_size)) is not None \
                and _sha256(candidate) == _sha256(match):
            return True
    return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the run's alignment and the loss it adds ------------------------------------------------------------------------

class Alignment:
    """A run's alignment, built once at setup (:func:`make_alignment`): the tap on the model's mid block, and for
    REPA the frozen encoder and the trained projector.

    Args:
        mode: ``repa`` or ``dispersive``.
        model: The unwrapped network (its ``mid_block`` is hooked).
        optim: The recipe (weight, decay, temperature).
        max_steps: ``run.max_steps`` (the decay's horizon).
        encoder: REPA's :class:`FrozenEncoder` (None for dispersive).
        projector: REPA's :class:`Projector`, on the model's device (None for dispersive).
        decode: Latents -> images in [-1, 1] (a latent run; None in pixel space).
    """

    def __init__(self, mode: str, model: nn.Module, optim, max_steps: int, encoder: FrozenEncoder | None = None,
                 projector: Projector | None = None, decode: Callable | None = None) -> None:
        self.mode, self.optim, self.max_steps = mode, optim, max_steps
        self.encoder, self.projector, self.decode = encoder, projector, decode
        self.tap = MidBlockTap(model)
        self.part = ProjectorPart(projector) if projector is not None else None
        self.last_term = math.nan  # the alignment term of the latest step (unweighted; nan while off)

    def parameters(self) -> list[nn.Parameter]:
        """The projector's parameters (trained with the network), none for dispersive."""
        return list(self.projector.parameters()) if self.projector is not None else []

    def weight(self, step: int) -> float:
        return alignment_weight(step, self.max_steps, self.optim.align_weight, self.optim.align_until)

    def term(self, mid: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The unweighted alignment loss of the mid-block output ``mid`` (B, c, h, w) for the clean batch ``x0``."""
        if self.mode == "dispersive":
            return dispersive_loss(mid, self.optim.align_temperature)
        images = self.decode(x0).to(x0.device) if self.decode is not None else x0
        target, grid = self.encoder.features(images)  # (B, N, D)
        return cosine_alignment_loss(projected_tokens(self.projector, mid, grid), target)


class AlignedLoss:
    """The family's loss plus the weighted alignment term: the same draws and forward (the mid block's output is
    captured by :class:`MidBlockTap` during it), the weight read from ``clock.step`` (the trainer's state).
    Called like :func:`~greendiff.train.diffusion_loss`; with weight 0 it is the family's loss alone."""

    def __init__(self, base: Callable, alignment: Alignment, clock) -> None:
        self.base, self.alignment, self.clock = base, alignment, clock

    def __call__(self, net, noise_scheduler, x0: torch.Tensor, generator: torch.Generator, optim, **inputs):
        weight, tap = self.alignment.weight(self.clock.step), self.alignment.tap
        if weight == 0.0:
            self.alignment.last_term = math.nan
            return self.base(net, noise_scheduler, x0, generator, optim, **inputs)
        tap.armed = True
        try:
            loss = self.base(net, noise_scheduler, x0, generator, optim, **inputs)
        finally:
            tap.armed = False
        term = self.alignment.term(tap.take(), x0)
        self.alignment.last_term = float(term.detach())
        return loss + weight * term


def aligned_objective(base: Callable, alignment: Alignment | None, clock) -> Callable:
    """``base`` with the alignment term added (:class:`AlignedLoss`), or ``base`` itself when there is none."""
    return base if alignment is None else AlignedLoss(base, alignment, clock)


def make_alignment(config, family, model: nn.Module, device: torch.device) -> Alignment | None:
    """The run's :class:`Alignment` for ``optim.align`` (None when ``none``): REPA's encoder is loaded and its
    feature width read from one forward; the projector is initialised from the current torch seed."""
    optim = config.optim
    if optim.align == "none":
        return None
    check_align(config)
    space = family.space
    decode = space.decode if getattr(space, "latent", False) else None
    if optim.align == "dispersive":
        return Alignment("dispersive", model, optim, config.run.max_steps)
    encoder = FrozenEncoder(Path(optim.align_encoder), device)
    res = config.data.resolution
    width = encoder.features(torch.zeros(1, 1, res, res))[0].shape[-1]
    projector = Projector(_mid_channels(model), width).to(device)
    return Alignment("repa", model, optim, config.run.max_steps, encoder, projector, decode)


def _mid_channels(model: nn.Module) -> int:
    channels = getattr(getattr(model, "config", None), "block_out_channels", None)
    if not channels:
        raise ValueError("alignment needs a UNet2DModel (its config's block_out_channels)")
    return int(channels[-1])
