"""The class-conditional command lines: train's conditioning and data flags, sample by class, eval by class."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from greendiff.cli._app import main
from greendiff.train import read_toml
from tests.cli.test_train_cli import TINY, run_cli

COUNTRY = ["--no-gpu", "--country", "FRA"]


def test_dry_run_shows_the_conditioning_and_data_flags_as_config_keys(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "--dry-run", "--conditioning", "class", "--cond-dropout", "0.25",
                           "--guidance-scale", "3", "--label-column", "digit", "--caption-column", "text",
                           "--cache-max-gb", "0.5", "--loader-workers", "3")
    assert code == 0
    for line in ('conditioning = "class"', "cond_dropout = 0.25", "guidance_scale = 3.0", 'label_column = "digit"',
                 'caption_column = "text"', "cache_max_gb = 0.5", "loader_workers = 3"):
        assert re.search(rf"^{re.escape(line)}$", out, re.M), line


def test_a_bad_conditioning_choice_is_one_line(capsys):
    code, _, err = run_cli(capsys, "train", "--dry-run", "--conditioning", "text")
    assert code == 2 and err.count("\n") == 1 and "conditioning" in err and "text" in err


def test_train_sample_and_eval_a_class_conditional_run(capsys, tmp_path):
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", *TINY, *COUNTRY, "--max-steps", "2", "--conditioning", "class",
                           "--output-dir", str(runs), "--name", "cond")
    assert code == 0, err
    assert "data: 1,797 images, 0.1 MB decoded <= cache_max_gb 4: in memory" in err  # the placement line
    (run,) = runs.iterdir()
    assert read_toml(run / "config.toml")["model"]["num_classes"] == 10
    grid = tmp_path / "grid.png"
    code, _, err = run_cli(capsys, "sample", "--run", str(run), "--class", "0,3", "--class", "7", "--samples", "2",
                           "--sample-steps", "2", "--guidance-scale", "1.5", *COUNTRY, "-o", str(grid))
    assert code == 0, err
    assert "6 images, 2 ddim steps, guidance 1.5" in err
    assert Image.open(grid).size == ((2 * 10 + 2) * 2, (3 * 10 + 2) * 2)  # 3 rows (one per class) of 2
    code, out, err = run_cli(capsys, "eval", "--run", str(run), "--samples", "20", "--kid-subset", "10", "--sample-steps", "2",
                             *COUNTRY, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["guidance_scale"] == 2.0 and report["num_classes"] == 10
    assert 0 <= report["results"][0]["class_accuracy"] <= 1 and len(report["results"][0]["per_class_fid"]) == 10
    code, out, err = run_cli(capsys, "eval", "--run", str(run), "--samples", "20", "--kid-subset", "10", "--sample-steps", "2",
                             "--guidance-scale", "1", *COUNTRY)
    assert code == 0, err
    flat = " ".join(out.split())  # the table wraps at the terminal's width
    assert "10 classes, balanced, guidance 1" in flat and "class acc." in flat and "per-class FID (seed 0): 0: " in flat
    # prune fine-tunes it from the pruned model (a class-conditional run's model.init_from), and it samples by class
    code, _, err = run_cli(capsys, "prune", "--run", str(run), "--ratio", "0.5", "--finetune-steps", "2",
                           "--taylor-timesteps", "2", "--taylor-batch", "8", "--eval-samples", "0", *COUNTRY,
                           "--output-dir", str(tmp_path / "pruned"))
    assert code == 0, err
    (pruned,) = (tmp_path / "pruned").iterdir()
    model = read_toml(pruned / "config.toml")["model"]
    assert model["init_from"] == str(pruned / "pruned-unet") and model["num_classes"] == 10
    assert json.loads((pruned / "metrics.jsonl").read_text().splitlines()[-1]) == {"event": "completed", "step": 2}
    code, _, err = run_cli(capsys, "sample", "--run", str(pruned), "--class", "3", "--samples", "2", "--sample-steps", "2",
                           *COUNTRY, "-o", str(tmp_path / "pruned.npz"))
    assert code == 0, err
    assert np.load(tmp_path / "pruned.npz")["labels"].tolist() == [3, 3]


def test_sample_help_says_how_a_class_list_is_spread(capsys):
    assert main(["sample", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "Images; with --class, images per class (a grid row each)" in text
    assert "(--class 7, --class 0,3,7, or repeated), in grid rows; without it, class-balanced" in text


def test_train_help_says_the_number_of_classes_is_read_from_the_dataset(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "class ids run 0..K-1, K read from the dataset when training starts" in text
