from __future__ import annotations

import json

import pytest

from greendiff.cli._app import main
from greendiff.integrations import check_loggers
from greendiff.errors import UserInputError

TINY = ["--preset", "nano", "--set", "model.block_out_channels=8,16", "--dataset", "digits", "--resolution", "8",
        "--batch-size", "16", "--sample-steps", "4", "--set", "run.num_samples=4", "--set", "run.log_every=2",
        "--max-steps", "6", "--set", "stop.eval_every=3", "--set", "stop.eval_samples=16", "--set", "stop.spread_seeds=1",
        "--country", "FRA"]


def test_tensorboard_and_mlflow_get_energy_beside_the_loss(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code = main(["train", *TINY, "--output-dir", str(tmp_path / "runs"), "--log-to", "tensorboard", "--log-to", "mlflow"])
    assert code == 0, capsys.readouterr().err
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "mlruns"]
    emissions = json.loads((run_dir / "emissions.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if m.get("event") == "eval"]

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/energy_kwh", "train/emissions_kg", "eval/fid", "eval/eval_energy_kwh", "run/energy_kwh",
            "run/emissions_kg"} <= tags
    # one unit per quantity: CO2e in kg, energy in kWh, under one name in every section; settings are not metrics
    assert not {t for t in tags if t.endswith("_g") or "co2e" in t} and "eval/n" not in tags and "train/warmup" not in tags
    assert [(e.step, e.value) for e in events.Scalars("train/energy_kwh")] == \
        [(m["step"], pytest.approx(m["energy_kwh"], rel=1e-6)) for m in logged]
    assert [(e.step, e.value) for e in events.Scalars("train/emissions_kg")] == \
        [(m["step"], pytest.approx(m["emissions_kg"], rel=1e-6)) for m in logged]
    run_kg = events.Scalars("run/emissions_kg")[-1].value
    assert run_kg == pytest.approx(emissions["emissions_kg"], rel=1e-6)
    assert 0 < events.Scalars("train/emissions_kg")[-1].value <= run_kg  # the same unit: so far <= the run's total
    assert [e.value for e in events.Scalars("eval/fid")] == [pytest.approx(e["fid"], rel=1e-6) for e in evals]
    assert events.Scalars("run/energy_kwh")[-1].value == pytest.approx(emissions["energy_kwh"], rel=1e-6)

    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("greendiff").experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.params["optim.loss_weighting"] == "min-snr" and run.data.params["model.preset"] == "nano"
    assert run.data.tags["greendiff.ledger_run_id"] == str(emissions["run_id"]) and "FRA" in run.data.tags["greendiff.location"]
    history = client.get_metric_history(run.info.run_id, "train/energy_kwh")
    assert [(h.step, h.value) for h in history] == [(m["step"], pytest.approx(m["energy_kwh"], rel=1e-6)) for m in logged]
    assert run.data.metrics["run/emissions_kg"] == pytest.approx(emissions["emissions_kg"], rel=1e-6)
    assert "eval/n" not in run.data.metrics and run.data.params["stop.eval_samples"] == "16"  # a setting: a parameter
    assert [(h.step, h.value) for h in client.get_metric_history(run.info.run_id, "train/emissions_kg")] == \
        [(m["step"], pytest.approx(m["emissions_kg"], rel=1e-6)) for m in logged]
    assert [h.value for h in client.get_metric_history(run.info.run_id, "eval/fid")] == [pytest.approx(e["fid"]) for e in evals]


def test_bad_logger_settings(tmp_path, capsys):
    with pytest.raises(UserInputError, match="--log-to 'wandb': use one of tensorboard, mlflow"):
        check_loggers(["wandb"])
    code = main(["train", *TINY, "--output-dir", str(tmp_path / "runs"), "--log-to", "wandb"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown logger 'wandb'" in err and not (tmp_path / "runs").exists()
    pytest.importorskip("mlflow")
    code = main(["train", *TINY, "--output-dir", str(tmp_path / "runs"), "--log-to", "mlflow", "--mlflow-uri", "nosuch://x"])
    err = capsys.readouterr().err
    assert code == 2 and "--log-to mlflow: cannot open the tracker" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # the empty run directory is removed


@pytest.mark.parametrize("uri", ["https://alice:s3cret@mlflow.example.org", "http://s3cret@127.0.0.1:5000/",
                                 "postgresql://alice:s3cret@db/mlflow"])
def test_a_tracking_uri_with_credentials_is_refused_without_repeating_them(tmp_path, capsys, uri):
    """The URI is saved in config.toml and the ledger, sent as an MLflow parameter and printed by --dry-run."""
    from greendiff.integrations._loggers import check_tracking_uri, make_loggers
    from greendiff.train import resolve_config

    for argv in (["--set", f"run.mlflow_uri={uri}", "--dry-run"], ["--log-to", "mlflow", "--mlflow-uri", uri]):
        code = main(["train", *TINY, "--output-dir", str(tmp_path / "runs"), *argv])
        out, err = capsys.readouterr()
        assert code == 2 and err.count("\n") == 1 and "run.mlflow_uri holds credentials (" in err, err
        assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in err and "s3cret" not in out + err
        assert not (tmp_path / "runs").exists()
    with pytest.raises(UserInputError, match=r"holds credentials \(\w+://\*\*\*@"):
        make_loggers(["mlflow"], tmp_path / "run", uri, {})
    assert resolve_config(overrides={"run.mlflow_uri": "http://127.0.0.1:5000"}).run.mlflow_uri == "http://127.0.0.1:5000"
    assert check_tracking_uri("file:///tmp/mlruns") == "file:///tmp/mlruns"
    with pytest.raises(UserInputError, match=r"^run.mlflow_uri is not a valid URI \(Invalid IPv6 URL\)$"):
        check_tracking_uri("http://[::1")
