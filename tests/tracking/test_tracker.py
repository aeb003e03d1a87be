from __future__ import annotations

from datetime import datetime, timezone

import pytest

from greendiff.carbon import Location, Pue, TraceProvider, bundled_trace, country_provider
from greendiff.energy import DeviceInfo, EnergyMonitor, Meter
from greendiff.ledger import Ledger, RunRecord, Sample, WindowTotal
from greendiff.tracking import PueUsed, Tracker, provider_from_assumptions, summarize


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
    assert s.status == "completed"
    assert s.energy_kwh == pytest.approx(0.43)
    assert s.emissions_kg == pytest.approx(0.43 * 1.2 * fra / 1000)
    assert {d.key: d.energy_kwh for d in s.devices} == pytest.approx({"gpu:0": 0.4, "cpu:process-tree": 0.03})
    # band: GPU counter +/-5 %, CPU estimate +/-40 %
    assert s.energy_kwh_low == pytest.approx(0.4 * 0.95 + 0.03 * 0.6)
    assert s.energy_kwh_high == pytest.approx(0.4 * 1.05 + 0.03 * 1.4)
    phases = {p.name: p for p in s.phases}
    assert phases["train"].count == 3 and phases["train"].energy_j == pytest.approx(3 * 3.96e5)
    assert phases["eval"].emissions_g == pytest.approx(0.1 * 1.2 * fra)
    assert s.pue == PueUsed(1.2, "given by the user")
    assert s.intensity.source.startswith("Our World in Data / Ember country table: FRA")
    assert Ledger(tmp_path / "l.sqlite").get_run(s.run_id).summary == s.to_dict()


def test_exception_marks_run_failed_and_keeps_measurements(tmp_path):
    meter = FakeMeter()
    tracker = Tracker("t", location=Location(country="DEU"), ledger=tmp_path / "l.sqlite", monitor=EnergyMonitor([meter]))
    with pytest.raises(RuntimeError):
        with tracker:
            add(meter, 7.2e6, 0.0)
            raise RuntimeError("boom")
    assert tracker.summary.status == "failed"
    assert tracker.summary.energy_kwh == pytest.approx(2.0)


def test_unknown_location_is_loud(tmp_path):
    tracker = Tracker("t", ledger=tmp_path / "l.sqlite", monitor=EnergyMonitor([FakeMeter()]))
    with tracker:
        pass
    assert tracker.summary.intensity.mean_g_per_kwh == pytest.approx(475.0)
    assert any(n.startswith("LOCATION UNKNOWN") for n in tracker.summary.intensity.notes)


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
    assert tracker.summary.phases[0].count == 100


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
    assert s.emissions_kg == pytest.approx(1.1 * (0.5 * h10 + 0.5 * h11) / 1000)
    assert s.intensity.mean_g_per_kwh == pytest.approx((h10 + h11) / 2)
    assert s.cpu_time_s == 10.0 and s.duration_s == pytest.approx(3600)


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
    assert s.energy_kwh == pytest.approx(1.0)
    assert pue.value == 1.0 and "FRA" in provider.describe()


def test_phase_emissions_use_run_mean_intensity():
    t0 = datetime(2022, 6, 1, 10, 30, tzinfo=timezone.utc).timestamp()
    samples = [Sample(t0, 0.0, {"gpu:0": 0.0}), Sample(t0 + 3600, 0.0, {"gpu:0": 3.6e6})]
    s = summarize(_record({}), samples, [WindowTotal("train", 1, 3600.0, {"gpu:0": 1.8e6})],
                  TraceProvider(bundled_trace("CISO")), Pue(1.0, "t"))
    assert s.phases[0].emissions_g == pytest.approx(s.emissions_kg * 1000 / 2)


# -- pricing with a labelled fallback (issue 18) ------------------------------------------------------

