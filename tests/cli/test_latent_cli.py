"""``greendiff train`` in latent space from the command line: bad input is one line, exit 2, and nothing is
created (no run directory, no ledger row, no latent cache); a good run trains, samples and evaluates."""

from __future__ import annotations

import json

import pytest

from greendiff.ledger import Ledger
from tests.cli.test_train_cli import run_cli

TINY = ["--preset", "nano", "--dataset", "digits", "--resolution", "16", "--batch-size", "16", "--sample-steps", "2",
        "--set", "run.num_samples=4", "--max-steps", "2"]
UNET = ["--set", "model.block_out_channels=8,16"]


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from greendiff.train._vae_train import build_vae

    folder = tmp_path_factory.mktemp("vae")
    build_vae("nano", 1, resolution=16).save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENDIFF_LEDGER", str(tmp_path / "ledger.sqlite"))
    monkeypatch.setenv("GREENDIFF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def bad(vae_dir, tmp_path):
    """(name, extra argv, the message's start) for each bad input."""
    rgb = tmp_path / "rgb-vae"
    rgb.mkdir()
    config = json.loads((vae_dir / "config.json").read_text())
    (rgb / "config.json").write_text(json.dumps({**config, "in_channels": 3, "out_channels": 3}))
    (rgb / "diffusion_pytorch_model.safetensors").write_bytes((vae_dir / "diffusion_pytorch_model.safetensors").read_bytes())
    empty = tmp_path / "no-config"
    empty.mkdir()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((vae_dir / "config.json").read_text())
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    from diffusers import UNet2DModel

    pixel_unet = tmp_path / "pixel-unet"
    UNet2DModel(sample_size=4, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                norm_num_groups=8).save_pretrained(str(pixel_unet), safe_serialization=True)
    return [
        ("a pixel UNet to start a latent one", [*UNET, "--vae", str(vae_dir), "--set", f"model.init_from={pixel_unet}"],
         "its in_channels 1 are not the latent channels of model.vae (4)"),
        ("no such folder", [*UNET, "--vae", str(tmp_path / "missing")], "model.vae"),
        ("a folder without config.json", [*UNET, "--vae", str(empty)], "model.vae"),
        ("pickled weights only", [*UNET, "--vae", str(pickled)], "model.vae"),
        ("a VAE for 3-channel images", [*UNET, "--vae", str(rgb)], "model.vae"),
        ("a patch size that does not divide the latent side", ["--vae", str(vae_dir), "--backbone", "dit",
                                                               "--conditioning", "class", "--patch-size", "3"],
         "model.patch_size 3 does not divide the latent side 4 (data.resolution 16 / the VAE's downsampling 4)"),
        ("an unknown objective", [*UNET, "--objective", "rectified"], "optim.objective must be one of epsilon, v, flow"),
        ("a DiT without a VAE", ["--backbone", "dit", "--conditioning", "class"], "model.backbone = dit trains in"),
        ("an unconditional DiT", ["--vae", str(vae_dir), "--backbone", "dit"], "model.backbone = dit is class-conditional"),
        ("UNet widths for a DiT", [*UNET, "--vae", str(vae_dir), "--backbone", "dit", "--conditioning", "class"],
         "model.block_out_channels shapes the UNet backbone"),
        ("a resolution the VAE cannot halve twice", [*UNET, "--vae", str(vae_dir), "--resolution", "18"], "model.vae"),
    ]


def test_bad_latent_input_is_one_line_exit_2_and_creates_nothing(capsys, env, vae_dir):
    for name, extra, start in bad(vae_dir, env):
        code, _, err = run_cli(capsys, "train", *TINY, *extra, "--output-dir", str(env / "runs"))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, f"{name}: {code} {err}"
        assert lines[0].startswith("greendiff: error: ") and start in lines[0], f"{name}: {lines[0]}"
        assert not (env / "runs").exists() and not (env / "cache").exists(), name
        ledger = env / "ledger.sqlite"
        assert not ledger.exists() or Ledger(ledger).list_runs() == [], name


def test_a_latent_dit_trains_samples_and_evaluates_from_the_command_line(capsys, env, vae_dir):
    code, _, err = run_cli(capsys, "train", *TINY, "--vae", str(vae_dir), "--backbone", "dit", "--preset", "pico", "--conditioning", "class",
                           "--objective", "flow", "--output-dir", str(env / "runs"), "--name", "dit")
    assert code == 0, err
    assert "DiT pico (patch 2) on 4x4x4 latents, flow" in err and "encode" in err
    (run,) = (env / "runs").iterdir()
    code, _, err = run_cli(capsys, "sample", "--run", str(run), "--samples", "2", "--class", "3", "-o", str(env / "s.npz"))
    assert code == 0, err
    import numpy as np

    with np.load(env / "s.npz", allow_pickle=False) as saved:
        assert saved["images"].shape == (2, 16, 16, 1) and saved["labels"].tolist() == [3, 3]
    assert "euler steps" in err
    code, out, err = run_cli(capsys, "eval", "--run", str(run), "--samples", "20", "--sample-steps", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["sampler"] == "euler"
