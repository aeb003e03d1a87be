from __future__ import annotations

import json
import re
from pathlib import Path
import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger, default_ledger_path

SHORT_TRACE = str(Path(__file__).resolve().parent.parent / "carbon" / "fixtures" / "short_trace.csv")
TINY = ["--preset", "nano", "--set", "model.block_out_channels=8,16", "--dataset", "digits", "--resolution", "8",
        "--batch-size", "16", "--sample-steps", "4", "--set", "run.num_samples=4", "--set", "run.log_every=2"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_prints_the_resolved_config(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "--recipe", "baseline", "--lr", "3e-4", "--dry-run",
                           "--output-dir", str(tmp_path / "runs"))
    assert code == 0 and 'recipe = "baseline"' in out and "lr = 0.0003" in out and 'loss_weighting = "uniform"' in out
    assert not (tmp_path / "runs").exists(), "a dry run creates nothing"


@pytest.mark.parametrize(("flags", "value"), [([], "true"), (["--no-skip-bad-images"], "false"),
                                              (["--skip-bad-images", "--no-skip-bad-images"], None)])
def test_a_switch_and_its_negation(capsys, tmp_path, flags, value):
    """--no-skip-bad-images and --no-carbon-aware are hidden options of their own (one column of flag names in
    --help): each still overrides the config file, and a switch given both ways is one line."""
    config = tmp_path / "c.toml"
    config.write_text("[data]\nskip_bad_images = true\n[carbon]\nenabled = true\nmax_intensity = 100.0\n")
    code, out, err = run_cli(capsys, "train", "--config", str(config), *flags, "--no-carbon-aware", "--dry-run")
    if value is None:
        assert code == 2 and err.strip().splitlines() == [
            "greendiff: error: give --skip-bad-images or --no-skip-bad-images, not both"]
        return
    assert code == 0, err
    assert re.search(rf"^skip_bad_images = {value}$", out, re.M) and re.search(r"^enabled = false$", out, re.M)


#: A value of every train flag that sets a config key (each not the green recipe's), as typed and as the key holds it
FLAG_VALUES = {
    "--recipe": ("baseline", "baseline"), "--preset": ("nano", "nano"), "--dataset": ("digits", "digits"),
    "--resolution": ("8", 8), "--skip-bad-images": (None, True), "--label-column": ("label", "label"),
    "--caption-column": ("text", "text"), "--cache-max-gb": ("1.5", 1.5), "--loader-workers": ("3", 3),
    "--conditioning": ("class", "class"), "--cond-dropout": ("0.2", 0.2), "--guidance-scale": ("3", 3.0),
    "--batch-size": ("16", 16), "--lr": ("3e-4", 3e-4), "--max-steps": ("7", 7), "--seed": ("5", 5),
    "--mixed-precision": ("no", "no"), "--loss-weighting": ("min-snr", "min-snr"), "--beta-schedule": ("linear", "linear"),
    "--ema": (None, True), "--sampler": ("ddpm", "ddpm"), "--sample-steps": ("9", 9), "--warmup-steps": ("3", 3),
    "--lr-schedule": ("constant", "constant"), "--eval-sample-steps": ("6", 6), "--output-dir": ("out", "out"),
    "--name": ("mine", "mine"), "--eval-every": ("4", 4), "--eval-every-kwh": ("0.5", 0.5), "--eval-samples": ("64", 64),
    "--patience": ("2", 2), "--min-delta": ("0.1", 0.1), "--min-gain-per-kwh": ("0.3", 0.3), "--target-fid": ("9", 9.0),
    "--budget-kwh": ("2", 2.0), "--budget-kgco2e": ("1", 1.0), "--carbon-aware": (None, True),
    "--max-intensity": ("100", 100.0), "--deadline": ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
    "--simulate-clock": ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"), "--simulated-step-s": ("60", 60.0),
    "--log-to": ("tensorboard", "tensorboard"), "--mlflow-uri": ("file:./m", "file:./m"),
    "--vae": ("my-vae", "my-vae"), "--backbone": ("dit", "dit"), "--patch-size": ("4", 4), "--objective": ("flow", "flow"),
    "--no-latent-cache": (None, False), "--latent-cache-dir": ("lat", "lat"), "--compile": (None, True),
    "--ema-snapshots": ("4", 4), "--align": ("repa", "repa"), "--align-encoder": ("enc", "enc"),
    "--align-weight": ("0.25", 0.25), "--align-until": ("0.4", 0.4), "--timestep-sampling": ("speed", "speed"),
    "--noise-assignment": ("immiscible", "immiscible"),
}


def test_every_train_flag_of_a_config_key_names_a_real_key_and_sets_it(monkeypatch):
    """FLAG_KEYS is the one table of flag -> config key: each flag is an option of train, each key one the
    resolved config has, and every other option of train is one of its own (not a config key)."""
    import typer

    from greendiff.cli._app import app
    from greendiff.cli._options import MEASUREMENT_PARAMETERS
    from greendiff.cli._train import FLAG_KEYS, config_overrides
    from greendiff.train import resolve_config, to_dict

    command = typer.main.get_command(app).commands["train"]
    flags = {param.opts[0] for param in command.params if param.opts}
    measurement = {"--" + name.replace("_", "-") for name, _, _ in MEASUREMENT_PARAMETERS}
    own = {"--config", "--resume", "--dry-run", "--nproc", "--set", "--no-skip-bad-images", "--no-carbon-aware",
           "--no-compile"}
    assert flags - measurement - own == set(FLAG_KEYS) and set(FLAG_VALUES) == set(FLAG_KEYS)
    resolved = to_dict(resolve_config(None, {}))
    keys = {"recipe", *(f"{section}.{key}" for section, values in resolved.items() if isinstance(values, dict)
                        for key in values)}
    assert set(FLAG_KEYS.values()) <= keys
    argv = [part for flag, (text, _) in FLAG_VALUES.items() for part in ((flag,) if text is None else (flag, text))]
    with command.make_context("train", [*argv, "--set", "optim.snr_gamma=3"]) as ctx:
        overrides = config_overrides(ctx)
    assert overrides == {FLAG_KEYS[flag]: value for flag, (_, value) in FLAG_VALUES.items()} | {"optim.snr_gamma": "3"}


def test_train_flags_not_given_leave_every_key_to_the_config():
    import typer

    from greendiff.cli._app import app
    from greendiff.cli._train import FLAG_KEYS, config_overrides

    command = typer.main.get_command(app).commands["train"]
    with command.make_context("train", ["--no-ema", "--no-carbon-aware", "--log-to", "tensorboard", "--log-to", "mlflow"]) as ctx:
        overrides = config_overrides(ctx)
    given = {"optim.ema": False, "carbon.enabled": False, "run.log_to": "tensorboard,mlflow"}
    assert overrides == {key: None for key in FLAG_KEYS.values()} | given


def test_train_then_sample_end_to_end(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "4", "--output-dir", str(tmp_path / "runs"),
                           "--name", "e2e", "--country", "FRA")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.endswith("-e2e")
    for name in ("config.toml", "metrics.jsonl", "emissions.json", "samples/step-4.png", "pipeline/model_index.json"):
        assert (run_dir / name).exists(), name
    emissions = json.loads((run_dir / "emissions.json").read_text())
    assert {p["name"] for p in emissions["phases"]} >= {"train", "sample", "checkpoint"}
    assert emissions["stop_reason"] == "max_steps reached"
    assert emissions["location"]["country"] == "FRA"
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.kind == "train" and run.status == "completed" and run.assumptions["config"]["model"]["preset"] == "nano"
    out = tmp_path / "grid.png"
    code, _, err = run_cli(capsys, "sample", "--run", str(run_dir), "--samples", "4", "--sample-steps", "3", "-o", str(out))
    assert code == 0 and out.is_file() and "per image" in err
    assert "sampling" in err and "4/4" in err  # its progress bar
    npz = tmp_path / "s.npz"
    assert run_cli(capsys, "sample", "--run", str(run_dir), "--samples", "3", "--sample-steps", "2", "-o", str(npz))[0] == 0
    import numpy as np

    assert np.load(npz)["images"].shape == (3, 8, 8, 1)
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "6")
    assert code == 0, err
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1]) == {"event": "completed", "step": 6}
    resumed = json.loads((run_dir / "emissions.json").read_text())
    assert len(resumed["ledger_run_ids"]) == 2
    assert resumed["run_total_energy_kwh"] > resumed["energy_kwh"] > 0  # both segments counted


