"""Hardware profiling from Python with the shared measurement options: a typed outcome and its ledger run."""

from __future__ import annotations

import json

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.plan import StepCost, Sweep
from greendiff.workflows import HardwareJob, MeasurementOptions, SweepResult, run_hardware
from tests.workflows.conftest import TINY


def test_run_hardware_meters_the_cpu_at_the_given_watts_and_records_a_ledger_run(tmp_path):
    output, ledger = tmp_path / "hw.json", tmp_path / "l.sqlite"
    outcome = run_hardware(HardwareJob(overrides=TINY, steps=2, warmup=0, output=output,
                                       measurement=MeasurementOptions(country="FRA", no_gpu=True, cpu_watts=50.0, ledger=ledger)))
    (cpu,) = outcome.devices  # --no-gpu: the CPU alone, even where a GPU is visible
    assert cpu.device == "cpu" and cpu.energy_per_sample_kwh > 0 and outcome.batch_size == 16
    assert outcome.sweeps == () and outcome.macs_per_sample > 0 and outcome.estimates
    assert json.loads(output.read_text()) == outcome.to_dict()
    (row,) = Ledger(ledger).list_runs()
    assert (row.kind, row.status) == ("hardware", "completed") and outcome.summary.status == "completed"


def test_run_hardware_refuses_a_gpu_it_is_told_not_to_meter(tmp_path):
    with pytest.raises(UserInputError, match="--devices: 'cuda:0' is not available here; available: cpu$"):
        run_hardware(HardwareJob(overrides=TINY, devices="cuda:0",
                                 measurement=MeasurementOptions(no_gpu=True, ledger=tmp_path / "l.sqlite")))


def test_a_sweep_s_saving_is_the_best_limit_against_the_highest():
    costs = (StepCost("cuda:0", "A100", 2.0, 1.0, 400.0), StepCost("cuda:0", "A100", 1.5, 1.05, 300.0),
             StepCost("cuda:0", "A100", 1.2, 1.5, 200.0))
    result = SweepResult.of(Sweep("cuda:0", "A100", True, 400.0, costs), max_slowdown=0.1)
    assert (result.best.limit_w, result.top.limit_w) == (300.0, 400.0)
    assert result.saving_frac == pytest.approx(0.25)


def test_run_hardware_records_whether_its_figures_include_warm_up(tmp_path):
    output = tmp_path / "hw.json"
    output.write_text("old")
    outcome = run_hardware(HardwareJob(overrides=TINY, devices="cpu", steps=2, warmup=1, output=output,
                                       measurement=MeasurementOptions(no_gpu=True, cpu_watts=50.0, ledger=tmp_path / "l.sqlite")))
    assert outcome.replaced and (outcome.train_steps, outcome.unmetered_steps, outcome.includes_warmup) == (2, 1, False)
    report = json.loads(output.read_text())
    assert (report["train_steps"], report["unmetered_steps"], report["includes_warmup"]) == (2, 1, False)