def _two_hour_trace(tmp_path) -> TraceProvider:
    """10:00-12:00 UTC on 2024-03-01: 100 g then 300 g (mean 200 g)."""
    from greendiff.carbon import load_trace

    path = tmp_path / "t.csv"
    path.write_text("timestamp,intensity\n2024-03-01T10:00:00Z,100\n2024-03-01T11:00:00Z,300\n")
    return TraceProvider(load_trace(str(path)))


def test_a_trace_that_ends_mid_run_prices_the_rest_at_its_mean(tmp_path):
    from greendiff.tracking import FallbackProvider, static_provider

    provider = FallbackProvider(_two_hour_trace(tmp_path), static_provider(Location(country="FRA")))
    t = lambda h, m=0: datetime(2024, 3, 1, h, m, tzinfo=timezone.utc)  # noqa: E731
    inside = provider.intensity(t(10), t(12))
    assert inside.mean_g_per_kwh() == 200.0 and not getattr(inside, "fallback", "")
    # 1 kWh spread evenly over 11:00-13:00: the covered hour at 300 g, the hour after the trace at its mean
    record = _record({})
    samples = [Sample(t(11).timestamp(), 0.0, {"gpu:0": 0.0}), Sample(t(13).timestamp(), 0.0, {"gpu:0": 3.6e6})]
    s = summarize(record, samples, [], provider, Pue(1.0, "t"))
    assert s.emissions_kg == pytest.approx((0.5 * 300 + 0.5 * 200) / 1e3, rel=1e-3)
    assert "the 1.00 h outside it priced at the trace's mean, 200 gCO2e/kWh (fallback)" in s.intensity.fallback
    # wholly outside: the trace's mean throughout
    outside = provider.intensity(t(20), t(21))
    assert outside.mean_g_per_kwh() == 200.0 and "the 1.00 h outside it" in outside.fallback


def test_a_run_whose_trace_is_gone_is_priced_from_its_country_table(tmp_path):
    from greendiff.tracking import run_pricing

    pricing = run_pricing({"location": {"grid": str(tmp_path / "deleted.csv"), "country": "DEU"},
                           "pue": {"value": 1.5, "source": "t"}})
    t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
    result = pricing.provider.intensity(t0, t0.replace(hour=1))
    assert result.mean_g_per_kwh() == country_provider("DEU").row.intensity_g_per_kwh
    assert result.fallback.startswith("the run's intensity source (grid ") and "unknown grid" in result.fallback
    assert result.fallback.endswith("priced with " + country_provider("DEU").row.source + " instead (fallback)")
    assert pricing.pue == Pue(1.5, "t") and pricing.problems == ()
    # nothing usable at all: the world average, labelled, never an exception
    pricing = run_pricing({"location": "mars", "pue": {"value": float("nan")}, "live": "electricitymaps", "zone": 3})
    assert pricing.provider.intensity(t0, t0.replace(hour=1)).mean_g_per_kwh() == 475.0
    assert pricing.pue.value == 1.0 and len(pricing.problems) == 2


