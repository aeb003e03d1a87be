from __future__ import annotations

import json
from pathlib import Path

import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger, default_ledger_path
from tests.cli.test_train_cli import TINY

PARENT = [*TINY, "--set", "model.block_out_channels=16,32"]  # GroupNorm(8): 16 -> 8 channels can be pruned


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parent")
    assert main(["train", *PARENT, "--max-steps", "4", "--output-dir", str(root / "runs"), "--ledger", str(root / "l.sqlite")]) == 0
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def only(folder: Path) -> Path:
    (run_dir,) = folder.iterdir()
    return run_dir


def test_prune_end_to_end_measures_the_pruned_model_and_its_energy(capsys, tmp_path, parent):
    from diffusers import UNet2DModel

    code, out, err = run_cli(capsys, "prune", "--run", str(parent), "--ratio", "0.5", "--finetune-steps", "3",
                             "--taylor-timesteps", "4", "--eval-samples", "16", "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    run_dir = only(tmp_path / "out")
    report = json.loads((run_dir / "compression.json").read_text())
    assert report["parent_model"]["block_out_channels"] == [16, 32] and report["pruned_model"]["block_out_channels"] == [8, 16]
    assert report["macs_reduction"] > 3 and report["params_reduction"] > 3  # measured: (1 - 0.5)^2 ~ 1/4
    assert report["taylor"]["timesteps_used"] >= 1
    assert {"parent", "pruned", "finetuned"} == set(report["quality"]) and report["quality"]["finetuned"]["n"] == 16
    energy = report["energy"]
    assert energy["cost_kwh"] > 0 and energy["eval_kwh"] > 0 and energy["parent_training_kwh"] > 0
    assert energy["cost_vs_parent"] == pytest.approx(energy["cost_kwh"] / energy["parent_training_kwh"])
    assert {"prune", "train", "eval"} <= set(energy["phases_kwh"])
    unet = UNet2DModel.from_pretrained(str(run_dir / "pipeline" / "unet"))  # plain diffusers loads the result
    assert list(unet.config.block_out_channels) == [8, 16]
    from greendiff.train import resolve_config

    saved = resolve_config(run_dir / "config.toml")
    assert saved.model.block_out_channels == (8, 16) and saved.model.init_from == str(run_dir / "pruned-unet")
    (record,) = [r for r in Ledger(default_ledger_path()).list_runs() if r.kind == "prune"]
    assert record.status == "completed"
    assert "pruned [16, 32] → [8, 16]" in err.replace("\n", " ")
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "5")  # an ordinary, resumable run
    assert code == 0, err