BAD = [
    (["train", "--max-steps", "-3"], "run.max_steps must be a positive integer"),
    (["train", "--preset", "huge", "--max-steps", "1"], "unknown model preset 'huge'"),
    (["train", "--preset", "tiny", "--resolution", "18"], "resolution 18 is not divisible by 4"),
    (["train", "--recipe", "fast"], "unknown recipe 'fast'"),
    (["train", "--set", "optim.lr"], "--set expects KEY=VALUE"),
    (["train", "--set", "optim.bogus=1"], "unknown config key 'optim.bogus'"),
    (["train", "--dataset", "/nonexistent/dir"], "no such file or folder"),
    (["train", "--config", "/nonexistent.toml"], "does not exist"),
    (["train", "--resume", "/nonexistent"], "not a run directory"),
    (["sample", "--run", "/nonexistent"], "no trained pipeline"),
    (["train", "--patience", "3"], "early stopping on quality needs evaluations: set --eval-every N"),
    (["train", "--budget-kwh", "-1"], "stop.budget_kwh must be >= 0"),
    (["train", "--dataset", "digits", "--resolution", "8", "--batch-size", "5000"], "fewer than one batch of 5000"),
    (["train", "--carbon-aware"], "--carbon-aware needs --max-intensity G"),
    (["train", *TINY, "--carbon-aware", "--max-intensity", "200", "--country", "FRA"], "needs an hourly intensity series"),
    (["train", *TINY, "--carbon-aware", "--max-intensity", "200", "--grid", "CISO", "--deadline", "2020-01-01T00:00"],
     "is not after the start"),
    (["train", "--carbon-aware", "--deadline", "friday"], "carbon.deadline 'friday' is not a date and time"),
    (["train", "--carbon-aware", "--max-intensity", "-5"], "carbon.max_intensity must be >= 0"),
    (["train", "--carbon-aware", "--max-intensity", "200", "--simulate-clock", "2022-06-01T00:00"],
     "a simulated clock needs both"),
    (["train", *TINY, "--carbon-aware", "--max-intensity", "200", "--grid", SHORT_TRACE,
      "--simulate-clock", "2022-06-01T00:00", "--simulated-step-s", "60"], "does not cover today"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a[1:3]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_train_input_is_one_line_exit_2(capsys, tmp_path, argv, message):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, *argv, *(["--output-dir", str(runs)] if argv[0] == "train" and "--resume" not in argv else []))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not runs.exists(), "no run directory for bad input"
    assert not default_ledger_path().exists() or Ledger(default_ledger_path()).list_runs() == []


def test_carbon_aware_training_on_a_simulated_clock(capsys, tmp_path):
    from datetime import datetime

    from greendiff.carbon import bundled_trace

    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "30", "--output-dir", str(tmp_path / "runs"),
                           "--carbon-aware", "--max-intensity", "250", "--deadline", "2022-06-03T00:00",
                           "--simulate-clock", "2022-06-01T00:00", "--simulated-step-s", "1200", "--grid", "CISO")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    ca = json.loads((run_dir / "emissions.json").read_text())["carbon_aware"]
    assert ca["policy"] == "threshold" and ca["pauses"] >= 1 and ca["met_deadline"]
    assert ca["active_h"] == pytest.approx(10.0) and ca["waited_h"] > 1
    # the books are consistent; whether a saving shows at these sub-joule energies depends on the pause's own
    # checkpoint (the controller's arithmetic is checked with exact energies in tests/plan/test_carbon_aware.py)
    assert ca["emissions_g"] > 0 and ca["straight_through_g"] > 0
    assert ca["saved_g"] == pytest.approx(ca["straight_through_g"] - ca["emissions_g"])
    assert "carbon-aware (threshold)" in err and "deadline met" in err
    trace = bundled_trace("CISO")
    pauses = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"pause"' in line]
    assert len(pauses) == ca["pauses"]
    for p in pauses:  # paused in a dirty hour, resumed in a clean one
        assert trace.value_at(datetime.fromisoformat(p["from"])) > 250 >= trace.value_at(datetime.fromisoformat(p["until"]))
    assert 'deadline = "2022-06-03T00:00"' in (run_dir / "config.toml").read_text()
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.summary["carbon_aware"] == ca and run.summary["stop_reason"] == "max_steps reached"