def test_the_tracker_prices_past_its_trace_and_a_failed_summary_still_closes_the_row(tmp_path, monkeypatch):
    from datetime import timedelta

    from greendiff.carbon import HourlyTrace

    now = datetime.now(timezone.utc).replace(microsecond=0)
    trace = HourlyTrace([now - timedelta(seconds=10) + timedelta(seconds=i) for i in range(12)], [100.0] * 12, "short")
    meter = FakeMeter()
    tracker = Tracker("t", location=Location(grid="short"), provider=TraceProvider(trace), ledger=tmp_path / "l.sqlite",
                      monitor=EnergyMonitor([meter]), sample_interval_s=0.0)
    tracker.start()
    monkeypatch.setattr("greendiff.tracking._tracker._now_window",
                        lambda: (now + timedelta(hours=2), now + timedelta(hours=2, seconds=1)))
    assert tracker.intensity_now_g_per_kwh() == 100.0  # past the trace: its mean, not an exception
    monkeypatch.setattr(Tracker, "_summarize", lambda self, status: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        tracker.stop("completed", 0)
    record = tracker.ledger.get_run(tracker.run_id)
    assert record.status == "completed" and record.exit_code == 0 and record.summary is None  # closed, priced on read


# -- emissions so far: the ledger's accounting, up to now (issue 19) ----------------------------------------------------

class ClockMonitor(EnergyMonitor):
    """An :class:`EnergyMonitor` whose readings carry a fake clock's time (``clock[0]``, unix seconds)."""

    def __init__(self, meters, clock):
        super().__init__(meters)
        self.clock = clock

    def read(self):
        from greendiff.energy._monitor import Reading

        energy = {}
        for meter in self._meters:
            energy.update(meter.read_energy_j())
        return Reading(self.clock[0], self.clock[0], energy)


def _hourly(tmp_path, values):
    from greendiff.carbon import load_trace

    t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
    rows = "".join(f"{t0.replace(hour=h).isoformat()},{v}\n" for h, v in enumerate(values))
    (tmp_path / "t.csv").write_text("timestamp,intensity\n" + rows)
    return t0, TraceProvider(load_trace(str(tmp_path / "t.csv")))


def test_emissions_so_far_charge_each_hour_its_own_intensity_as_the_summary_does(tmp_path, monkeypatch):
    """GPU 1 kWh per 20 min from 00:40 to 02:00 (100, 300, 50 g/kWh by hour), PUE 1.5; some energy between two
    ledger samples (a long sample interval): the figure so far is the summary's at every point."""
    t0, provider = _hourly(tmp_path, [100, 300, 50])
    clock, meter = [t0.timestamp() + 2400], FakeMeter()
    monkeypatch.setattr("greendiff.tracking._tracker._now_window", lambda: (t0, t0.replace(second=1)))
    tracker = Tracker("t", pue=1.5, provider=provider, ledger=tmp_path / "l.sqlite",
                      monitor=ClockMonitor([meter], clock), sample_interval_s=3600).start()
    so_far = []
    for _ in range(4):
        clock[0] += 1200
        add(meter, 3.6e6, 0.0)
        so_far.append(tracker.emissions_so_far_kg())
    # 00:40-01:00 at 100; 01:00-02:00 at 300
    assert so_far == pytest.approx([0.15, 0.6, 1.05, 1.5])
    assert tracker.stop().emissions_kg == pytest.approx(so_far[-1])


def test_loop_tracker_reports_the_ledgers_co2e(tmp_path, monkeypatch):
    from greendiff.integrations import LoopTracker

    t0, provider = _hourly(tmp_path, [100, 400])
    clock, meter = [t0.timestamp() + 3000], FakeMeter()
    monkeypatch.setattr("greendiff.tracking._tracker._now_window", lambda: (t0, t0.replace(second=1)))
    loop = LoopTracker(Tracker("t", pue=1.0, provider=provider, ledger=tmp_path / "l.sqlite",
                               monitor=ClockMonitor([meter], clock)), "test")
    loop.begin()
    clock[0] += 1200  # 00:50 to 01:10, 1 kWh: half at 100, half at 400
    add(meter, 3.6e6, 0.0)
    assert loop.metrics() == pytest.approx({"energy_kwh": 1.0, "emissions_kg": 0.25})
    assert loop.state_dict() == pytest.approx({"energy_j": 3.6e6, "emissions_kg": 0.25})
    assert loop.end().emissions_kg == pytest.approx(0.25)


def test_a_pue_with_its_source_is_taken_by_the_constructor(tmp_path):
    from greendiff.errors import UserInputError

    tracker = Tracker("t", pue=Pue(1.2, "the run's location (run/location.toml)"), ledger=tmp_path / "l.sqlite")
    assert tracker.pue == Pue(1.2, "the run's location (run/location.toml)")
    assert Tracker("t", pue=1.3, ledger=tmp_path / "l.sqlite").pue == Pue(1.3, "given by the user")
    with pytest.raises(UserInputError, match="PUE must be >= 1.0"):
        Tracker("t", pue=Pue(0.9, "a typo"), ledger=tmp_path / "l.sqlite")
