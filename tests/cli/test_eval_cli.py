from __future__ import annotations

import json

import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger, default_ledger_path
from tests.cli.test_train_cli import TINY


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    assert main(["train", *TINY, "--max-steps", "4", "--output-dir", str(root / "runs"),
                 "--ledger", str(root / "l.sqlite")]) == 0
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def test_eval_reports_metrics_spread_and_its_own_energy(capsys, trained_run):
    code, out, err = run_cli(capsys, "eval", "--run", str(trained_run), "--samples", "40", "--seeds", "2",
                             "--kid-subset", "20", "--sample-steps", "3", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["features"] == "mnist" and len(report["results"]) == 2
    first = report["results"][0]
    assert first["fid"] > 0 and 0 <= first["precision"] <= 1 and 0 <= first["recall"] <= 1 and first["n"] == 40
    assert set(report["spread"]) == {"fid", "kid", "precision", "recall"}
    assert report["energy_kwh"] > 0
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.kind == "eval" and run.summary["phases"][0]["name"] == "eval"


def test_eval_is_deterministic_for_a_fixed_seed(capsys, trained_run):
    args = ["eval", "--run", str(trained_run), "--samples", "20", "--kid-subset", "10", "--sample-steps", "2", "--json"]
    first = json.loads(run_cli(capsys, *args)[1])["results"]
    second = json.loads(run_cli(capsys, *args)[1])["results"]
    assert first == second


def test_eval_of_fewer_than_1000_images_takes_them_all_for_kid_and_shows_progress(capsys, trained_run):
    # issue 20: `greendiff eval --run R --n 200` failed: --kid-subset defaulted to 1,000
    code, out, err = run_cli(capsys, "eval", "--run", str(trained_run), "--n", "20", "--steps", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["n"] == 20
    flat = " ".join(err.split())
    assert "KID on subsets of 20 (all 20 images; the default 1,000 needs as many samples)" in flat
    assert "evaluating" in flat and "20/20" in flat  # the progress bar, on stderr: stdout stays JSON


@pytest.mark.parametrize(("argv", "message"), [
    (["--samples", "10", "--kid-subset", "50"], "too few samples for KID"),
    (["--features", "inception:/nonexistent/pt_inception.pth"], "never downloads"),
    (["--features", "clip"], "unknown --features"),
])
def test_bad_eval_input(capsys, trained_run, argv, message):
    code, _, err = run_cli(capsys, "eval", "--run", str(trained_run), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_eval_of_a_directory_without_pipeline(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--run", str(tmp_path))
    assert code == 2 and "no trained pipeline" in err


# -- a damaged pipeline is a one-line error naming the file (issue 18) ---------------------------------

class _Payload:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (self.marker,)


def _damage(run_dir, tmp_path, how: str):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    weights = copy / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    if how == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return copy, f"{weights}: truncated"
    if how == "garbage-weights":
        weights.write_bytes(b"\xff" * 64)
        return copy, f"{weights}: not a safetensors file, or truncated"
    if how == "pickle-instead":  # a .bin (a pickle) that would create a file when loaded, instead of safetensors
        import torch

        weights.unlink()
        torch.save({"conv_in.weight": _Payload(tmp_path / "pwned")}, weights.with_suffix(".bin"))
        return copy, f"{weights} is missing"
    if how == "no-config":
        (copy / "pipeline" / "unet" / "config.json").unlink()
        return copy, f"{copy / 'pipeline' / 'unet' / 'config.json'} is missing"
    if how == "config-not-json":
        (copy / "pipeline" / "unet" / "config.json").write_text("{")
        return copy, f"{copy / 'pipeline' / 'unet' / 'config.json'} is not valid JSON"
    if how == "config-a-list":
        (copy / "pipeline" / "unet" / "config.json").write_text("[]")
        return copy, f"{copy / 'pipeline' / 'unet' / 'config.json'}: should be a JSON object"
    if how == "config-wrong-shape":  # valid JSON, but not the weights' architecture
        config = json.loads((copy / "pipeline" / "unet" / "config.json").read_text())
        config["block_out_channels"] = [c * 2 for c in config["block_out_channels"]]
        (copy / "pipeline" / "unet" / "config.json").write_text(json.dumps(config))
        return copy, "its pipeline cannot be loaded"
    (copy / "pipeline" / "scheduler" / "scheduler_config.json").unlink()
    return copy, "scheduler_config.json is missing"


@pytest.mark.parametrize("how", ["truncated-weights", "garbage-weights", "pickle-instead", "no-config", "config-not-json",
                                 "config-a-list", "config-wrong-shape", "no-scheduler"])
@pytest.mark.parametrize("command", ["eval", "sample"])
def test_a_damaged_pipeline_is_one_line_naming_the_file(capsys, trained_run, tmp_path, how, command):
    run_dir, message = _damage(trained_run, tmp_path, how)
    extra = ["--samples", "8", "--kid-subset", "4"] if command == "eval" else ["--samples", "2", "-o", str(tmp_path / "s.png")]
    code, out, err = run_cli(capsys, command, "--run", str(run_dir), *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("greendiff: error: "), err
    assert message in lines[0] and "Traceback" not in err + out
    assert not (tmp_path / "pwned").exists()  # nothing in the run directory was unpickled
    path = default_ledger_path()
    assert not path.exists() or Ledger(path).list_runs() == []  # nothing measured, nothing recorded


def _edited_run(trained_run, tmp_path, file, edit):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    path = run / file
    if file.endswith(".json"):
        raw = json.loads(path.read_text())
        raw.update(edit)
        path.write_text(json.dumps(raw))
    else:
        path.write_text(edit)
    return run


PIPELINE_EDITS = [
    ("pipeline/unet/config.json", {"sample_size": 99999}, "config.json: sample_size must be between 1 and 4,096, got 99999"),
    ("pipeline/unet/config.json", {"sample_size": "8"}, "config.json: sample_size must be an integer, got \"8\""),
    ("pipeline/unet/config.json", {"in_channels": 7}, "config.json: in_channels must be between 1 and 4, got 7"),
    ("pipeline/unet/config.json", {"block_out_channels": [16, True]}, "config.json: block_out_channels must be a list"),
    ("pipeline/scheduler/scheduler_config.json", {"num_train_timesteps": -5},
     "scheduler_config.json: num_train_timesteps must be between 1 and 100,000, got -5"),
    ("pipeline/scheduler/scheduler_config.json", {"num_train_timesteps": 1.5},
     "scheduler_config.json: num_train_timesteps must be an integer"),
]


@pytest.mark.parametrize("command", ["eval", "sample"])
@pytest.mark.parametrize(("file", "edit", "message"), PIPELINE_EDITS, ids=[m.split(": ", 1)[1][:30] for *_, m in PIPELINE_EDITS])
def test_a_pipeline_config_out_of_range_is_one_line_before_a_ledger_row(capsys, tmp_path, trained_run, command, file, edit, message):
    run = _edited_run(trained_run, tmp_path, file, edit)
    extra = ["--samples", "8", "--kid-subset", "4"] if command == "eval" else ["--samples", "2", "-o", str(tmp_path / "s.png")]
    code, _, err = run_cli(capsys, command, "--run", str(run), *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert Ledger(default_ledger_path()).list_runs() == [] and not (tmp_path / "s.png").exists()


CONFIG_EDITS = [
    ('[run]\nname = "x"\n', "data.resolution is 16, the UNet's sample_size 8"),
    ('[data]\nresolution = 64\n', "data.resolution is 64, the UNet's sample_size 8"),
    ('[data]\nresolution = 8\ndataset = "nowhere/d.npy"\n', "no such file or folder"),
]


@pytest.mark.parametrize(("text", "message"), CONFIG_EDITS, ids=[m[:25] for _, m in CONFIG_EDITS])
def test_eval_of_a_run_whose_config_toml_no_longer_matches_its_pipeline(capsys, tmp_path, trained_run, text, message):
    run = _edited_run(trained_run, tmp_path, "config.toml", text)
    code, _, err = run_cli(capsys, "eval", "--run", str(run), "--samples", "8", "--kid-subset", "4")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert Ledger(default_ledger_path()).list_runs() == []