def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(tmp_path):
    """The CLI killed with SIGKILL mid-run; --resume ends with the same weights as an uninterrupted run."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    import torch
    from safetensors.torch import load_file

    from greendiff.train import checkpoint_dirs

    exe = os.path.join(os.path.dirname(sys.executable), "greendiff")
    args = [exe, "train", *TINY, "--max-steps", "40", "--set", "run.checkpoint_every=2", "--set", "run.keep_checkpoints=3",
            "--batch-size", "64", "--no-gpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*args, "--output-dir", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*args, "--output-dir", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "killed").glob("*/checkpoints/step-4")):
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0.0, 0.2))  # somewhere in later steps or checkpoint writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = (tmp_path / "killed").iterdir()
    assert not (run_dir / "pipeline").exists(), "the kill must land before the run ends"
    subprocess.run([exe, "train", "--resume", str(run_dir), "--no-gpu"], check=True, env=env, capture_output=True)
    (whole_dir,) = (tmp_path / "whole").iterdir()
    a = load_file(str(checkpoint_dirs(whole_dir)[-1] / "model.safetensors"))
    b = load_file(str(checkpoint_dirs(run_dir)[-1] / "model.safetensors"))
    assert checkpoint_dirs(run_dir)[-1].name == "step-40"
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from greendiff.train import checkpoint_dirs

    exe = os.path.join(os.path.dirname(sys.executable), "greendiff")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GREENDIFF_LEDGER": str(tmp_path / "l.sqlite")}
    # a test runner started in the background (``cmd &``) passes SIGINT on as ignored; restore it, as a terminal has it
    proc = subprocess.Popen([exe, "train", *TINY, "--max-steps", "100000", "--batch-size", "64",
                             "--output-dir", str(tmp_path / "runs"), "--no-gpu"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                '"step": 4' in p.read_text() for p in (tmp_path / "runs").glob("*/metrics.jsonl")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never leave a training process behind, whatever failed
    assert proc.returncode == 130, err
    assert "resume with: greendiff train --resume" in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    (ckpt,) = checkpoint_dirs(run_dir)
    assert int(ckpt.name.split("-")[1]) >= 4
    (run,) = Ledger(tmp_path / "l.sqlite").list_runs()
    assert run.status == "interrupted"


@pytest.mark.parametrize("error, where", [("OutOfMemoryError", "GPU"), ("MemoryError", "host")])
def test_out_of_memory_is_one_line_and_the_run_is_failed(capsys, tmp_path, monkeypatch, error, where):
    import torch

    import greendiff.train

    def oom(*args, **kwargs):
        raise (torch.OutOfMemoryError if error == "OutOfMemoryError" else MemoryError)("CUDA out of memory. Tried to allocate 2 GiB")
    monkeypatch.setattr(greendiff.train, "train", oom)
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "4", "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    lines = [line for line in err.splitlines() if line.startswith("greendiff: error:")]
    assert code == 2 and len(lines) == 1 and f"out of {where} memory" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in err
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.status == "failed"


def test_fp16_on_the_cpu_creates_nothing(capsys, tmp_path, monkeypatch):
    """A check that depends on the device (fp16 autocast needs a GPU) runs before the run directory and the ledger row."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--mixed-precision", "fp16", "--no-gpu",
                           "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    assert code == 2 and err.strip().splitlines() == [
        "greendiff: error: fp16 autocast is not supported on the CPU; use --mixed-precision bf16 or no"]
    assert not (tmp_path / "runs").exists()
    assert not default_ledger_path().exists() or Ledger(default_ledger_path()).list_runs() == []


