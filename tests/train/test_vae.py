"""The VAE as a latent space (``train/_vae.py``: its folder checked from config.json, safetensors only, the
encode/decode maps at the scaling factor) and training a small one (``train/_vae_train.py``: presets, the loss,
a deterministic loop, the scaling factor of the data, reconstruction scores)."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path

import pytest
import torch

from greendiff.data import load_dataset
from greendiff.errors import UserInputError
from greendiff.evaluate import resolve_extractor
from greendiff.train._vae import (
    DIFFUSERS_DEFAULTS, WEIGHTS_FILE, VaeShape, decode_latents, encode_posterior, latent_size, load_vae, read_vae_shape,
    vae_weights_sha256,
)
from greendiff.train._vae_train import (
    KL_WEIGHT, VAE_PRESETS, build_vae, posterior_latents, reconstruction_quality, scaling_factor_of, train_vae,
    vae_loss,
)


def tiny_vae(**config):
    """A 2-level AutoencoderKL (8, 16 channels) for 1-channel images, 2 latent channels: downsample 2."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    settings = dict(in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=8, latent_channels=2,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    scaling_factor=0.5)
    return AutoencoderKL(**(settings | config))


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vae") / "vae"
    tiny_vae().save_pretrained(folder, safe_serialization=True)
    return folder


