"""train._dit: DiT presets sized like the UNet presets, patch sizes, deterministic training forwards, and the
export as a plain diffusers DiTPipeline (widened to its null class 1000) and back."""

from __future__ import annotations

import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.train._config import ModelConfig
from greendiff.train._dit import (
    DIT_PRESETS, build_dit, check_patch_size, compact_dit, export_dit_pipeline,
)
from greendiff.train._model import PRESETS, build_unet, count_macs, count_parameters
from tests.test_pipelines_latent import NAMES, latent_pipeline, tiny_dit, tiny_vae

K = 3


def test_presets_have_the_unet_presets_names_and_about_their_parameters():
    assert list(DIT_PRESETS) == list(PRESETS)
    for name in DIT_PRESETS:
        with torch.device("meta"):  # no memory: the base presets have 72 M parameters each
            dit = build_dit(name, 2, 8, 4, 10)
            unet = build_unet(ModelConfig(preset=name), 8, 4, 1000, num_classes=10)
        ratio = count_parameters(dit) / count_parameters(unet)
        assert 0.9 <= ratio <= 1.1, (name, ratio)
    lrs = [preset.lr for preset in DIT_PRESETS.values()]
    assert lrs == sorted(lrs, reverse=True) and 1e-4 <= min(lrs) and max(lrs) <= 1e-3


def test_parameters_and_macs_are_the_module_docstring_table():
    pico, nano = build_dit("pico", 2, 8, 4, 10), build_dit("nano", 2, 8, 4, 10)
    assert (count_parameters(pico), count_macs(pico, 8, 4)) == (38_720, 265_984)
    assert (count_parameters(nano), count_macs(nano, 8, 4)) == (174_448, 1_397_760)
    # the attention the CPU's FLOP counter leaves out is counted: 2·N²·width per layer, 16 tokens, width 16, 4 layers
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pico(torch.zeros(1, 4, 8, 8), torch.tensor([10]), class_labels=torch.tensor([0]))
    assert count_macs(pico, 8, 4) - counter.get_total_flops() // 2 == 2 * 16 * 16 * 16 * 4


def test_a_patch_size_that_does_not_divide_the_latent_side_is_one_line():
    check_patch_size(4, 8)
    with pytest.raises(UserInputError) as info:
        check_patch_size(3, 8, resolution=32, downsample=4)
    assert str(info.value) == ("model.patch_size 3 does not divide the latent side 8 (data.resolution 32 / the VAE's "
                               "downsampling 4): pick a divisor of 8 (1, 2, 4, 8)")
    for bad in (0, -2, True, 2.0):
        with pytest.raises(UserInputError, match="model.patch_size must be a positive integer"):
            check_patch_size(bad, 8)
    with pytest.raises(UserInputError, match="does not divide the latent side 6"):
        build_dit("pico", 4, 6, 4, 10)


@pytest.mark.parametrize("preset, classes, message", [
    ("huge", 10, "unknown model preset 'huge'; use one of pico, nano, tiny, small, base"),
    ("pico", 0, "model.backbone dit is class-conditional"),
    ("pico", -1, "model.num_classes must be an integer between 0"),
])
def test_bad_builds_are_one_line(preset, classes, message):
    with pytest.raises(UserInputError, match=message):
        build_dit(preset, 2, 8, 4, classes)


def test_the_built_dit_has_k_classes_a_null_row_sdpa_and_no_random_label_dropout():
    from diffusers import DiTTransformer2DModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    from greendiff.pipelines import num_classes_of

    dit = build_dit("pico", 2, 8, 4, K).train()
    assert type(dit) is DiTTransformer2DModel and num_classes_of(dit) == K
    assert dit.config.num_embeds_ada_norm == K and dit.config.out_channels == 4
    embedder = dit.transformer_blocks[0].norm1.emb.class_embedder
    assert embedder.embedding_table.weight.shape == (K + 1, 16)  # ids 0..K-1, null class K
    assert torch.equal(embedder(torch.tensor([K, 0])), embedder.embedding_table.weight[[K, 0]])
    processors = [m.processor for m in dit.modules() if hasattr(m, "processor")]
    assert len(processors) == 4 and all(isinstance(p, AttnProcessor2_0) for p in processors)

    x, t, labels = torch.randn(64, 4, 8, 8), torch.full((64,), 500), torch.arange(64) % K
    torch.manual_seed(0)
    first = dit(x, t, class_labels=labels).sample
    assert torch.equal(dit(x, t, class_labels=labels).sample, first)  # training mode, another global RNG state
    plain = DiTTransformer2DModel.from_config(dit.config).train()  # diffusers' own: drops 10 % of labels at random
    plain.load_state_dict(dit.state_dict())
    torch.manual_seed(0)
    assert not torch.equal(plain(x, t, class_labels=labels).sample, first)


def test_the_exported_dit_pipeline_loads_in_plain_diffusers_and_samples_as_our_sampler(tmp_path):
    from diffusers import DDIMScheduler, DiTPipeline

    dit, scheduler = tiny_dit(K), DDIMScheduler(num_train_timesteps=100)  # clip_sample on: export turns it off
    export_dit_pipeline(dit, tiny_vae(), scheduler, tmp_path / "pipe", class_names=NAMES)
    pipe = DiTPipeline.from_pretrained(str(tmp_path / "pipe"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.labels == {"bird": 2, "cat": 0, "dog": 1}
    assert pipe.transformer.config.num_embeds_ada_norm == 1000 and pipe.scheduler.config.clip_sample is False
    theirs = pipe(class_labels=pipe.get_label_ids(["bird", "cat"]), guidance_scale=3.0, num_inference_steps=3,
                  generator=torch.Generator().manual_seed(0), output_type="pt").images
    ours = latent_pipeline(dit, scheduler)([2, 0], guidance_scale=3.0, num_inference_steps=3,
                                           generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert not torch.equal(ours[0], ours[1])

    table = pipe.transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
    null = dit.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight[K]
    assert torch.equal(table[:K + 1], dit.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight)
    assert torch.equal(table[K:], null.expand(1001 - K, -1))  # unseen ids and the null class 1000: the null row
    back = compact_dit(pipe.transformer, K)
    assert back.config.num_embeds_ada_norm == K
    assert back.state_dict().keys() == dit.state_dict().keys()
    assert all(torch.equal(back.state_dict()[key], value) for key, value in dit.state_dict().items())


def test_compact_dit_keeps_a_dit_of_k_classes_and_refuses_other_widths():
    dit = tiny_dit(K)
    assert compact_dit(dit, K) is dit
    with pytest.raises(ValueError, match="compact_dit takes a DiT of 1000 classes"):
        compact_dit(dit, 2)


def test_a_dit_pipeline_export_that_cannot_be_made_creates_nothing(tmp_path):
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    with pytest.raises(UserInputError, match="a DiT with 1,001 classes cannot be saved as a diffusers DiTPipeline"):
        export_dit_pipeline(tiny_dit(1001), tiny_vae(), DDIMScheduler(), tmp_path / "pipe")
    with pytest.raises(ValueError, match="DiTPipeline cannot step a FlowMatchEulerDiscreteScheduler"):
        export_dit_pipeline(tiny_dit(K), tiny_vae(), FlowMatchEulerDiscreteScheduler(), tmp_path / "pipe")
    with pytest.raises(UserInputError, match="2 class names for a model of 3 classes"):
        export_dit_pipeline(tiny_dit(K), tiny_vae(), DDIMScheduler(), tmp_path / "pipe", class_names=("a", "b"))
    assert list(tmp_path.iterdir()) == []