def test_a_diverging_run_is_diverged_in_the_ledger_with_no_pipeline(capsys, tmp_path):
    import torch
    from safetensors.torch import load_file

    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "30", "--lr", "1e30", "--set", "run.checkpoint_every=1",
                           "--output-dir", str(tmp_path / "runs"), "--country", "FRA", "--no-gpu")
    errors = [line for line in err.splitlines() if line.startswith("greendiff: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert re.search(r"training diverged at step \d+: 20 steps in a row had a non-finite loss or gradient", errors[0])
    assert "lower --lr (now 1e+30)" in errors[0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "pipeline").exists()
    kept = [p for p in (run_dir / "checkpoints").iterdir()]
    assert kept != []  # kept, and none holds a value that is not finite
    assert all(torch.isfinite(t).all() for c in kept for f in c.glob("*.safetensors") if not f.name.startswith("rng")
               for t in load_file(str(f)).values())
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.status == "diverged" and run.summary["stop_reason"].startswith("20 steps in a row")
    # the run directory names its ledger run like a finished one, so a report can be made from it
    emissions = json.loads((run_dir / "emissions.json").read_text())
    assert (emissions["status"], emissions["ledger_run_ids"]) == ("diverged", [run.id])
    assert emissions["stop_reason"] == run.summary["stop_reason"]
    code, _, err = run_cli(capsys, "report", str(run_dir), "--output", str(tmp_path / "report.html"))
    assert code == 0, err
    assert "diverged" in (tmp_path / "report.html").read_text()


def test_an_older_ledger_accepts_a_diverged_run(tmp_path):
    import sqlite3

    from greendiff.ledger import _db

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the schema as greendiff wrote it before 'diverged' existed
        conn.executescript(_db._SCHEMA.replace(", 'diverged'", ""))
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    ledger = Ledger(path)
    run_id = ledger.start_run("x", "train", "", {}, [])
    ledger.finish_run(run_id, "diverged", {})
    assert ledger.get_run(run_id).status == "diverged"
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with pytest.raises(sqlite3.IntegrityError):  # still a CHECK: an unknown status is refused
            conn.execute("UPDATE runs SET status = 'bogus'")
    assert Ledger(path).get_run(run_id).status == "diverged"


def test_a_config_edited_in_the_run_directory_is_refused_before_anything(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace("resolution = 8", "resolution = 16").replace('preset = "nano"', 'preset = "pico"'))
    metrics = (run_dir / "metrics.jsonl").read_text()
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "4", "--country", "FRA")
    assert code == 2 and err.strip().splitlines() == [
        f"greendiff: error: {config} no longer matches checkpoint step-2: model.preset nano -> pico, data.resolution 8 -> 16; "
        "undo the edit, or start a new run"]
    assert len(Ledger(default_ledger_path()).list_runs()) == 1  # no ledger row for the refused resume
    assert (run_dir / "metrics.jsonl").read_text() == metrics


def test_a_resume_of_a_completed_run_is_one_line_exit_2_and_records_nothing(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    emissions = (run_dir / "emissions.json").read_bytes()
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--country", "FRA")
    assert code == 2 and err.strip().splitlines() == [
        f"greendiff: error: {run_dir} already completed at step 2 (run.max_steps 2); give --max-steps N (> 2) to train further"]
    assert (run_dir / "emissions.json").read_bytes() == emissions and len(Ledger(default_ledger_path()).list_runs()) == 1


def test_a_corrupt_emissions_json_is_rebuilt_from_the_ledger(capsys, tmp_path, caplog):
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    (run_dir / "emissions.json").write_text('{"ledger_run_ids": [1, ')  # cut off mid-write by an older greendiff
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "4", "--country", "FRA")
    assert code == 0 and "Traceback" not in err, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "emissions.json" in r.getMessage()]
    assert len(warnings) == 1 and "is not valid JSON" in warnings[0] and "rebuilt from the ledger" in warnings[0]
    first, second = sorted(r.id for r in Ledger(default_ledger_path()).list_runs())
    assert json.loads((run_dir / "emissions.json").read_text())["ledger_run_ids"] == [first, second]


