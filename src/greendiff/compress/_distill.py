"""Knowledge distillation: a smaller student learns from a teacher's predictions and features.

Output distillation regresses the student's prediction on the teacher's for the same noisy input
and timestep; feature distillation (as BK-SDM, Kim et al. 2023, does) regresses the outputs of the
student's blocks on the teacher's where the two have the same shape. Both are mixed with the
ordinary denoising loss, all with the recipe's per-sample (Min-SNR) weights. The teacher runs in
the same step, so its forward energy is metered with the student's training.
"""

from __future__ import annotations

import contextlib

import torch

from greendiff.train import RecipeConfig, loss_weights, noised_batch, weighted_mse

BLOCK_PREFIXES = ("down_blocks", "mid_block", "up_blocks")


def _blocks(unet) -> dict[str, torch.nn.Module]:
    """The block modules whose outputs are candidate features, by name (``down_blocks.0``, ``mid_block``...)."""
    out = {}
    unet = getattr(unet, "module", unet)  # a DistributedDataParallel-wrapped student
    for name, module in unet.named_modules():
        parts = name.split(".")
        if (parts[0] in ("down_blocks", "up_blocks") and len(parts) == 2) or name == "mid_block":
            out[name] = module
    return out


@contextlib.contextmanager
def capture(unet, names: list[str]):
    """Collect the outputs of the named blocks during forwards inside the context (first tensor of a tuple)."""
    features: dict[str, torch.Tensor] = {}
    blocks = _blocks(unet)
    handles = []
    for name in names:
        def hook(_module, _inputs, output, name=name):
            features[name] = output[0] if isinstance(output, tuple) else output
        handles.append(blocks[name].register_forward_hook(hook))
    try:
        yield features
    finally:
        for h in handles:
            h.remove()


def matching_blocks(student, teacher, example: torch.Tensor) -> list[str]:
    """Names of the blocks whose outputs have the same shape in both networks (one probe forward each)."""
    names = sorted(set(_blocks(student)) & set(_blocks(teacher)))
    timestep = torch.zeros(example.shape[0], dtype=torch.long)
    shapes = []
    for net in (student, teacher):
        with torch.no_grad(), capture(net, names) as features:
            net(example.to(next(net.parameters()).device), timestep.to(next(net.parameters()).device))
        shapes.append({k: tuple(v.shape) for k, v in features.items()})
    return [n for n in names if shapes[0].get(n) == shapes[1].get(n)]


class DistillationObjective:
    """The student's loss: ``data_weight`` x denoising + ``output_weight`` x prediction matching
    + ``feature_weight`` x mean feature matching over ``feature_blocks``. Called like ``diffusion_loss``."""

    def __init__(self, teacher, data_weight: float, output_weight: float, feature_weight: float,
                 feature_blocks: list[str] | None = None) -> None:
        """``feature_blocks``: None finds the same-shaped blocks on the first call (:func:`matching_blocks`)."""
        self.teacher = teacher.eval().requires_grad_(False)
        self.data_weight, self.output_weight, self.feature_weight = data_weight, output_weight, feature_weight
        self.feature_blocks = feature_blocks if feature_weight > 0 else []
        self.last_terms: dict[str, torch.Tensor] = {}

    def __call__(self, unet, noise_scheduler, x0: torch.Tensor, generator: torch.Generator,
                 optim: RecipeConfig) -> torch.Tensor:
        if next(self.teacher.parameters()).device != x0.device:
            self.teacher.to(x0.device)
        if self.feature_blocks is None:
            self.feature_blocks = matching_blocks(unet, self.teacher, x0[:1])
        noisy, timesteps, target = noised_batch(noise_scheduler, x0, generator, optim)
        weights = loss_weights(noise_scheduler, timesteps, optim)
        with capture(unet, self.feature_blocks) as student_features:
            prediction = unet(noisy, timesteps).sample
        with torch.no_grad(), capture(self.teacher, self.feature_blocks) as teacher_features:
            teacher_prediction = self.teacher(noisy, timesteps).sample
        terms = {"data": weighted_mse(prediction, target, weights),
                 "output": weighted_mse(prediction, teacher_prediction, weights)}
        if self.feature_blocks:
            terms["feature"] = torch.stack([
                weighted_mse(student_features[n], teacher_features[n], torch.ones_like(weights))
                for n in self.feature_blocks]).mean()
        self.last_terms = {k: v.detach() for k, v in terms.items()}  # no host sync in the training step
        loss = self.data_weight * terms["data"] + self.output_weight * terms["output"]
        if "feature" in terms:
            loss = loss + self.feature_weight * terms["feature"]
        return loss
