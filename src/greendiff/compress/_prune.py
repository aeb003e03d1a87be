"""Structural pruning of diffusers ``UNet2DModel``s with Torch-Pruning, after Diff-Pruning.

Diff-Pruning (Fang, Ma & Wang, NeurIPS 2023) scores channels with a first-order Taylor expansion
of the denoising loss, accumulated over timesteps from the least noisy upwards, and stops before
the high-noise steps whose loss falls below ``thr`` times the largest seen (their thr = 0.05):
those steps carry little information about the model's structure.

The pruned network is rebuilt as a plain ``UNet2DModel`` from its parent's config with new
``block_out_channels`` (so diffusers loads it):
every channel group of a resolution level is pruned by the same ratio, whole attention heads are
removed (the head size stays the config's ``attention_head_dim``), GroupNorm channels are removed
group by group (the group count stays), and ``conv_out`` keeps the image channels. One layer cannot
be carried over exactly: the first time-embedding layer reads a sinusoidal embedding whose width is
``block_out_channels[0]``, which pruning narrows. Its weights are refitted by least squares over all
training timesteps, then the time-embedding MLP is fitted to reproduce the pruned network's embedding
at every timestep; the relative residual of that embedding is reported (fine-tuning absorbs it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from greendiff.errors import UserInputError

IMPORTANCES = ("taylor", "magnitude", "random")


@dataclass(frozen=True)
class TaylorPass:
    """The timesteps whose loss gradients were accumulated, their losses, and where the pass stopped."""

    timesteps: tuple[int, ...]
    losses: tuple[float, ...]
    stopped_at: int | None  # the first timestep below thr x max loss (not accumulated); None: all used


def accumulate_taylor_gradients(unet, noise_scheduler, x0: torch.Tensor, n_timesteps: int, thr: float,
                                generator: torch.Generator, prediction_type: str = "epsilon",
                                on_timestep: Callable[[int], None] | None = None,
                                labels: torch.Tensor | None = None, cond_dropout: float = 0.0) -> TaylorPass:
    """Accumulate ``d loss / d w`` into ``.grad`` over ``n_timesteps`` evenly spaced timesteps, least noisy first.

    Each timestep's loss is the plain denoising MSE on ``x0`` with one fixed noise draw. The pass
    stops at the first timestep whose loss is below ``thr`` x the largest so far (Diff-Pruning).
    ``on_timestep`` is called with each timestep visited (a progress bar).

    Args:
        labels: The class ids ``(B,)`` of ``x0`` for a class-conditional UNet (None: an unconditional one).
        cond_dropout: The probability the run trained with of replacing a label by the null class K: the
            loss is the training loss in expectation, ``(1 - p) x MSE(labels) + p x MSE(null class)``, so the
            channels the unconditional half of guidance needs are scored too (p = 0: one forward).
    """
    total = noise_scheduler.config.num_train_timesteps
    steps = torch.linspace(0, total - 1, max(1, n_timesteps)).round().long().unique()
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    unet.zero_grad(set_to_none=True)
    used, losses, max_loss, stopped = [], [], 0.0, None
    for t in steps.tolist():
        if on_timestep:
            on_timestep(t)
        timesteps = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)
        target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(x0, noise, timesteps)
        loss = _denoising_loss(unet, noisy, timesteps, target, labels, cond_dropout)
        if used and loss.item() < thr * max_loss:
            stopped = t
            break
        loss.backward()
        used.append(t)
        losses.append(loss.item())
        max_loss = max(max_loss, loss.item())
    return TaylorPass(tuple(used), tuple(losses), stopped)


def _denoising_loss(unet, noisy: torch.Tensor, timesteps: torch.Tensor, target: torch.Tensor,
                    labels: torch.Tensor | None, cond_dropout: float) -> torch.Tensor:
    """The MSE of ``unet``'s prediction; with ``labels``, the expected loss under label dropout to the null class."""
    if labels is None:
        return F.mse_loss(unet(noisy, timesteps).sample.float(), target.float())
    from greendiff.pipelines import num_classes_of

    labels = labels.to(noisy.device)
    loss = F.mse_loss(unet(noisy, timesteps, class_labels=labels).sample.float(), target.float())
    if not cond_dropout:
        return loss
    null = torch.full_like(labels, num_classes_of(unet))
    unconditional = F.mse_loss(unet(noisy, timesteps, class_labels=null).sample.float(), target.float())
    return (1 - cond_dropout) * loss + cond_dropout * unconditional


def _importance(name: str):
    import torch_pruning as tp

    if name == "taylor":
        return tp.importance.TaylorImportance()  # |w * dL/dw|, from the accumulated gradients
    if name == "magnitude":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "random":
        return tp.importance.RandomImportance()
    raise UserInputError(f"unknown --importance {name!r}; use one of {', '.join(IMPORTANCES)}")