# -- names are checked where a run directory is made, not when a saved config is read -----------------------------------

@pytest.mark.parametrize("how", ["--set", "--config"])
def test_a_new_run_s_bad_name_is_one_line_and_creates_nothing(capsys, tmp_path, how):
    runs = tmp_path / "runs"
    if how == "--set":
        args, where = ["--set", "run.name=old:run"], ""
    else:
        (tmp_path / "c.toml").write_text('[run]\nname = "old:run"\n')
        args, where = ["--config", str(tmp_path / "c.toml")], f"{tmp_path / 'c.toml'}: "
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", *args, "--output-dir", str(runs), "--country", "FRA")
    assert code == 2 and err.strip().splitlines() == [
        f"greendiff: error: {where}run.name 'old:run' is not a usable name: it contains ':'; use one folder name: "
        "letters, digits, spaces and - _ . + @ = , ( ) [ ] #"]
    assert not runs.exists()
    assert not default_ledger_path().exists() or Ledger(default_ledger_path()).list_runs() == []


def test_an_older_run_whose_name_is_now_refused_still_resumes_and_samples(capsys, tmp_path):
    """A run made before names were checked (its config.toml says ``name = "a:b"``) is an existing directory,
    not a new one: resume, sample and a report of it work."""
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace('name = ""', 'name = "a:b"'))
    assert 'name = "a:b"' in config.read_text()
    for state in run_dir.glob("checkpoints/*/train_state.json"):  # an older greendiff's checkpoint: shapes only
        books = json.loads(state.read_text())
        del books["fingerprint"]["config"]
        state.write_text(json.dumps(books))
    code, _, err = run_cli(capsys, "sample", "--run", str(run_dir), "--samples", "2", "--sample-steps", "2", "-o", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").is_file(), err
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "3", "--country", "FRA")
    assert code == 0, err
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1]) == {"event": "completed", "step": 3}
    assert 'name = "a:b"' in config.read_text()