def test_distill_trains_a_smaller_student_with_the_teacher_counted(capsys, tmp_path, parent):
    code, _, err = run_cli(capsys, "distill", "--teacher", str(parent), "--student-preset", "pico", "--max-steps", "3",
                           "--eval-samples", "16", "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    run_dir = only(tmp_path / "out")
    report = json.loads((run_dir / "distill.json").read_text())
    assert report["params_reduction"] > 1 and report["student_model"]["block_out_channels"] == [8, 16]
    assert report["quality"]["student"]["n"] == 16 and report["energy"]["cost_kwh"] > 0
    config = (run_dir / "config.toml").read_text()
    assert 'kind = "output"' in config and str(parent / "pipeline" / "unet") in config


def test_prune_without_fine_tuning_then_distill_into_the_pruned_student(capsys, tmp_path, parent):
    code, _, err = run_cli(capsys, "prune", "--run", str(parent), "--ratio", "0.5", "--finetune-steps", "0",
                           "--importance", "magnitude", "--eval-samples", "0", "--output-dir", str(tmp_path / "pruned"))
    assert code == 0, err
    pruned = only(tmp_path / "pruned")
    report = json.loads((pruned / "compression.json").read_text())
    assert report["quality"] == {"parent": None, "pruned": None, "finetuned": None} and "train" not in report["energy"]["phases_kwh"]
    code, _, err = run_cli(capsys, "distill", "--teacher", str(parent), "--student-init", str(pruned / "pruned-unet"),
                           "--max-steps", "2", "--eval-samples", "0", "--output-dir", str(tmp_path / "student"))
    assert code == 0, err
    report = json.loads((only(tmp_path / "student") / "distill.json").read_text())
    assert report["student_model"]["block_out_channels"] == [8, 16] and report["student_init"].endswith("pruned-unet")


def test_prune_can_fine_tune_against_the_parent(capsys, tmp_path, parent):
    code, _, err = run_cli(capsys, "prune", "--run", str(parent), "--ratio", "0.5", "--finetune-steps", "2", "--distill",
                           "--taylor-timesteps", "2", "--eval-samples", "0", "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    from greendiff.train import resolve_config

    run_dir = only(tmp_path / "out")
    config = resolve_config(run_dir / "config.toml")
    assert config.distill.kind == "output" and config.distill.teacher == str(parent / "pipeline" / "unet")
    assert json.loads((run_dir / "compression.json").read_text())["finetune_distill"] is True


def test_distill_steps_halves_the_sampling_steps_each_round(capsys, tmp_path, parent):
    code, out, err = run_cli(capsys, "distill-steps", "--teacher", str(parent), "--rounds", "2", "--teacher-steps", "8",
                             "--steps-per-round", "2", "--eval-samples", "8", "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    run_dir = only(tmp_path / "out")
    report = json.loads((run_dir / "distill_steps.json").read_text())
    assert [r["steps"] for r in report["rows"]] == [8, 2, 4, 2]
    assert all(r["sample_kwh_per_image"] > 0 and r["quality"]["n"] == 8 for r in report["rows"])
    from greendiff.train import resolve_config

    second = resolve_config(run_dir / "round-2" / "config.toml")
    assert second.optim.sample_steps == 2 and second.distill.teacher_steps == 4
    assert second.model.init_from == second.distill.teacher == str(run_dir / "round-1" / "pipeline" / "unet")
    assert "2 DDIM steps" in err


BAD = [
    (["prune", "--ratio", "1.5"], "--ratio must be between 0 and 1"),
    (["prune", "--ratio", "0"], "--ratio must be between 0 and 1"),
    (["prune", "--ratio", "0.5", "--importance", "l7"], "unknown --importance 'l7'"),
    (["distill", "--student-preset", "tiny"], "is not smaller than the teacher"),
    (["distill", "--student-preset", "pico", "--set", "data.resolution=16"], "the data is 1x16x16"),
    (["distill", "--student-preset", "mega"], "unknown --student-preset"),
    (["distill"], "give the student as --student-preset P or --student-init DIR"),
    (["distill", "--student-init", "/nonexistent"], "not a saved UNet2DModel"),
    (["distill-steps", "--teacher-steps", "50", "--rounds", "3"], "use --teacher-steps one of"),
    # every config check runs before the run directory and the ledger row exist (a bad --set used to be found
    # after the Taylor pass, or at the first round, leaving both behind)
    (["prune", "--ratio", "0.5", "--name", "a:b"], "--name 'a:b' is not a usable name"),
    (["prune", "--ratio", "0.5", "--set", "optim.bogus=1"], "unknown config key 'optim.bogus'"),
    (["prune", "--ratio", "0.5", "--finetune-steps", "0", "--set", "optim.lr=-1"], "optim.lr must be"),
    (["distill-steps", "--rounds", "1", "--teacher-steps", "8", "--set", "optim.bogus=1"], "unknown config key 'optim.bogus'"),
    (["distill", "--student-preset", "pico", "--max-steps", "0"], "run.max_steps must be a positive integer"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_compression_input_is_one_line_exit_2(capsys, tmp_path, parent, argv, message):
    flag = "--run" if argv[0] == "prune" else "--teacher"
    code, _, err = run_cli(capsys, argv[0], flag, str(parent), *argv[1:], "--output-dir", str(tmp_path / "out"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists(), "nothing created for bad input"
    assert not any(r.kind in ("prune", "distill", "distill-steps") for r in Ledger(default_ledger_path()).list_runs())


@pytest.mark.parametrize("command", ["prune", "distill", "distill-steps"])
def test_a_run_without_a_model_is_refused(capsys, tmp_path, command):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    extra = {"prune": ["--run", str(empty), "--ratio", "0.5"], "distill": ["--teacher", str(empty), "--student-preset", "pico"],
             "distill-steps": ["--teacher", str(empty)]}[command]
    code, _, err = run_cli(capsys, command, *extra)
    assert code == 2 and "no trained model" in err and len(err.strip().splitlines()) == 1


def test_a_parent_with_a_long_odd_name_and_a_damaged_emissions_json_is_pruned(capsys, tmp_path, parent, caplog):
    """A parent directory named with 95 characters, one of them a ':' a name may no longer hold, whose
    emissions.json is cut off: the derived name is made of safe parts and cut to fit (100 characters), the
    damaged file is a warning naming it (the comparison with the parent's energy is left out), and the
    report is written."""
    import shutil

    odd = tmp_path / ("old:run " + "x" * 87)
    shutil.copytree(parent, odd)
    (odd / "emissions.json").write_text('{"ledger_run_ids": [1, ')
    code, _, err = run_cli(capsys, "prune", "--run", str(odd), "--ratio", "0.5", "--importance", "magnitude",
                           "--finetune-steps", "1", "--eval-samples", "0", "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    run_dir = only(tmp_path / "out")
    name = "pruned0.5-old_run " + "x" * 82
    assert len(name) == 100 and run_dir.name.endswith("-" + name)
    from greendiff.train import resolve_config

    assert resolve_config(run_dir / "config.toml").run.name == name
    report = json.loads((run_dir / "compression.json").read_text())
    assert report["energy"]["parent_training_kwh"] is None and report["energy"]["cost_kwh"] > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "emissions.json" in r.getMessage()]
    assert len(warnings) == 1 and str(odd / "emissions.json") in warnings[0] and "left out" in warnings[0]
    (record,) = [r for r in Ledger(default_ledger_path()).list_runs() if r.kind == "prune"]
    assert record.status == "completed"


@pytest.mark.parametrize(("content", "message"), [
    ('{"block_out_channels": [8, 16], ', "is not valid JSON"),
    ('[8, 16]', "block_out_channels should be a list of widths"),
    ('{"block_out_channels": [8, "16"], "layers_per_block": 1}', "block_out_channels should be a list of widths"),
    ('{"block_out_channels": [8, 16]}', "layers_per_block should be a whole number from 1 to 16"),
])
def test_a_damaged_student_init_is_one_line_naming_its_file(capsys, tmp_path, parent, content, message):
    init = tmp_path / "pruned-unet"
    init.mkdir()
    (init / "config.json").write_text(content)
    code, _, err = run_cli(capsys, "distill", "--teacher", str(parent), "--student-init", str(init),
                           "--output-dir", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and str(init / "config.json") in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["distill", "distill-steps"])
def test_a_teacher_whose_pipeline_lacks_its_weights_is_named_as_the_teacher(capsys, tmp_path, parent, command):
    import shutil

    teacher = tmp_path / "teacher\x1b[31m"
    shutil.copytree(parent, teacher)
    (teacher / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    extra = ["--student-preset", "pico"] if command == "distill" else []
    code, _, err = run_cli(capsys, command, "--teacher", str(teacher), *extra, "--output-dir", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("greendiff: error: --teacher "), err
    assert "--run" not in err and "\x1b" not in err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def cond_parent(tmp_path_factory) -> Path:
    """A class-conditional run (4 steps on the 10 digit classes), widths 16, 32 as :func:`parent`'s."""
    root = tmp_path_factory.mktemp("cond-parent")
    assert main(["train", *PARENT, "--conditioning", "class", "--max-steps", "4", "--output-dir", str(root / "runs"),
                 "--ledger", str(root / "l.sqlite")]) == 0
    return only(root / "runs")


def test_prune_of_a_class_conditional_run_exports_a_class_conditional_pipeline(capsys, tmp_path, cond_parent):
    code, _, err = run_cli(capsys, "prune", "--run", str(cond_parent), "--ratio", "0.5", "--finetune-steps", "0",
                           "--taylor-timesteps", "2", "--taylor-batch", "8", "--eval-samples", "0",
                           "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    run_dir = only(tmp_path / "out")
    index = json.loads((run_dir / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "ClassConditionalPipeline" and index["class_names"] == [str(k) for k in range(10)]
    assert json.loads((run_dir / "pipeline" / "unet" / "config.json").read_text())["num_class_embeds"] == 11
    code, _, err = run_cli(capsys, "sample", "--run", str(run_dir), "--class", "3", "--samples", "2", "--sample-steps", "2",
                           "--output", str(tmp_path / "three.png"))
    assert code == 0 and (tmp_path / "three.png").is_file(), err


@pytest.mark.parametrize("command", ["distill", "distill-steps"])
def test_distilling_a_class_conditional_teacher_says_what_works_instead(capsys, tmp_path, cond_parent, command):
    extra = ["--student-preset", "pico"] if command == "distill" else ["--rounds", "1"]
    code, _, err = run_cli(capsys, command, "--teacher", str(cond_parent), *extra, "--output-dir", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{command}: --teacher " in err and "is class-conditional (10 classes)" in err
    assert "distil a run trained with --conditioning none" in err
    assert err.replace("\n", "").rstrip().endswith(f"greendiff prune --run {cond_parent}")
    assert not (tmp_path / "out").exists()
