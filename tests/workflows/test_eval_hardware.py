"""Scoring and hardware profiling called from Python: their reports and ledger rows."""

from __future__ import annotations

import json

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.workflows import EvalJob, HardwareJob, MeasurementOptions, run_eval, run_hardware
from tests.workflows.conftest import TINY, measurement


def test_run_eval_scores_each_seed_under_one_ledger_run(tmp_path, parent):
    ledger = tmp_path / "l.sqlite"
    outcome = run_eval(EvalJob(run=parent, n=16, seeds=2, steps=2, kid_subset=8, measurement=measurement(ledger)))
    assert [r.seed for r in outcome.results] == [0, 1] and all(r.sampler_steps == 2 for r in outcome.results)
    assert outcome.report.n == 16 and set(outcome.report.spread) >= {"fid", "kid"}
    assert outcome.report.to_dict()["results"][1] == {**outcome.results[1].quality.to_dict(), "seed": 1, "sampler_steps": 2}
    (row,) = Ledger(ledger).list_runs()
    assert (row.id, row.kind, row.status) == (outcome.report.ledger_run_id, "eval", "completed")


def test_run_eval_refuses_a_kid_subset_above_n_before_the_ledger(tmp_path, parent):
    with pytest.raises(UserInputError, match="exceeds --samples 8"):
        run_eval(EvalJob(run=parent, n=8, kid_subset=16, measurement=measurement(tmp_path / "l.sqlite")))
    assert not (tmp_path / "l.sqlite").exists()


def test_run_hardware_measures_the_cpu_and_writes_its_report(tmp_path):
    output = tmp_path / "hw.json"
    outcome = run_hardware(HardwareJob(overrides={**TINY}, devices="cpu", steps=2, warmup=0, output=output,
                                       measurement=MeasurementOptions(no_gpu=True, cpu_watts=50.0, ledger=tmp_path / "l.sqlite")))
    report = outcome.to_dict()
    (cpu,) = report["devices"]
    assert cpu["device"] == "cpu" and cpu["energy_per_sample_kwh"] > 0 and report["batch_size"] == 16
    assert report["sweeps"] == [] and report["macs_per_sample"] > 0
    assert json.loads(output.read_text()) == report