# -- one process at a time in a run directory -------------------------------------------------------------------------

def test_a_resume_of_a_run_directory_in_use_is_refused_before_it_touches_anything(capsys, tmp_path):
    """Another greendiff process holds the run directory (a run still training, or a first resume): a second
    resume is one line naming its pid, before recover() (which would delete the other's unfinished checkpoint),
    before a ledger row, before any write. Once the other process is gone, the resume works."""
    import subprocess
    import sys
    import textwrap

    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    unfinished = run_dir / "checkpoints" / ".tmp-step-3"  # the other process is writing its next checkpoint
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"half")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys
        lock = open({str(run_dir / ".lock")!r}, "a+")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as greendiff.train.RunDirLock takes it
        lock.truncate(0); lock.write(str(os.getpid())); lock.flush()
        print("held", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
        code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "4", "--country", "FRA")
        assert code == 2 and err.strip().splitlines() == [
            f"greendiff: error: run directory {run_dir} is in use by another greendiff process (pid {holder.pid}); "
            "wait for it to end or stop it, then try again"]
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"} == before
        assert len(Ledger(default_ledger_path()).list_runs()) == 1  # no row for the refused resume
    finally:
        holder.communicate(timeout=30)  # its stdin closes: it ends, and the kernel lets the lock go
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "4", "--country", "FRA")
    assert code == 0, err
    assert not unfinished.exists()  # tidied by the resume that holds the directory now
    assert (run_dir / ".lock").read_text() == str(__import__("os").getpid())


