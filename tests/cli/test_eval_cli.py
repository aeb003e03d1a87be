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
    code, out, err = run_cli(capsys, "eval", "--run", str(trained_run), "--n", "40", "--seeds", "2",
                             "--kid-subset", "20", "--steps", "3", "--json")
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
    args = ["eval", "--run", str(trained_run), "--n", "20", "--kid-subset", "10", "--steps", "2", "--json"]
    first = json.loads(run_cli(capsys, *args)[1])["results"]
    second = json.loads(run_cli(capsys, *args)[1])["results"]
    assert first == second


@pytest.mark.parametrize(("argv", "message"), [
    (["--n", "10", "--kid-subset", "50"], "too few samples for KID"),
    (["--features", "inception:/nonexistent/pt_inception.pth"], "never downloads"),
    (["--features", "clip"], "unknown --features"),
])
def test_bad_eval_input(capsys, trained_run, argv, message):
    code, _, err = run_cli(capsys, "eval", "--run", str(trained_run), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_eval_of_a_directory_without_pipeline(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--run", str(tmp_path))
    assert code == 2 and "no trained pipeline" in err
