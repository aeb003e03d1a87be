"""``greendiff eval --ema-length``: a run's post-hoc EMA (EDM2) scored at a chosen or searched length."""

from __future__ import annotations

import json
import re

import pytest
import torch

from greendiff.cli._app import main
from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.train import load_run_model
from greendiff.train._posthoc_ema import reconstruct
from greendiff.workflows import EvalJob, run_eval
from greendiff.workflows._eval import EMA_LENGTH_GRID, choose_ema_length
from greendiff.workflows._progress import NullProgress
from tests.workflows.conftest import measurement, trained


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory):
    """A 4-step run with 2 post-hoc EMA snapshots (steps 2 and 4)."""
    return trained(tmp_path_factory.mktemp("phema"), {"optim.ema_snapshots": 2})


class Bars(NullProgress):
    def __init__(self) -> None:
        self.started = []

    def on_start(self, label, total):
        self.started.append((label, total))


def params_equal(unet, weights) -> bool:
    named = dict(unet.named_parameters())
    return all(torch.equal(named[k].detach(), v) for k, v in weights.items())


def test_a_given_length_loads_its_reconstruction(snapshotted):
    unet = load_run_model(snapshotted).unet
    job = EvalJob(run=snapshotted, ema_length="0.08")
    assert job.ema_length == 0.08  # the CLI's string, parsed
    chosen, search = choose_ema_length(job, unet, lambda n: pytest.fail("a given length needs no search"), NullProgress())
    assert chosen == 0.08 and search == ()
    assert params_equal(unet, reconstruct(snapshotted, 0.08))
    assert not params_equal(load_run_model(snapshotted).unet, reconstruct(snapshotted, 0.08))  # not the pipeline's own


def test_auto_scores_every_length_on_a_small_sample_and_loads_the_best(snapshotted):
    unet, bars, asked = load_run_model(snapshotted).unet, Bars(), []

    def fake_fid(n: int) -> float:  # lowest at 0.13: found by which weights are loaded now
        sigma = next(s for s in EMA_LENGTH_GRID if params_equal(unet, reconstruct(snapshotted, s)))
        asked.append(n)
        return abs(sigma - 0.13) * 100

    chosen, search = choose_ema_length(EvalJob(run=snapshotted, n=500, ema_length="auto"), unet, fake_fid, bars)
    assert chosen == 0.13 and [s for s, _ in search] == list(EMA_LENGTH_GRID)
    assert search[0] == (0.02, pytest.approx(11.0))
    assert asked == [200] * len(EMA_LENGTH_GRID) and bars.started == [("choosing the EMA length", 200 * 9)]
    assert params_equal(unet, reconstruct(snapshotted, 0.13))


def test_eval_at_an_ema_length_runs_and_reports_it(tmp_path, capsys, snapshotted):
    args = ["eval", "--run", str(snapshotted), "--samples", "8", "--kid-subset", "4", "--sample-steps", "1",
            "--ledger", str(tmp_path / "l.sqlite"), "--country", "FRA", "--no-gpu", "--json"]
    assert main([*args, "--ema-length", "0.08"]) == 0
    at = json.loads(capsys.readouterr().out)
    assert at["ema_length"] == 0.08 and "ema_search" not in at
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "ema_length" not in plain and plain["results"][0]["fid"] != at["results"][0]["fid"]


def test_eval_auto_reports_each_length_and_scores_the_best(tmp_path, snapshotted):
    outcome = run_eval(EvalJob(run=snapshotted, n=8, steps=1, kid_subset=4, ema_length="auto",
                               measurement=measurement(tmp_path / "l.sqlite")))
    report = outcome.report
    assert [s for s, _ in report.ema_search] == list(EMA_LENGTH_GRID)
    assert report.ema_length == min(report.ema_search, key=lambda row: row[1])[0]
    assert report.to_dict()["ema_search"][0]["ema_length"] == 0.02 and report.energy_kwh > 0


@pytest.mark.parametrize("value, message", [
    ("0.5", r"--ema-length 0.5 is not an EMA length: a sigma_rel in \(0, 0.3\]"),
    ("0", "is not an EMA length"), ("-0.1", "is not an EMA length"), ("nan", "is not an EMA length"),
    ("best", "--ema-length 'best' is neither a number nor auto"),
])
def test_bad_ema_lengths_are_one_line_errors_before_anything(tmp_path, capsys, snapshotted, value, message):
    ledger = tmp_path / "l.sqlite"
    code = main(["eval", "--run", str(snapshotted), "--samples", "8", "--ledger", str(ledger), "--ema-length", value])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err)
    assert not ledger.exists()
    with pytest.raises(UserInputError, match=message):
        EvalJob(run=snapshotted, ema_length=value)


def test_a_run_without_snapshots_is_a_one_line_error_before_the_ledger_row(tmp_path, capsys, parent):
    ledger = tmp_path / "l.sqlite"
    code = main(["eval", "--run", str(parent), "--samples", "8", "--ledger", str(ledger), "--ema-length", "auto"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "has no post-hoc EMA snapshots" in err and "--ema-snapshots N" in err
    assert not ledger.exists() or Ledger(ledger).list_runs() == []