# -- a run directory's name reaches the terminal escaped, never raw --------------------------------------------------

def test_a_run_directory_named_with_terminal_escapes_is_shown_escaped(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "runs"), "--country", "FRA")
    assert code == 0, err
    (made,) = (tmp_path / "runs").iterdir()
    run_dir = made.rename(tmp_path / "runs" / "rn3\x1b]0;pwned\x07\x1b[31mRED[bold]")
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "4", "--country", "FRA")
    assert code == 0, err
    assert "\x1b" not in err and "\x07" not in err
    assert "completed at step 4" in err and "rn3\\x1b]0;pwned\\x07\\x1b[31mRED[bold]" in err
    (run_dir / "checkpoints").rename(tmp_path / "aside")  # and in an error line
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--max-steps", "6", "--country", "FRA")
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err and "nothing to resume" in err


def test_a_bad_init_from_is_one_line_and_creates_nothing(capsys, tmp_path):
    import shutil

    code, _, err = run_cli(capsys, "train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "made"), "--country", "FRA")
    assert code == 0, err
    unet = next((tmp_path / "made").iterdir()) / "pipeline" / "unet"
    only_bin = tmp_path / "only-bin"
    only_bin.mkdir()
    shutil.copy(unet / "config.json", only_bin / "config.json")
    (only_bin / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    ledger_rows = len(Ledger(default_ledger_path()).list_runs())
    for init_from, extra, message in [
            (tmp_path / "nonexistent", [], "no such folder"),
            (only_bin, [], "no diffusion_pytorch_model.safetensors"),
            (unet, ["--preset", "tiny"], "its architecture (block_out_channels [8, 16]")]:
        runs = tmp_path / "runs"
        code, _, err = run_cli(capsys, "train", *TINY, *extra, "--set", f"model.init_from={init_from}", "--max-steps", "2",
                               "--output-dir", str(runs), "--country", "FRA")
        assert code == 2 and err.count("\n") == 1 and err.startswith("greendiff: error: model.init_from "), err
        assert message in err, err
        assert not runs.exists()
        assert len(Ledger(default_ledger_path()).list_runs()) == ledger_rows
    code, _, err = run_cli(capsys, "train", *TINY, "--set", f"model.init_from={unet}", "--max-steps", "2",
                           "--output-dir", str(tmp_path / "good"), "--country", "FRA")
    assert code == 0, err  # a matching folder still starts the run


def test_sigterm_checkpoints_exits_143_and_the_run_resumes(tmp_path):
    """A scheduler, ``docker stop`` or systemd sends SIGTERM: handled like Ctrl-C (a checkpoint, the ledger
    row ``interrupted``, the resume hint), exit 128 + 15; the run then resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from greendiff.train import checkpoint_dirs

    exe = os.path.join(os.path.dirname(sys.executable), "greendiff")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GREENDIFF_THREADS": "1", "GREENDIFF_LEDGER": str(tmp_path / "l.sqlite")}
    proc = subprocess.Popen([exe, "train", *TINY, "--max-steps", "100000", "--batch-size", "64",
                             "--output-dir", str(tmp_path / "runs"), "--no-gpu", "--country", "FRA"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                '"step": 4' in p.read_text() for p in (tmp_path / "runs").glob("*/metrics.jsonl")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # a second TERM while it checkpoints is ignored
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "resume with: greendiff train --resume" in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    (ckpt,) = checkpoint_dirs(run_dir)
    step = int(ckpt.name.split("-")[1])
    assert step >= 4
    (run,) = Ledger(tmp_path / "l.sqlite").list_runs()
    assert run.status == "interrupted"
    done = subprocess.run([exe, "train", "--resume", str(run_dir), "--max-steps", str(step + 2), "--no-gpu", "--country", "FRA"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1]) == {"event": "completed", "step": step + 2}
