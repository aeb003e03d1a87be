"""greendiff.pipelines.ClassConditionalPipeline: save, load, generate by class; bad input is one line."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from greendiff.errors import UserInputError

K = 3


def tiny_pipeline(seed: int = 0):
    from diffusers import DDIMScheduler, UNet2DModel

    from greendiff.pipelines import ClassConditionalPipeline

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, num_class_embeds=K + 1)
    with torch.no_grad():
        unet.class_embedding.weight.mul_(50)  # make the (untrained) classes visibly different
    pipe = ClassConditionalPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, labels, w=2.0, seed=0, output_type="pt"):
    return pipe(labels, guidance_scale=w, num_inference_steps=2, generator=torch.Generator().manual_seed(seed),
                output_type=output_type).images


def test_save_pretrained_then_from_pretrained_generates_the_same_images_by_class(tmp_path):
    from greendiff.pipelines import ClassConditionalPipeline

    pipe = tiny_pipeline()
    pipe.save_pretrained(str(tmp_path / "pipe"))
    assert (tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ClassConditionalPipeline.from_pretrained(str(tmp_path / "pipe"))
    loaded.set_progress_bar_config(disable=True)
    assert (loaded.num_classes, loaded.null_class) == (K, K)
    mixed = generate(loaded, [2, 0, 1])
    assert mixed.shape == (3, 1, 8, 8) and float(mixed.min()) >= 0 and float(mixed.max()) <= 1
    assert torch.equal(mixed, generate(pipe, [2, 0, 1]))
    one = generate(loaded, 1)
    assert one.shape == (1, 1, 8, 8) and torch.equal(one, generate(loaded, [1]))
    assert not torch.equal(generate(loaded, [0]), one)  # the class changes the image, same noise


def test_output_types_follow_diffusers():
    pipe = tiny_pipeline()
    pt = generate(pipe, [0, 1])
    as_np = generate(pipe, [0, 1], output_type="np")
    pil = generate(pipe, [0, 1], output_type="pil")
    assert isinstance(as_np, np.ndarray) and as_np.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(as_np, pt.permute(0, 2, 3, 1).numpy())
    assert len(pil) == 2 and pil[0].size == (8, 8)
    result = pipe([0], num_inference_steps=2, return_dict=False)
    assert isinstance(result, tuple) and len(result) == 1


def test_the_pipeline_and_the_training_sampler_draw_the_same_images():
    from diffusers import DDIMScheduler

    from greendiff.train import sample_images

    pipe = tiny_pipeline()
    ours = sample_images(pipe.unet, DDIMScheduler(num_train_timesteps=100), 3, 2, (1, 8, 8),
                         torch.Generator().manual_seed(0), labels=[2, 0, 1], guidance_scale=2.0)
    torch.testing.assert_close(generate(pipe, [2, 0, 1]), (ours + 1) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("labels, message", [(3, "class id 3 is outside 0..2"), ([0, -1], "class id -1 is outside"),
                                             ([], "no class labels"), ([0.5], "must be integers")])
def test_a_bad_class_id_is_one_line(labels, message):
    with pytest.raises(ValueError, match=message) as info:
        generate(tiny_pipeline(), labels)
    assert "\n" not in str(info.value) and isinstance(info.value, UserInputError)


@pytest.mark.parametrize("w", [float("nan"), float("inf"), -1.0])
def test_a_non_finite_or_negative_guidance_scale_is_one_line(w):
    with pytest.raises(ValueError, match="guidance scale must be a finite number >= 0") as info:
        generate(tiny_pipeline(), [0], w=w)
    assert "\n" not in str(info.value)


def test_an_unconditional_unet_takes_no_classes():
    from diffusers import DDIMScheduler, UNet2DModel

    from greendiff.pipelines import ClassConditionalPipeline

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    with pytest.raises(ValueError, match="this model is unconditional"):
        generate(ClassConditionalPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100)), [0])


class Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def assert_never_unpickles(pipe, component: str, folder) -> None:
    """Save ``pipe`` in ``folder``, swap ``component``'s safetensors for a pickled .bin that would leave a file
    when unpickled, and check that the pipeline's ``from_pretrained`` refuses it without unpickling."""
    pipe.save_pretrained(str(folder))
    (folder / component / "diffusion_pytorch_model.safetensors").unlink()
    marker = folder.parent / "pwned"
    (folder / component / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(Exception):  # noqa: B017 - diffusers' own error for missing safetensors weights
        type(pipe).from_pretrained(str(folder))
    assert not marker.exists()


def test_from_pretrained_never_reads_a_pickled_bin(tmp_path):
    assert_never_unpickles(tiny_pipeline(), "unet", tmp_path / "pipe")


def test_the_package_imports_alone_without_the_rest_of_greendiff():
    code = ("import sys; import greendiff.pipelines as p; p.ClassConditionalPipeline; p.LatentPipeline; "
            "print(sorted(m for m in sys.modules if m.startswith('greendiff.') and not m.startswith('greendiff.pipelines')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['greendiff.errors']"


@pytest.mark.parametrize("labels", [[np.int64(2), np.int32(0), 1], np.array([2, 0, 1]), torch.tensor([2, 0, 1]),
                                    [torch.tensor(2), torch.tensor(0), np.uint8(1)], (2, 0, 1)])
def test_numpy_and_tensor_integers_are_class_ids(labels):
    pipe = tiny_pipeline()
    assert torch.equal(generate(pipe, labels), generate(pipe, [2, 0, 1]))


@pytest.mark.parametrize("labels", [np.int64(1), torch.tensor(1), np.array(1)])
def test_one_integral_scalar_is_one_class_id(labels):
    pipe = tiny_pipeline()
    assert torch.equal(generate(pipe, labels), generate(pipe, [1]))


@pytest.mark.parametrize("labels, message", [
    (None, "class_labels is None; give a class id in 0..K-1 or a list of them"),
    ([True, 0], "class labels must be integers, got \\[True, 0\\]"),
    ([np.bool_(True)], "class labels must be integers"),
    (np.array([True, False]), "class labels must be integers, got a bool ndarray"),
    (np.array([0.0, 1.0]), "class labels must be integers, got a float64 ndarray"),
    ([np.float32(1.0)], "class labels must be integers"),
    (torch.tensor([[0, 1]]), "class labels must be one id or a 1-d list of them, got shape \\(1, 2\\)"),
    (np.array([1, 3]), "class id 3 is outside 0..2"),
    ([np.int64(-1)], "class id -1 is outside 0..2"),
])
def test_labels_that_are_not_class_ids_are_one_line(labels, message):
    with pytest.raises(UserInputError, match=message) as info:
        generate(tiny_pipeline(), labels)
    assert "\n" not in str(info.value)


def named_pipeline(names=("cat", "dog", "bird")):
    from greendiff.pipelines import ClassConditionalPipeline

    pipe = tiny_pipeline()
    named = ClassConditionalPipeline(unet=pipe.unet, scheduler=pipe.scheduler, class_names=names)
    named.set_progress_bar_config(disable=True)
    return named


def test_class_names_are_saved_in_model_index_and_map_to_ids(tmp_path):
    import json

    from greendiff.pipelines import ClassConditionalPipeline

    named_pipeline().save_pretrained(str(tmp_path / "pipe"))
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["class_names"] == ["cat", "dog", "bird"]
    loaded = ClassConditionalPipeline.from_pretrained(str(tmp_path / "pipe"))
    loaded.set_progress_bar_config(disable=True)
    assert loaded.class_names == ("cat", "dog", "bird")
    assert loaded.class_ids(["bird", "cat", "bird"]) == [2, 0, 2] and loaded.class_ids("dog") == [1]
    assert torch.equal(generate(loaded, ["bird", "cat"]), generate(loaded, [2, 0]))
    assert torch.equal(generate(loaded, "dog"), generate(loaded, 1))


def test_an_export_without_class_names_still_loads_and_takes_ids(tmp_path):
    import json

    from greendiff.pipelines import ClassConditionalPipeline

    tiny_pipeline().save_pretrained(str(tmp_path / "pipe"))
    index = tmp_path / "pipe" / "model_index.json"
    raw = json.loads(index.read_text())
    raw.pop("class_names")  # as exported before class names were recorded
    index.write_text(json.dumps(raw))
    loaded = ClassConditionalPipeline.from_pretrained(str(tmp_path / "pipe"))
    loaded.set_progress_bar_config(disable=True)
    assert loaded.class_names is None and generate(loaded, [0, 2]).shape == (2, 1, 8, 8)
    with pytest.raises(UserInputError, match="this pipeline was saved without class names; ask for class ids 0..K-1"):
        generate(loaded, ["cat"])


@pytest.mark.parametrize("ask, message", [(["cat", "fish"], "unknown class 'fish'; this model's classes are 'cat', 'dog', 'bird'"),
                                          (["cat", 1], "class names must be strings, got 1")])
def test_an_unknown_class_name_is_one_line(ask, message):
    with pytest.raises(UserInputError, match=message) as info:
        generate(named_pipeline(), ask)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("names, message", [(("cat", "dog"), "2 class names for a model of 3 classes"),
                                            (("cat", "cat", "dog"), "class name 'cat' is given twice"),
                                            (("cat", "", "dog"), "class names must be a list of non-empty strings"),
                                            ("cat", "class names must be a list of non-empty strings")])
def test_class_names_that_do_not_fit_the_model_are_refused(names, message):
    with pytest.raises(UserInputError, match=message):
        named_pipeline(names)


def test_guided_sampling_does_not_clip_the_predicted_image():
    """Clipping x0 while the step keeps the guided noise broke guidance (class accuracy fell as w grew); a
    guided step uses the scheduler without clip_sample, an unguided one the scheduler as it is."""
    from diffusers import DDIMScheduler

    from greendiff.pipelines import guided_scheduler

    ddim = DDIMScheduler(num_train_timesteps=1000)
    assert ddim.config.clip_sample is True
    for w in (0.5, 2.0, 4.0):
        assert guided_scheduler(ddim, w).config.clip_sample is False
    assert guided_scheduler(ddim, 1.0) is ddim and guided_scheduler(ddim, 0.0) is ddim
    assert ddim.config.clip_sample is True  # the run's own scheduler is not changed


def test_num_classes_of_reads_a_dit_and_looks_through_wrappers():
    from tests.test_pipelines_latent import tiny_dit, tiny_unet

    from greendiff.pipelines import num_classes_of, unwrapped

    def wrap(net, attribute):  # as torch.compile (``_orig_mod``) and data parallelism (``module``) keep it
        wrapper = torch.nn.Module()
        setattr(wrapper, attribute, net)
        return wrapper

    dit = tiny_dit(num_classes=5)
    wrapped = wrap(wrap(dit, "_orig_mod"), "module")
    assert unwrapped(wrapped) is dit and unwrapped(dit) is dit
    assert (num_classes_of(dit), num_classes_of(wrapped), num_classes_of(wrap(tiny_unet(4), "_orig_mod"))) == (5, 5, 4)
    assert num_classes_of(tiny_unet()) == 0 and num_classes_of(tiny_pipeline().unet) == K


@pytest.mark.parametrize("w", [1.0, 0.0, 2.5])
def test_guided_output_gives_a_dit_one_timestep_per_image(w):
    from tests.test_pipelines_latent import tiny_dit

    from greendiff.pipelines import guided_noise, guided_output

    dit, labels = tiny_dit(), torch.tensor([2, 0])
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(37)  # a scheduler's 0-d timestep: DiT's timestep embedding needs (B,)
    cond = dit(x, t.expand(2), class_labels=labels).sample
    uncond = dit(x, t.expand(2), class_labels=torch.tensor([K, K])).sample
    torch.testing.assert_close(guided_output(dit, x, t, labels, w), guided_noise(cond, uncond, w), rtol=0, atol=1e-5)
    assert torch.equal(guided_output(dit, x, 37, labels, w), guided_output(dit, x, t, labels, w))


@pytest.mark.parametrize("t, w", [(torch.tensor(37), 1.0), (torch.tensor(37), 0.0), (torch.tensor(37), 2.5), (37, 2.5),
                                  (torch.tensor([37, 37]), 1.0)])
def test_guided_output_of_a_unet_is_unchanged_by_the_timestep_broadcast(t, w):
    """The UNet broadcasts a 0-d timestep itself: the same numbers as before guided_output broadcast it."""
    from tests.test_pipelines_latent import tiny_unet

    from greendiff.pipelines import guided_noise, guided_output

    unet = tiny_pipeline().unet
    x, labels = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([2, 0])
    cond, uncond = unet(torch.cat([x, x]), 37, class_labels=torch.tensor([2, 0, K, K])).sample.chunk(2)
    expected = {1.0: cond, 0.0: uncond}.get(w, guided_noise(cond, uncond, w))
    torch.testing.assert_close(guided_output(unet, x, t, labels, w), expected, rtol=0, atol=1e-6)
    unconditional = tiny_unet()
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(guided_output(unconditional, x, t, None), unconditional(x, 37).sample)
