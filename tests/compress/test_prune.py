from __future__ import annotations

import copy
import types

import pytest
import torch

from greendiff.compress import accumulate_taylor_gradients, prune_in_place, rebuild
from greendiff.compress._prune import level_ratios, time_embedding_refit
from greendiff.errors import UserInputError
from greendiff.train import ModelConfig, RecipeConfig, build_unet, count_macs, count_parameters, make_noise_scheduler

X0 = torch.linspace(-1, 1, 4 * 64).reshape(4, 1, 8, 8)


def example():
    return torch.zeros(1, 1, 8, 8)


def test_taylor_gradients_are_the_sum_over_the_timesteps_used(unet):
    scheduler = make_noise_scheduler(RecipeConfig())
    net = unet()
    info = accumulate_taylor_gradients(net, scheduler, X0, 3, thr=0.0, generator=torch.Generator().manual_seed(1))
    assert info.timesteps == (0, 500, 999) and info.stopped_at is None and len(info.losses) == 3
    accumulated = net.conv_in.weight.grad.clone()
    noise = torch.randn(X0.shape, generator=torch.Generator().manual_seed(1))
    expected = torch.zeros_like(accumulated)
    for t in info.timesteps:  # one backward per timestep, same noise: the pass must add them up
        net.zero_grad()
        ts = torch.full((4,), t)
        torch.nn.functional.mse_loss(net(scheduler.add_noise(X0, noise, ts), ts).sample, noise).backward()
        expected += net.conv_in.weight.grad
    torch.testing.assert_close(accumulated, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(accumulated, net.conv_in.weight.grad), "more than the last timestep contributed"


class Identity(torch.nn.Module):
    """Predicts the noise as the noisy input: exact at pure noise, bad on clean images, so its loss falls with t."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, t):
        return types.SimpleNamespace(sample=self.w * x)


def test_taylor_pass_skips_the_high_noise_steps_below_thr_of_the_max_loss():
    scheduler = make_noise_scheduler(RecipeConfig())
    info = accumulate_taylor_gradients(Identity(), scheduler, torch.ones(8, 1, 4, 4), 50, thr=0.05,
                                       generator=torch.Generator().manual_seed(0))
    assert info.stopped_at is not None and 500 < info.stopped_at < 999
    assert all(loss >= 0.05 * max(info.losses) for loss in info.losses)
    assert max(info.timesteps) < info.stopped_at


def test_level_ratios_keep_whole_groups_and_the_shortcut_structure():
    def kept(widths, ratio, step=8):
        return tuple(round(w * (1 - r)) for w, r in zip(widths, level_ratios(widths, ratio, step)))

    assert kept((32, 64, 64), 0.35) == (24, 40, 40)
    assert kept((32, 64, 64), 0.5) == (16, 32, 32)
    assert kept((16, 32), 0.75) == (8, 16)  # 8 and 8 would drop the level-1 shortcut convolution
    assert kept((32, 64, 64), 0.9) == (8, 16, 16)  # equal levels stay equal


@pytest.mark.parametrize("importance", ["taylor", "magnitude", "random"])
def test_pruning_reduces_measured_params_and_macs_and_the_module_still_runs(unet, importance):
    net = unet()
    params, macs = count_parameters(net), count_macs(net, 8, 1)
    if importance == "taylor":
        accumulate_taylor_gradients(net, make_noise_scheduler(RecipeConfig()), X0, 4, 0.05, torch.Generator().manual_seed(0))
    prune_in_place(net, 0.5, importance, example())
    assert count_parameters(net) < params / 3 and count_macs(net, 8, 1) < macs / 3
    attn = net.mid_block.attentions[0]
    assert attn.heads == 2 and attn.to_q.out_features == 16, "whole heads removed, head size kept"
    assert net.down_blocks[0].downsamplers[0].channels == 8 and net.up_blocks[1].upsamplers[0].channels == 16
    assert all(gn.num_groups == 8 for gn in net.modules() if isinstance(gn, torch.nn.GroupNorm))
    assert net.conv_out.out_channels == 1
    assert net(torch.randn(2, 1, 8, 8), torch.tensor([3, 700])).sample.shape == (2, 1, 8, 8)


def test_rebuilt_model_computes_what_the_pruned_module_does_and_round_trips_through_diffusers(unet, tmp_path):
    from diffusers import UNet2DModel

    net = unet()
    accumulate_taylor_gradients(net, make_noise_scheduler(RecipeConfig()), X0, 4, 0.05, torch.Generator().manual_seed(0))
    prune_in_place(net, 0.5, "taylor", example())
    out = rebuild(net)
    assert out.block_out_channels == (8, 16, 16) and 0 < out.time_refit_residual < 1
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 900])
    fresh, swapped = out.unet, copy.deepcopy(out.unet)
    swapped.time_proj, swapped.time_embedding = net.time_proj, net.time_embedding
    with torch.no_grad():
        reference = net(x, t).sample
        refitted = fresh(x, t).sample
        same_time_path = swapped(x, t).sample
    torch.testing.assert_close(same_time_path, reference, rtol=0, atol=1e-5)  # everything else carried over exactly
    assert (refitted - reference).abs().max() > 0  # the refit is an approximation, reported as such
    path = tmp_path / "pruned"
    out.unet.save_pretrained(str(path))
    loaded = UNet2DModel.from_pretrained(str(path))
    assert tuple(loaded.config.block_out_channels) == (8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t).sample, fresh(x, t).sample)


def test_time_embedding_refit_is_exact_at_the_same_width_and_beats_truncation_when_narrower():
    weight = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    same, residual = time_embedding_refit(16, 16, weight, 1000)
    assert residual < 1e-6 and torch.allclose(same, weight, atol=1e-5)
    narrower, residual = time_embedding_refit(16, 8, weight, 1000)
    assert narrower.shape == (32, 8) and 0 < residual < 1
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.arange(1000)
    wanted = get_timestep_embedding(t, 16, True, 0) @ weight.T
    truncated = torch.cat([weight[:, :4], weight[:, 8:12]], dim=1)  # the same frequencies' sin and cos columns
    naive = torch.linalg.norm(get_timestep_embedding(t, 8, True, 0) @ truncated.T - wanted) / torch.linalg.norm(wanted)
    assert residual <= naive.item()


def test_bad_ratio_and_importance_are_one_line_errors(unet):
    with pytest.raises(UserInputError, match="between 0 and 1"):
        prune_in_place(unet(), 1.0, "taylor", example())
    with pytest.raises(UserInputError, match="unknown --importance"):
        prune_in_place(unet(), 0.5, "l7", example())


def test_any_diffusers_unet2dmodel_prunes_and_rebuilds_not_only_greendiff_presets():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    net = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=2,
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                      norm_num_groups=8, attention_head_dim=8)  # diffusers' layout, 2 resnets per block, RGB
    prune_in_place(net, 0.5, "magnitude", torch.zeros(1, 3, 8, 8))
    out = rebuild(net)
    assert out.block_out_channels == (8, 16) and out.unet.config.layers_per_block == 2
    assert out.unet(torch.randn(1, 3, 8, 8), torch.tensor([10])).sample.shape == (1, 3, 8, 8)


def conditional_unet(num_classes: int = 3):
    """The fixture's 3-level UNet with a learned class embedding: classes 0..K-1 and the null class K."""
    torch.manual_seed(0)
    return build_unet(ModelConfig(preset="tiny", block_out_channels=(16, 32, 32)), 8, 1, 1000, num_classes=num_classes)


def test_taylor_gradients_of_a_class_conditional_unet_are_its_training_loss_in_expectation():
    scheduler, labels = make_noise_scheduler(RecipeConfig()), torch.tensor([0, 1, 2, 1])
    net = conditional_unet()
    info = accumulate_taylor_gradients(net, scheduler, X0, 2, thr=0.0, generator=torch.Generator().manual_seed(1),
                                       labels=labels, cond_dropout=0.25)
    accumulated = net.class_embedding.weight.grad.clone()
    noise = torch.randn(X0.shape, generator=torch.Generator().manual_seed(1))
    expected = torch.zeros_like(accumulated)
    for t in info.timesteps:  # (1 - p) x the labels' loss + p x the null class's, summed over the timesteps
        ts = torch.full((4,), t)
        for classes, weight in ((labels, 0.75), (torch.full((4,), 3), 0.25)):
            net.zero_grad()
            prediction = net(scheduler.add_noise(X0, noise, ts), ts, class_labels=classes).sample
            (weight * torch.nn.functional.mse_loss(prediction, noise)).backward()
            expected += net.class_embedding.weight.grad
    torch.testing.assert_close(accumulated, expected, rtol=1e-4, atol=1e-7)
    assert accumulated[[0, 1, 2, 3]].abs().sum(dim=1).min() > 0, "every label used, the null class (3) too"


def test_pruning_traces_the_inputs_the_caller_gives_and_guesses_none():
    """prune_in_place does not look for a class embedding: a class-conditional UNet traced without its class labels
    fails in its own forward, and with them (the caller's example inputs) prunes."""
    with pytest.raises(ValueError, match="class_labels should be provided"):
        prune_in_place(conditional_unet(), 0.5, "magnitude", example())
    net = conditional_unet()
    prune_in_place(net, 0.5, "magnitude", {"sample": example(), "timestep": torch.ones(1, dtype=torch.long),
                                           "class_labels": torch.zeros(1, dtype=torch.long)})
    assert rebuild(net).block_out_channels == (8, 16, 16)


def test_a_class_conditional_unet_prunes_and_rebuilds_with_its_class_embedding():
    from greendiff.pipelines import num_classes_of

    net, labels = conditional_unet(), torch.tensor([0, 2])
    accumulate_taylor_gradients(net, make_noise_scheduler(RecipeConfig()), X0[:2], 3, 0.05,
                                torch.Generator().manual_seed(0), labels=labels, cond_dropout=0.1)
    prune_in_place(net, 0.5, "taylor", {"sample": example(), "timestep": torch.ones(1, dtype=torch.long),
                                        "class_labels": torch.zeros(1, dtype=torch.long)})  # the caller's: it knows the family
    out = rebuild(net)
    assert out.block_out_channels == (8, 16, 16) and num_classes_of(out.unet) == 3
    assert tuple(out.unet.class_embedding.weight.shape) == (4, 32)  # K + 1 rows, 4 x the first level's width
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 900])
    swapped = copy.deepcopy(out.unet)
    swapped.time_proj, swapped.time_embedding = net.time_proj, net.time_embedding
    with torch.no_grad():  # the class rows carried over: the pruned module and the rebuilt model agree per class
        torch.testing.assert_close(swapped(x, t, class_labels=labels).sample, net(x, t, class_labels=labels).sample,
                                   rtol=0, atol=1e-5)
        by_class = out.unet(x[:1].repeat(2, 1, 1, 1), t[:1].repeat(2), class_labels=torch.tensor([0, 2])).sample
    assert (by_class[0] - by_class[1]).abs().max() > 0, "the class still changes the prediction"