def check_ratio(ratio: float) -> None:
    if not 0 < ratio < 1:
        raise UserInputError(f"--ratio must be between 0 and 1 (exclusive): the fraction of channels removed; got {ratio}")


def prune_in_place(unet, ratio: float, importance: str, example: torch.Tensor | Mapping[str, torch.Tensor]) -> None:
    """Remove ``ratio`` of the channels of every channel group of ``unet`` (a ``UNet2DModel``), in place.

    With ``importance = "taylor"`` the gradients must already be in ``.grad``
    (:func:`accumulate_taylor_gradients`). Afterwards the module runs forward: the attributes that
    diffusers reads at run time (attention ``heads``, ``Upsample2D``/``Downsample2D.channels``) are fixed.

    Args:
        example: the inputs Torch-Pruning traces ``unet`` with: its forward's keyword arguments (``sample``
            (B, C, H, W), ``timestep`` (B,), and whatever else the model takes, e.g. a class-conditional UNet's
            ``class_labels`` (B,): its caller, which knows the model's family, gives them), or a sample alone
            for a UNet that takes nothing else (timestep 1).
    """
    import torch_pruning as tp
    from diffusers.models.attention_processor import Attention

    check_ratio(ratio)
    levels = len(unet.config.block_out_channels)
    ratios = level_ratios(unet.config.block_out_channels, ratio, quantum(unet))
    head_dims, heads, head_ratios, layer_ratios = {}, {}, {}, {}
    for name, module in unet.named_modules():
        level = _level_of(name, levels)
        if isinstance(module, Attention):
            head_dims[module] = module.to_q.out_features // module.heads
            for layer in (module.to_q, module.to_k, module.to_v):
                heads[layer] = module.heads
                head_ratios[layer] = ratios[level]
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and level is not None:
            layer_ratios[module] = ratios[level]
    groups = {m: m.num_groups for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)}
    inputs = (dict(example) if isinstance(example, Mapping)
              else {"sample": example, "timestep": torch.ones(example.shape[0], dtype=torch.long)})
    pruner = tp.pruner.MetaPruner(
        unet, inputs,
        importance=_importance(importance), pruning_ratio=ratio, pruning_ratio_dict=layer_ratios,
        ignored_layers=[unet.conv_out], out_channel_groups=groups, num_heads=heads, prune_num_heads=True,
        prune_head_dims=False, head_pruning_ratio=ratio, head_pruning_ratio_dict=head_ratios,
    )
    pruner.step()
    for module, head_dim in head_dims.items():
        module.heads = module.to_q.out_features // head_dim
        module.inner_dim = module.to_q.out_features
    for module in unet.modules():
        name = type(module).__name__
        if name == "Upsample2D" and module.conv is not None:
            module.channels = module.out_channels = module.conv.in_channels
        elif name == "Downsample2D" and isinstance(module.conv, torch.nn.Conv2d):
            module.channels = module.out_channels = module.conv.in_channels
    unet.zero_grad(set_to_none=True)


def quantum(unet) -> int:
    """The step a level's width can change by and stay a ``UNet2DModel``: whole GroupNorm groups
    (the group count is kept) and, with attention, whole heads of ``attention_head_dim``."""
    import math

    config = unet.config
    step = config.norm_num_groups
    if config.add_attention and config.attention_head_dim:
        step = math.lcm(step, config.attention_head_dim)
    return step


def level_ratios(widths: tuple[int, ...], ratio: float, step: int) -> list[float]:
    """Per level, the pruning ratio that leaves the nearest multiple of ``step`` to ``width x (1 - ratio)``
    (at least one ``step``). Adjacent levels of equal widths stay equal and of different widths stay different (a resnet
    without a width change has no shortcut convolution, so the weights would not fit the config).
    """
    kept: list[int] = []
    for i, width in enumerate(widths):
        k = min(width, max(step, round(width * (1 - ratio) / step) * step))
        if i and widths[i - 1] == width:
            k = kept[-1]
        elif i and kept[-1] == k:
            k = k + step if k + step <= width else k - step
            if k <= 0:
                raise UserInputError(f"--ratio {ratio} leaves levels {i - 1} and {i} the same width; use a smaller --ratio")
        kept.append(k)
    return [1 - k / w for k, w in zip(kept, widths)]


def _level_of(name: str, levels: int) -> int | None:
    """The resolution level (0 = full resolution) whose channels a module's outputs belong to."""
    parts = name.split(".")
    if parts[0] == "down_blocks" and len(parts) > 1:
        return int(parts[1])
    if parts[0] == "up_blocks" and len(parts) > 1:
        return levels - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return levels - 1
    if parts[0] in ("conv_in", "conv_norm_out", "time_embedding"):
        return 0  # the time-embedding MLP is 4 x block_out_channels[0] wide
    return None