def images(n: int = 3, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_shape_is_read_from_config_json_alone(vae_folder):
    assert read_vae_shape(vae_folder) == VaeShape(image_channels=1, latent_channels=2, downsample=2, scaling_factor=0.5)


def test_the_defaults_taken_for_missing_keys_are_diffusers_own():
    from diffusers import AutoencoderKL

    parameters = inspect.signature(AutoencoderKL.__init__).parameters
    assert {key: parameters[key].default for key in DIFFUSERS_DEFAULTS} == DIFFUSERS_DEFAULTS


def test_a_vae_is_loaded_frozen_in_float32_on_the_cpu_without_unpickling(vae_folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling")

    monkeypatch.setattr(torch, "load", refuse)
    vae = load_vae(vae_folder)
    parameters = list(vae.parameters())
    assert not vae.training and not any(p.requires_grad for p in parameters)
    assert {p.dtype for p in parameters} == {torch.float32} and {p.device.type for p in parameters} == {"cpu"}
    assert torch.equal(parameters[0], next(tiny_vae().parameters()))


def test_encode_and_decode_round_trip_shapes_and_scale(vae_folder):
    vae = load_vae(vae_folder)
    x = images()
    mean, std = encode_posterior(vae, x)
    assert mean.shape == std.shape == (3, 2, 8, 8) and mean.dtype == std.dtype == torch.float32
    posterior = vae.encode(x).latent_dist
    assert torch.equal(mean, posterior.mean) and torch.allclose(std, torch.exp(0.5 * posterior.logvar))
    z = 0.5 * (mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(1)))  # diffusion scale
    decoded = decode_latents(vae, z)
    assert decoded.shape == (3, 1, 16, 16) and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1
    assert torch.equal(decoded, vae.decode(z / 0.5).sample.clamp(-1, 1))  # unscaled by the config's factor


def test_the_weights_digest_is_the_safetensors_file_s(vae_folder):
    assert vae_weights_sha256(vae_folder) == hashlib.sha256((vae_folder / WEIGHTS_FILE).read_bytes()).hexdigest()


def test_latent_size_divides_by_the_downsampling_factor():
    shape = VaeShape(3, 4, 8, 0.18215)
    assert latent_size(shape, 64) == 8
    with pytest.raises(UserInputError) as info:
        latent_size(shape, 60)
    assert str(info.value) == ("resolution 60 px is not a multiple of the --vae VAE's downsampling factor 8; "
                               "use --resolution 56 or 64")


def _copy(vae_folder: Path, target: Path, config: dict | None = None, text: str | None = None) -> Path:
    target.mkdir()
    (target / WEIGHTS_FILE).write_bytes((vae_folder / WEIGHTS_FILE).read_bytes())
    raw = json.loads((vae_folder / "config.json").read_text())
    (target / "config.json").write_text(text if text is not None else json.dumps(raw | (config or {})))
    return target


@pytest.mark.parametrize(("change", "expected"), [
    ({"_class_name": "UNet2DModel"}, "config.json is the config of 'UNet2DModel', not of an AutoencoderKL"),
    ({"in_channels": 0}, "config.json: in_channels must be a positive integer, got 0"),
    ({"latent_channels": True}, "config.json: latent_channels must be a positive integer, got True"),
    ({"out_channels": 3}, "config.json: out_channels 3 differs from in_channels 1"),
    ({"scaling_factor": -1.0}, "config.json: scaling_factor must be a finite number > 0, got -1.0"),
    ({"scaling_factor": "0.18"}, "config.json: scaling_factor must be a finite number > 0, got '0.18'"),
    ({"block_out_channels": []}, "config.json: block_out_channels must be a list of 1 to 16 positive integers"),
    ({"norm_num_groups": 3}, "config.json: norm_num_groups 3 does not divide block_out_channels [8, 16]"),
    ({"down_block_types": ["DownEncoderBlock2D"]}, "config.json: down_block_types must list one block per"),
])
def test_a_bad_config_value_is_one_line_naming_the_folder(vae_folder, tmp_path, change, expected):
    folder = _copy(vae_folder, tmp_path / "bad", change)
    with pytest.raises(UserInputError) as info:
        load_vae(folder, "model.vae")
    message = str(info.value)
    assert message.startswith(f"model.vae {folder}: {expected}") and "\n" not in message


def test_a_missing_or_wrong_folder_is_one_line(vae_folder, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    nan = _copy(vae_folder, tmp_path / "nan", text=(vae_folder / "config.json").read_text().replace(
        '"scaling_factor": 0.5', '"scaling_factor": NaN'))
    cases = {tmp_path / "missing": "no such folder", tmp_path / "file": "not a folder",
             tmp_path / "empty": "no config.json; give a diffusers AutoencoderKL folder",
             _copy(vae_folder, tmp_path / "garbage", text="{not json"): "config.json is not valid JSON",
             _copy(vae_folder, tmp_path / "list", text="[1, 2]"): "config.json holds list, not a model config",
             nan: "config.json: scaling_factor must be a finite number > 0, got nan"}
    for folder, expected in cases.items():
        with pytest.raises(UserInputError) as info:
            read_vae_shape(folder)
        assert str(info.value).startswith(f"--vae {folder}: {expected}"), str(info.value)


def test_pickled_weights_are_never_read_and_damaged_weights_are_one_line(vae_folder, tmp_path):
    pickled = _copy(vae_folder, tmp_path / "pickled")
    (pickled / WEIGHTS_FILE).rename(pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(UserInputError) as info:
        load_vae(pickled)
    assert str(info.value) == (f"--vae {pickled}: no {WEIGHTS_FILE} (only pickled diffusion_pytorch_model.bin, which "
                               "greendiff never loads: save it again with save_pretrained(folder, "
                               "safe_serialization=True))")
    damaged = _copy(vae_folder, tmp_path / "damaged")
    (damaged / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(UserInputError) as info:
        load_vae(damaged)
    assert str(info.value).startswith(f"--vae {damaged}: the weights cannot be loaded (") and "\n" not in str(info.value)
    other = _copy(vae_folder, tmp_path / "other", {"latent_channels": 3})  # the weights are of 2 latent channels
    with pytest.raises(UserInputError) as info:
        load_vae(other)
    assert str(info.value).startswith(f"--vae {other}: the weights cannot be loaded (")


# -- training a small VAE -----------------------------------------------------------------------------------------


def test_presets_build_vaes_of_their_shape_from_their_seed_alone():
    for name, preset in VAE_PRESETS.items():
        assert all(w % preset.norm_num_groups == 0 for w in preset.block_out_channels), name
    state = torch.random.get_rng_state()
    vae = build_vae("tiny", image_channels=3, resolution=32, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert tuple(vae.config.block_out_channels) == (32, 64, 64) and VAE_PRESETS["tiny"].downsample == 4
    assert (vae.config.in_channels, vae.config.out_channels, vae.config.latent_channels) == (3, 3, 4)
    with torch.no_grad():
        assert vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean.shape == (1, 4, 8, 8)
    again, other = build_vae("tiny", 3, 32, seed=5), build_vae("tiny", 3, 32, seed=6)
    first = next(vae.parameters())
    assert torch.equal(first, next(again.parameters())) and not torch.equal(first, next(other.parameters()))
    with pytest.raises(UserInputError, match=r"^unknown VAE --preset 'huge': use one of nano, tiny, small$"):
        build_vae("huge", 1)


def test_the_loss_is_the_per_pixel_reconstruction_of_a_posterior_sample_plus_the_weighted_kl():
    vae = tiny_vae()
    x = images(2)
    loss, mse = vae_loss(vae, x, torch.Generator().manual_seed(3), kl_weight=0.25)
    q = vae.encode(x).latent_dist
    eps = torch.randn(q.mean.shape, generator=torch.Generator().manual_seed(3))
    squared = (vae.decode(q.mean + q.std * eps).sample - x).pow(2).sum(dim=(1, 2, 3))
    kl = 0.5 * (q.mean ** 2 + q.logvar.exp() - 1 - q.logvar).sum(dim=(1, 2, 3))
    assert torch.allclose(loss, ((squared + 0.25 * kl) / 256).mean(), rtol=1e-5)
    assert torch.allclose(mse, (squared / 256).mean(), rtol=1e-5) and KL_WEIGHT == 1e-6


def test_training_is_bit_identical_for_the_same_seed_and_changes_the_weights():
    data = load_dataset("digits", 8)
    start = build_vae("nano", 1, 8)
    runs = []
    for _ in range(2):
        vae = build_vae("nano", 1, 8)
        seen = []
        result = train_vae(vae, data, max_steps=2, batch_size=4, lr=1e-3, seed=1, on_step=lambda s, l: seen.append(s))
        runs.append((vae.state_dict(), result))
        assert seen == [1, 2] and result.steps == 2 and not vae.training
    (first, a), (second, b) = runs
    assert a == b and all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["encoder.conv_in.weight"], start.state_dict()["encoder.conv_in.weight"])


def test_the_scaling_factor_is_one_over_the_std_of_the_sampled_latents():
    vae = tiny_vae()
    u8 = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    latents = posterior_latents(vae, u8, torch.Generator().manual_seed(4), batch_size=2)  # chunks of 2 images
    mean, std = encode_posterior(vae, u8.float() / 127.5 - 1)
    expected = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(latents, expected, atol=1e-6)
    factor = scaling_factor_of(latents)
    assert factor == pytest.approx(1 / float(expected.double().std()), rel=1e-6)
    assert float((latents.double() * factor).std()) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(UserInputError, match="the VAE's latents have std 0"):
        scaling_factor_of(torch.ones(4, 2, 2, 2))


def test_reconstruction_scores_against_the_originals():
    extractor, name = resolve_extractor("mnist")
    originals = load_dataset("digits", 8).images[:16]
    perfect = reconstruction_quality(originals, originals.float() / 127.5 - 1, extractor, name)
    assert perfect.mse < 1e-14 and (perfect.psnr_db, perfect.images, perfect.features) == (100.0, 16, "mnist")
    assert abs(perfect.fid) < 1e-3
    flat = torch.full((8, 1, 8, 8), 51, dtype=torch.uint8)  # 0.2 in [0, 1]
    off = reconstruction_quality(flat, torch.full((8, 1, 8, 8), 0.3 * 2 - 1), extractor, name)  # 0.3: error 0.1
    assert off.mse == pytest.approx(0.01) and off.psnr_db == pytest.approx(20.0)
    assert math.isfinite(off.fid) and off.fid > perfect.fid
