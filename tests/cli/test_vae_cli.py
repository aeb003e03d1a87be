"""``greendiff vae train``: a folder made and rendered with the next command, exit 0; bad input one line, exit 2,
nothing created."""

from __future__ import annotations

import json

import pytest

from greendiff.cli._app import main

TINY = ["--dataset", "digits", "--resolution", "8", "--max-steps", "2", "--batch-size", "4", "--eval-images", "8",
        "--country", "FRA", "--no-gpu"]


def test_vae_train_saves_the_folder_and_tells_the_next_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["vae", "train", *TINY, "--preset", "nano", "--lr", "0.002", "--seed", "3", "--output-dir", "vaes/d"]) == 0
    err = capsys.readouterr().err
    record = json.loads((tmp_path / "vaes" / "d" / "vae_train.json").read_text())
    factor, recon = record["scaling_factor"], record["reconstruction"]
    assert (record["job"]["lr"], record["job"]["seed"], record["steps"]) == (0.002, 3, 2)
    assert "VAE nano saved to vaes/d: 8x8 images -> 4x2x2 latents, 2 steps" in err
    assert f"scaling factor {factor:.4f} (1/std of the latents of 8 images; in its config.json)" in err
    assert (f"reconstruction of 8 images: MSE {recon['mse']:.5f} · PSNR {recon['psnr_db']:.2f} dB · "
            f"FID {recon['fid']:.2f} (mnist features)") in err
    assert f"(ledger run {record['ledger_run_id']})" in err and " CO2e" in err
    assert err.rstrip().endswith("next: greendiff train --vae vaes/d --dataset digits --resolution 8")


@pytest.mark.parametrize(("argv", "message"), [
    (["--output-dir", "o", "--resolution", "6"], "resolution 6 px is not a multiple of the nano preset VAE's "
                                                 "downsampling factor 4; use --resolution 4 or 8"),
    (["--output-dir", "o", "--preset", "huge"], "unknown VAE --preset 'huge': use one of nano, tiny, small"),
    (["--output-dir", "o", "--max-steps", "0"], "--max-steps must be a positive integer up to 1000000000, got '0' (see 'greendiff vae train --help')"),
    (["--output-dir", "o", "--lr", "-1"], "--lr must be a positive number up to 1, got '-1' (see 'greendiff vae train --help')"),
    (["--output-dir", "o", "--eval-images", "2"], "--eval-images must be >= 4 and at most 1000000, got '2' (see 'greendiff vae train --help')"),
    (["--output-dir", "taken"], "--output-dir taken exists and is not empty: give a new folder"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_created(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert main(["vae", "train", "--dataset", "digits", "--resolution", "8", *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"greendiff: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_the_output_folder_is_required(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["vae", "train", "--dataset", "digits"]) == 2
    assert "Missing option '--output-dir'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
