"""The VAE training job: a folder plain diffusers loads with the scaling factor of its data, metered as one
ledger run of kind ``vae`` (phases ``train`` and ``eval``), and nothing left behind by bad input or a failure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.workflows import VaeTrainJob, VaeTrainOutcome, run_vae_train
from tests.workflows.conftest import measurement

#: A few steps of the nano VAE on the bundled digits at 8 px.
TINY = dict(dataset="digits", resolution=8, max_steps=3, batch_size=8, eval_images=16)


def job(output: Path, ledger: Path, **changes) -> VaeTrainJob:
    return VaeTrainJob(output_dir=output, measurement=measurement(ledger), **(TINY | changes))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[VaeTrainOutcome, Path]:
    root = tmp_path_factory.mktemp("vae")
    return run_vae_train(job(root / "vaes" / "digits", root / "l.sqlite")), root


def test_the_folder_loads_in_plain_diffusers_with_the_stored_scaling_factor(trained):
    from diffusers import AutoencoderKL

    outcome, root = trained
    folder = root / "vaes" / "digits"
    assert outcome.folder == folder and outcome.steps == 3 and outcome.final_loss > 0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors",
                                                        "emissions.json", "vae_train.json"]
    assert [p.name for p in folder.parent.iterdir()] == ["digits"]  # no staging folder left
    vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    assert vae.config.scaling_factor == outcome.scaling_factor == outcome.shape.scaling_factor
    shape = (vae.config.in_channels, vae.config.latent_channels, outcome.shape.downsample, outcome.latent_side)
    assert shape == (1, 4, 4, 2)


def test_the_stored_scaling_factor_is_one_over_the_std_of_the_data_s_latents(trained):
    from greendiff.data import load_dataset
    from greendiff.train._vae import load_vae
    from greendiff.train._vae_train import posterior_latents

    outcome, root = trained
    images = load_dataset("digits", 8).reference_images(16, 0)  # the job's eval_images, its seed
    latents = posterior_latents(load_vae(outcome.folder), images, torch.Generator().manual_seed(0))
    assert outcome.scaling_factor == pytest.approx(1 / float(latents.double().std()), rel=1e-9)


def test_it_is_one_ledger_run_of_kind_vae_with_train_and_eval_phases_and_a_record(trained):
    outcome, root = trained
    runs = Ledger(root / "l.sqlite").list_runs()
    assert [(r.kind, r.status, r.name) for r in runs] == [("vae", "completed", "digits")]
    assert runs[0].command == ("greendiff vae train --dataset digits --resolution 8 --preset nano --max-steps 3 "
                               f"--output-dir {outcome.folder}")
    summary = outcome.summary
    assert {p.name for p in summary.phases} == {"train", "eval"} and summary.energy_kwh > 0
    record = json.loads((outcome.folder / "vae_train.json").read_text())
    recon = outcome.reconstruction
    assert record["scaling_factor"] == outcome.scaling_factor and record["ledger_run_id"] == summary.run_id
    assert record["reconstruction"] == {"mse": recon.mse, "psnr_db": recon.psnr_db, "fid": recon.fid, "images": 16,
                                        "features": "mnist"}
    # PSNR is averaged over the images: never below the PSNR of their mean MSE (Jensen)
    assert 0 < recon.mse < 1 and recon.psnr_db >= 10 * math.log10(1 / recon.mse) - 1e-9
    assert record["job"]["preset"] == "nano" and record["job"]["max_steps"] == 3
    assert json.loads((outcome.folder / "emissions.json").read_text())["ledger_run_ids"] == [summary.run_id]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"resolution": 10}, "resolution 10 px is not a multiple of the nano preset VAE's downsampling factor 4; use "
                         "--resolution 8 or 12"),
    ({"preset": "huge"}, "unknown VAE --preset 'huge': use one of nano, tiny, small"),
    ({"dataset": "nope"}, "unknown dataset 'nope': use mnist, digits, an image folder, or a .npy/.npz file"),
    ({"batch_size": 5000}, "--batch-size 5000 is more than the 1,797 images of dataset digits: lower it"),
    ({"features": "fancy"}, "unknown --features 'fancy': use mnist or inception:PATH"),
])
def test_bad_input_is_one_line_before_anything_is_created_or_recorded(tmp_path, changes, expected):
    with pytest.raises(UserInputError) as info:
        run_vae_train(job(tmp_path / "new" / "vae", tmp_path / "l.sqlite", **changes))
    assert str(info.value) == expected
    assert not (tmp_path / "new").exists() and not Ledger(tmp_path / "l.sqlite").list_runs()


def test_a_folder_that_holds_anything_or_is_a_file_is_refused(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    for output, why in ((taken, "exists and is not empty: give a new folder"), (tmp_path / "file", "is a file")):
        with pytest.raises(UserInputError) as info:
            run_vae_train(job(output, tmp_path / "l.sqlite"))
        assert str(info.value).startswith(f"--output-dir {output} {why}")
    assert (taken / "keep.txt").read_text() == "mine" and not Ledger(tmp_path / "l.sqlite").list_runs()


def test_a_failure_while_training_leaves_no_folder_and_records_the_run_failed(tmp_path, monkeypatch):
    import greendiff.train as vae_train  # the workflow calls the public name

    def fail(*args, **kwargs):
        raise UserInputError("the data failed at step 2")

    monkeypatch.setattr(vae_train, "train_vae", fail)
    root = tmp_path / "out"
    (root / "empty").mkdir(parents=True)
    for output in (root / "made" / "parents" / "vae", root / "empty"):
        with pytest.raises(UserInputError, match="the data failed at step 2"):
            run_vae_train(job(output, tmp_path / "l.sqlite"))
    assert [p.name for p in root.iterdir()] == ["empty"] and not any((root / "empty").iterdir())
    assert [r.status for r in Ledger(tmp_path / "l.sqlite").list_runs()] == ["failed", "failed"]


def test_job_fields_are_checked_as_the_flags_are():
    with pytest.raises(UserInputError, match=r"^--max-steps must be a positive integer up to 1000000000, got 0$"):
        VaeTrainJob(output_dir="o", max_steps=0)
    with pytest.raises(UserInputError, match=r"^--lr must be a positive number up to 1, got 0.0$"):
        VaeTrainJob(output_dir="o", lr=0.0)
    with pytest.raises(TypeError, match="VaeTrainJob.preset must be a str"):
        VaeTrainJob(output_dir="o", preset=3)
    assert VaeTrainJob(output_dir="o").output_dir == Path("o")
