from __future__ import annotations

from datetime import datetime, timezone

import pytest

from greendiff.carbon import Location, Pue, TraceProvider, bundled_trace, country_provider
from greendiff.energy import DeviceInfo, EnergyMonitor, Meter
from greendiff.ledger import Ledger, RunRecord, Sample, WindowTotal
from greendiff.tracking import Tracker, provider_from_assumptions, summarize


class FakeMeter(Meter):
    """Cumulative joules set by the test: a GPU counter and an estimated CPU."""

    def __init__(self) -> None:
        self.energy_j = {"gpu:0": 0.0, "cpu:process-tree": 0.0}

    def devices(self):
        return [DeviceInfo("gpu:0", "gpu", "FakeGPU", "counter", "device"),
                DeviceInfo("cpu:process-tree", "cpu", "FakeCPU", "estimate:tdp-cputime", "process-tree")]

    def read_energy_j(self):
        return dict(self.energy_j)


def add(meter: FakeMeter, gpu_j: float, cpu_j: float) -> None:
    meter.energy_j["gpu:0"] += gpu_j
    meter.energy_j["cpu:process-tree"] += cpu_j


def test_tracker_prices_phases_and_devices(tmp_path):
    meter = FakeMeter()
    tracker = Tracker("t", location=Location(country="FRA"), pue=1.2, ledger=tmp_path / "l.sqlite",
                      monitor=EnergyMonitor([meter]), sample_interval_s=0.0)
    with tracker:
        for _ in range(3):
            with tracker.window("train"):
                add(meter, 3.6e5, 3.6e4)  # 0.1 kWh GPU, 0.01 kWh CPU per step
        with tracker.window("eval"):
            add(meter, 3.6e5, 0.0)
    s = tracker.summary
    fra = country_provider("FRA").row.intensity_g_per_kwh
    assert s["status"] == "completed"
    assert s["energy_kwh"] == pytest.approx(0.43)
    assert s["emissions_kg"] == pytest.approx(0.43 * 1.2 * fra / 1000)
    assert {d["key"]: d["energy_kwh"] for d in s["devices"]} == pytest.approx({"gpu:0": 0.4, "cpu:process-tree": 0.03})
    # band: GPU counter +/-5 %, CPU estimate +/-40 %
    assert s["energy_kwh_low"] == pytest.approx(0.4 * 0.95 + 0.03 * 0.6)
    assert s["energy_kwh_high"] == pytest.approx(0.4 * 1.05 + 0.03 * 1.4)
    phases = {p["name"]: p for p in s["phases"]}
    assert phases["train"]["count"] == 3 and phases["train"]["energy_j"] == pytest.approx(3 * 3.96e5)
    assert phases["eval"]["emissions_g"] == pytest.approx(0.1 * 1.2 * fra)
    assert s["pue"] == {"value": 1.2, "source": "given by the user"}
    assert s["intensity"]["source"].startswith("Our World in Data / Ember country table: FRA")
    assert Ledger(tmp_path / "l.sqlite").get_run(s["run_id"]).summary == s


def test_exception_marks_run_failed_and_keeps_measurements(tmp_path):
    meter = FakeMeter()
    tracker = Tracker("t", location=Location(country="DEU"), ledger=tmp_path / "l.sqlite", monitor=EnergyMonitor([meter]))
    with pytest.raises(RuntimeError):
        with tracker:
            add(meter, 7.2e6, 0.0)
            raise RuntimeError("boom")
    assert tracker.summary["status"] == "failed"
    assert tracker.summary["energy_kwh"] == pytest.approx(2.0)


def test_unknown_location_is_loud(tmp_path):
    tracker = Tracker("t", ledger=tmp_path / "l.sqlite", monitor=EnergyMonitor([FakeMeter()]))
    with tracker:
        pass
    assert tracker.summary["intensity"]["mean_g_per_kwh"] == pytest.approx(475.0)
    assert any(n.startswith("LOCATION UNKNOWN") for n in tracker.summary["intensity"]["notes"])


def test_samples_are_rate_limited(tmp_path):
    meter = FakeMeter()
    tracker = Tracker("t", ledger=tmp_path / "l.sqlite", monitor=EnergyMonitor([meter]), sample_interval_s=3600)
    tracker.start()
    for _ in range(100):
        with tracker.window("step"):
            add(meter, 1.0, 1.0)
    assert tracker.ledger.count_samples(tracker.run_id) == 1  # only the start sample so far
    tracker.stop()
    assert tracker.ledger.count_samples(tracker.run_id) == 2
    assert tracker.summary["phases"][0]["count"] == 100


def _record(assumptions: dict) -> RunRecord:
    devices = [{"key": "gpu:0", "kind": "gpu", "name": "G", "method": "counter", "scope": "device", "uncertainty_frac": 0.05}]
    return RunRecord(1, "r", "test", "interrupted", 0.0, None, 0.0, "h", 1, "", None, assumptions, devices, None)


def test_summary_charges_each_hour_its_own_intensity():
    """1 kWh from 10:30 to 11:30 UTC on a CISO day: half at the 10:00 hour's intensity, half at 11:00's."""
    t0 = datetime(2022, 6, 1, 10, 30, tzinfo=timezone.utc).timestamp()
    samples = [Sample(t0, 0.0, {"gpu:0": 0.0}), Sample(t0 + 3600, 10.0, {"gpu:0": 3.6e6})]
    trace = bundled_trace("CISO")
    s = summarize(_record({}), samples, [], TraceProvider(trace), Pue(1.1, "test"))
    h10 = trace.value_at(datetime(2022, 6, 1, 10, tzinfo=timezone.utc))
    h11 = trace.value_at(datetime(2022, 6, 1, 11, tzinfo=timezone.utc))
    assert s["emissions_kg"] == pytest.approx(1.1 * (0.5 * h10 + 0.5 * h11) / 1000)
    assert s["intensity"]["mean_g_per_kwh"] == pytest.approx((h10 + h11) / 2)
    assert s["cpu_time_s"] == 10.0 and s["duration_s"] == pytest.approx(3600)


def test_interrupted_run_is_summarised_from_its_last_sample(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    meter = FakeMeter()
    tracker = Tracker("t", location=Location(country="FRA"), ledger=ledger, monitor=EnergyMonitor([meter]))
    tracker.start()
    add(meter, 3.6e6, 0.0)
    tracker.sample(force=True)
    add(meter, 3.6e6, 0.0)  # never sampled: lost with the process, as with any crash
    record = ledger.get_run(tracker.run_id)
    provider, pue = provider_from_assumptions(record.assumptions)
    s = summarize(record, ledger.samples(record.id), ledger.windows(record.id), provider, pue)
    assert s["energy_kwh"] == pytest.approx(1.0)
    assert pue.value == 1.0 and "FRA" in provider.describe()


def test_phase_emissions_use_run_mean_intensity():
    t0 = datetime(2022, 6, 1, 10, 30, tzinfo=timezone.utc).timestamp()
    samples = [Sample(t0, 0.0, {"gpu:0": 0.0}), Sample(t0 + 3600, 0.0, {"gpu:0": 3.6e6})]
    s = summarize(_record({}), samples, [WindowTotal("train", 1, 3600.0, {"gpu:0": 1.8e6})],
                  TraceProvider(bundled_trace("CISO")), Pue(1.0, "t"))
    assert s["phases"][0]["emissions_g"] == pytest.approx(s["emissions_kg"] * 1000 / 2)
