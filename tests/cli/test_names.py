"""One name per idea (issue 20): ``sample``/``eval`` take ``--samples``, ``--sample-steps`` and ``sample``
``-o/--output`` (the old ``--n``, ``--steps``, ``--out`` are hidden aliases giving the same result), and a
finished run is named by its directory or its ledger id (``--run``, ``--teacher``, ``train --resume``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger, default_ledger_path
from tests.cli.test_compress_cli import PARENT


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def train(root: Path, *extra: str) -> tuple[Path, str, Path]:
    """A tiny trained run under ``root``: its directory, ledger id and ledger file."""
    ledger = root / "l.sqlite"
    assert main(["train", *PARENT, "--max-steps", "4", "--output-dir", str(root / "runs"), "--ledger", str(ledger),
                 *extra]) == 0
    (run_dir,) = (root / "runs").iterdir()
    (record,) = Ledger(ledger).list_runs()
    return run_dir, str(record.id), ledger


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str, Path]:
    return train(tmp_path_factory.mktemp("named"))


def test_sample_s_old_names_and_a_ledger_id_give_the_same_images(capsys, tmp_path, trained):
    run_dir, run_id, ledger = trained
    outputs = {}
    for how, argv in (("new", ["--run", str(run_dir), "--samples", "3", "--sample-steps", "2", "-o"]),
                      ("old", ["--run", str(run_dir), "--n", "3", "--steps", "2", "--out"]),
                      ("id", ["--run", run_id, "--samples", "3", "--sample-steps", "2", "--output"])):
        outputs[how] = tmp_path / f"{how}.npz"
        code, _, err = run_cli(capsys, "sample", *argv, str(outputs[how]), "--ledger", str(ledger))
        assert code == 0, err
        assert "3 images, 2 ddim steps" in err
    new, old, by_id = (np.load(outputs[how])["images"] for how in ("new", "old", "id"))
    assert new.shape == (3, 8, 8, 1)
    assert np.array_equal(new, old) and np.array_equal(new, by_id)


def test_eval_s_old_names_and_a_ledger_id_give_the_same_scores(capsys, trained):
    run_dir, run_id, ledger = trained
    common = ["--kid-subset", "4", "--json", "--ledger", str(ledger)]
    reports = {}
    for how, argv in (("new", ["--run", str(run_dir), "--samples", "8", "--sample-steps", "2"]),
                      ("old", ["--run", str(run_dir), "--n", "8", "--steps", "2"]),
                      ("id", ["--run", run_id, "--samples", "8", "--sample-steps", "2"])):
        code, out, err = run_cli(capsys, "eval", *argv, *common)
        assert code == 0, err
        reports[how] = json.loads(out)
    assert reports["new"]["results"][0]["n"] == 8 and reports["new"]["sampler_steps"] == 2
    assert reports["new"]["results"] == reports["old"]["results"] == reports["id"]["results"]


@pytest.mark.parametrize(("command", "new", "old"), [
    ("sample", ["--samples", "2"], ["--n", "2"]),
    ("sample", ["--sample-steps", "2"], ["--steps", "2"]),
    ("sample", ["-o", "a.png"], ["--out", "b.png"]),
    ("eval", ["--samples", "8"], ["--n", "8"]),
    ("eval", ["--sample-steps", "2"], ["--steps", "2"]),
])
def test_a_flag_under_both_names_is_one_line_exit_2(capsys, tmp_path, trained, command, new, old):
    code, out, err = run_cli(capsys, command, "--run", str(trained[0]), *new, *old)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"greendiff: error: {old[0]} is the old name of {new[0] if new[0] != '-o' else '--output'}: "
                                        "give one of them"]
    assert not default_ledger_path().exists() or Ledger(default_ledger_path()).list_runs() == []


@pytest.mark.parametrize(("command", "flag", "extra", "report", "key"), [
    ("prune", "--run", ["--ratio", "0.5", "--finetune-steps", "0", "--taylor-timesteps", "2"], "compression.json", "parent"),
    ("distill", "--teacher", ["--student-preset", "pico", "--max-steps", "1"], "distill.json", "teacher"),
    ("distill-steps", "--teacher", ["--rounds", "1", "--teacher-steps", "8", "--steps-per-round", "1"],
     "distill_steps.json", "teacher"),
])
def test_a_compression_names_its_parent_by_ledger_id(capsys, tmp_path, trained, command, flag, extra, report, key):
    run_dir, run_id, ledger = trained
    code, _, err = run_cli(capsys, command, flag, run_id, *extra, "--eval-samples", "0",
                           "--output-dir", str(tmp_path / "out"), "--ledger", str(ledger))
    assert code == 0, err
    (new_run,) = (tmp_path / "out").iterdir()
    assert Path(json.loads((new_run / report).read_text())[key]).resolve() == run_dir.resolve()


def test_train_resumes_a_run_named_by_its_ledger_id(capsys, tmp_path):
    run_dir, run_id, ledger = train(tmp_path)
    code, _, err = run_cli(capsys, "train", "--resume", run_id, "--max-steps", "6", "--ledger", str(ledger))
    assert code == 0, err
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1]) == {"event": "completed", "step": 6}
    assert len(json.loads((run_dir / "emissions.json").read_text())["ledger_run_ids"]) == 2


@pytest.mark.parametrize("command", [["sample", "--run"], ["eval", "--run"], ["prune", "--ratio", "0.5", "--run"],
                                     ["distill", "--teacher"], ["distill-steps", "--teacher"], ["train", "--resume"]])
def test_an_unknown_ledger_id_is_one_line_exit_2(capsys, tmp_path, command):
    code, _, err = run_cli(capsys, *command, "987", "--output-dir", str(tmp_path / "out"))[:3] \
        if command[0] in ("prune", "distill", "distill-steps") else run_cli(capsys, *command, "987")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "987" in err, err
    assert not (tmp_path / "out").exists()