def level_channels(unet) -> tuple[int, ...]:
    """Each resolution level's width, read from the (pruned) modules; one-line error if a level's
    layers disagree, i.e. the network can no longer be described by a ``UNet2DModel`` config."""
    widths = []
    for i, block in enumerate(unet.down_blocks):
        found = {r.conv1.out_channels for r in block.resnets} | {r.conv2.out_channels for r in block.resnets}
        if len(found) != 1:
            raise UserInputError(f"pruning left down block {i} with mixed widths {sorted(found)}; try another --ratio")
        widths.append(found.pop())
    return tuple(widths)


def time_embedding_refit(old_dim: int, new_dim: int, weight: torch.Tensor, num_timesteps: int,
                         flip_sin_to_cos: bool = True, freq_shift: float = 0.0) -> tuple[torch.Tensor, float]:
    """Weights ``W'`` (out, new_dim) with ``W' e_new(t) ~= W e_old(t)`` for every training timestep ``t``,
    where ``e_d`` is diffusers' ``d``-wide sinusoidal timestep embedding; and the fit's relative residual."""
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.arange(num_timesteps)
    old = get_timestep_embedding(t, old_dim, flip_sin_to_cos, freq_shift).double()
    new = get_timestep_embedding(t, new_dim, flip_sin_to_cos, freq_shift).double()
    wanted = old @ weight.double().T  # (T, out)
    solution = torch.linalg.lstsq(new, wanted).solution  # (new_dim, out)
    residual = (torch.linalg.norm(new @ solution - wanted) / torch.linalg.norm(wanted).clamp_min(1e-12)).item()
    return solution.T.to(weight.dtype).contiguous(), residual


@dataclass(frozen=True)
class Rebuilt:
    unet: object  # a fresh UNet2DModel holding the pruned weights
    block_out_channels: tuple[int, ...]
    time_refit_residual: float


def rebuild(pruned) -> Rebuilt:
    """The pruned module as a fresh ``UNet2DModel`` built from the parent's config with only
    ``block_out_channels`` replaced, every weight copied; the first time-embedding layer is refitted
    (module docstring). Works for any ``UNet2DModel`` whose time embedding is positional."""
    from diffusers import UNet2DModel

    config = pruned.config
    widths = level_channels(pruned)
    if config.time_embedding_type != "positional" or config.time_embedding_dim is not None:
        raise UserInputError("pruning supports UNet2DModels with the default positional time embedding")
    fresh = UNet2DModel.from_config({**config, "block_out_channels": widths})
    state = dict(pruned.state_dict())
    old_weight = state["time_embedding.linear_1.weight"]
    new_dim = fresh.time_embedding.linear_1.in_features
    residual = 0.0
    if old_weight.shape[1] != new_dim:
        state["time_embedding.linear_1.weight"], residual = time_embedding_refit(
            old_weight.shape[1], new_dim, old_weight, config.num_train_timesteps or 1000,
            config.flip_sin_to_cos, config.freq_shift)
    expected = fresh.state_dict()
    wrong = [k for k, v in state.items() if k not in expected or expected[k].shape != v.shape]
    if wrong or len(state) != len(expected):
        raise UserInputError(f"the pruned network does not match a UNet2DModel with block_out_channels {list(widths)} "
                             f"(first mismatch: {(wrong or ['missing keys'])[0]}); try another --ratio")
    fresh.load_state_dict(state, strict=True)
    if residual:
        residual = fit_time_embedding(fresh, pruned, config.num_train_timesteps or 1000)
    return Rebuilt(fresh.eval(), widths, residual)


def fit_time_embedding(fresh, pruned, num_timesteps: int, steps: int = 500, lr: float = 1e-3) -> float:
    """Fit ``fresh``'s time-embedding MLP (narrower sinusoid in, same width out) to what ``pruned``'s
    computes at every training timestep, starting from the least-squares refit; full-batch Adam on a
    (T x width) problem, well under a second. Returns the relative residual of the embedding the
    resnets receive, the one that matters (the least-squares refit alone leaves more)."""
    t = torch.arange(num_timesteps)
    with torch.no_grad():
        target = pruned.time_embedding(pruned.time_proj(t))
        inputs = fresh.time_proj(t)
    mlp = fresh.time_embedding
    optimizer = torch.optim.Adam(mlp.parameters(), lr=lr)
    best, best_state = float("inf"), None
    with torch.enable_grad():
        for _ in range(steps + 1):
            loss = F.mse_loss(mlp(inputs), target)
            if loss.item() < best:
                best, best_state = loss.item(), {k: v.detach().clone() for k, v in mlp.state_dict().items()}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    mlp.load_state_dict(best_state)
    mlp.zero_grad(set_to_none=True)
    with torch.no_grad():
        return (torch.linalg.norm(mlp(inputs) - target) / torch.linalg.norm(target).clamp_min(1e-12)).item()
