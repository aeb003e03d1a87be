"""The typed run summary: its stored form key for key, reading one back, extras, and phase energy."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from greendiff.carbon import Intensity, IntensityProvider, IntensitySegment, Pue
from greendiff.ledger import RunRecord, Sample, WindowTotal, parse_summary
from greendiff.tracking import PhaseEnergy, RunSummary, summarize

T0 = datetime(2024, 3, 1, 10, tzinfo=timezone.utc).timestamp()


class ConstantProvider(IntensityProvider):
    """200 gCO2e/kWh at every hour."""

    name = "constant"

    def intensity(self, start: datetime, end: datetime) -> Intensity:
        return Intensity((IntensitySegment(start, end, 200.0),), "test constant", "static", 2023, ("typical year",))


def _recorded_run() -> RunSummary:
    """GPU 1 kWh (counter, +/-5 %) and CPU 0.5 kWh (estimate, +/-40 %) over 30 min; a train and an eval phase."""
    devices = [{"key": "gpu:0", "kind": "gpu", "name": "G", "method": "counter", "scope": "device", "uncertainty_frac": 0.05},
               {"key": "cpu:0", "kind": "cpu", "name": "C", "method": "estimate:tdp-cputime", "scope": "process-tree",
                "uncertainty_frac": 0.4, "note": "TDP share"}]
    assumptions = {"location": {"country": "FRA"}, "host": {"cpu": "C"}, "meter_notes": ["CPU estimated"]}
    record = RunRecord(7, "small", "train", "completed", T0, None, T0, "h", 1, "greendiff train", 0, assumptions,
                       devices, None)
    samples = [Sample(T0, 0.0, {"gpu:0": 0.0, "cpu:0": 0.0}), Sample(T0 + 1800, 900.0, {"gpu:0": 3.6e6, "cpu:0": 1.8e6})]
    windows = [WindowTotal("train", 2, 1000.0, {"gpu:0": 2.7e6, "cpu:0": 0.0}), WindowTotal("eval", 1, 300.0, {"gpu:0": 9e5})]
    return summarize(record, samples, windows, ConstantProvider(), Pue(1.5, "given"))


EXPECTED = {
    "run_id": 7, "name": "small", "kind": "train", "status": "completed", "command": "greendiff train",
    "started": "2024-03-01T10:00:00+00:00", "ended": "2024-03-01T10:30:00+00:00", "duration_s": 1800.0, "cpu_time_s": 900.0,
    "energy_j": 5.4e6, "energy_kwh": 1.5, "energy_kwh_low": 1.25, "energy_kwh_high": 1.75,
    "emissions_kg": 0.45, "emissions_kg_low": 0.375, "emissions_kg_high": 0.525,
    "devices": [
        {"key": "gpu:0", "kind": "gpu", "name": "G", "method": "counter", "scope": "device", "uncertainty_frac": 0.05,
         "note": "", "energy_j": 3.6e6, "energy_kwh": 1.0, "emissions_g": 300.0},
        {"key": "cpu:0", "kind": "cpu", "name": "C", "method": "estimate:tdp-cputime", "scope": "process-tree",
         "uncertainty_frac": 0.4, "note": "TDP share", "energy_j": 1.8e6, "energy_kwh": 0.5, "emissions_g": 150.0},
    ],
    "phases": [
        {"name": "train", "count": 2, "duration_s": 1000.0, "energy_j": 2.7e6,
         "energy_by_device_j": {"gpu:0": 2.7e6, "cpu:0": 0.0}, "emissions_g": 225.0},
        {"name": "eval", "count": 1, "duration_s": 300.0, "energy_j": 9e5, "energy_by_device_j": {"gpu:0": 9e5},
         "emissions_g": 75.0},
    ],
    "location": {"country": "FRA"}, "host": {"cpu": "C"},
    "intensity": {"source": "test constant", "kind": "static", "year": 2023, "mean_g_per_kwh": 200.0,
                  "notes": ["typical year"], "fallback": None},
    "pue": {"value": 1.5, "source": "given"},
    "methods": ["counter", "estimate:tdp-cputime"], "notes": ["CPU estimated"],
    "uncertainty": "energy band = sum over devices of energy x (1 +/- method uncertainty); "
                   "emissions band scales it at the run's mean intensity; intensity data error not included",
}


def _same(actual, expected, where="summary"):
    """Equal JSON values, keys in the same order, floats to 1e-9 relative."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), where
        for key in expected:
            _same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9), where
    else:
        assert actual == expected and type(actual) is type(expected), where


def test_to_dict_is_the_stored_summary_key_for_key():
    s = _recorded_run()
    _same(s.to_dict(), EXPECTED)
    assert parse_summary(s.to_dict()) == s.to_dict()  # the ledger's own check accepts it
    assert s.energy_kwh == pytest.approx(1.5) and s.devices[1].note == "TDP share" and s.pue.value == 1.5


def test_from_dict_reads_back_the_stored_form_exactly():
    s = _recorded_run()
    stored = json.loads(json.dumps(s.to_dict()))  # as the ledger and emissions.json hold it
    again = RunSummary.from_dict(stored)
    assert again == s and again.to_dict() == stored
    assert json.dumps(again.to_dict()) == json.dumps(s.to_dict())


def test_a_summary_an_older_writer_stored_keeps_its_keys():
    """No phase energy by device, no command, note, location, host or uncertainty: none is added back."""
    old = json.loads(json.dumps(EXPECTED))
    for key in ("command", "location", "host", "uncertainty"):
        del old[key]
    for d in old["devices"]:
        del d["note"]
    for p in old["phases"]:
        del p["energy_by_device_j"]
    parse_summary(old)
    assert RunSummary.from_dict(old).to_dict() == old


def test_extras_follow_the_fields_and_come_back_as_extras():
    s = _recorded_run().with_extra({"stop_reason": "max_steps reached", "carbon_aware": {"policy": "p"}})
    d = s.to_dict()
    assert list(d)[-2:] == ["stop_reason", "carbon_aware"] and list(d)[:-2] == list(EXPECTED)
    assert s.stop_reason == "max_steps reached" and s.carbon_aware == {"policy": "p"}
    again = RunSummary.from_dict(d)
    assert again.extra == {"stop_reason": "max_steps reached", "carbon_aware": {"policy": "p"}} and again == s
    assert _recorded_run().stop_reason is None and _recorded_run().with_extra(None).extra == {}
    assert s.with_extra({"stop_reason": "later"}).stop_reason == "later"  # a later extra wins, as dict merging did
    with pytest.raises(ValueError, match="energy_kwh"):
        _recorded_run().with_extra({"energy_kwh": 0.0})


def test_phase_energy_counts_sub_phases_and_nothing_else():
    phases = (PhaseEnergy("train", 4, 8.0, 7.2e6, None, 1.0), PhaseEnergy("eval", 2, 2.0, 1.8e6, {"gpu:0": 1.8e6}, 0.5),
              PhaseEnergy("eval-sampling-4", 1, 1.0, 3.6e5, {"gpu:0": 3.6e5}, 0.1),
              PhaseEnergy("evaluation", 1, 1.0, 3.6e6, None, 1.0))
    s = RunSummary.from_dict({**EXPECTED, "phases": [p.to_dict() for p in phases]})
    assert s.phase_energy_kwh("eval") == pytest.approx(0.6) and s.phase_energy_j("eval") == pytest.approx(2.16e6)
    merged = s.phase("eval")
    assert (merged.count, merged.duration_s, merged.emissions_g) == (3, 3.0, pytest.approx(0.6))
    assert merged.energy_by_device_j == pytest.approx({"gpu:0": 2.16e6})
    assert s.phase("train") == phases[0]
    assert s.phase("checkpoint") is None and s.phase_energy_kwh("checkpoint") == 0.0
    assert s.phase_energy_kwh("evaluation") == pytest.approx(1.0)


def test_a_summary_stored_with_a_traces_resolution_as_its_kind_reads_as_a_trace():
    old = {**json.loads(json.dumps(EXPECTED)), "intensity": {**EXPECTED["intensity"], "kind": "half-hourly"}}
    intensity = RunSummary.from_dict(old).intensity
    assert (intensity.kind, intensity.resolution) == ("trace", "half-hourly")
    stored = RunSummary.from_dict(old).to_dict()["intensity"]
    assert (stored["kind"], stored["resolution"]) == ("trace", "half-hourly") and parse_summary({**old, "intensity": stored})
    static = RunSummary.from_dict(EXPECTED).intensity
    assert (static.kind, static.resolution) == ("static", None)


def test_the_public_form_has_one_unit_per_quantity():
    books = {"policy": "p", "pauses": 1, "waited_h": 1.0, "active_h": 0.5, "emissions_g": 500.0,
             "straight_through_g": 520.0, "saved_g": 20.0, "saved_frac": 0.04, "deadline": None, "met_deadline": None}
    s = _recorded_run().with_extra({"carbon_aware": books, "prior_energy_kwh": 0.25})
    public = s.to_public_dict()
    assert "energy_j" not in public and public["energy_kwh"] == pytest.approx(1.5) and public["emissions_kg"] == pytest.approx(0.45)
    assert public["devices"][0] == {"key": "gpu:0", "kind": "gpu", "name": "G", "method": "counter", "scope": "device",
                                    "uncertainty_frac": 0.05, "note": "", "energy_kwh": 1.0,
                                    "emissions_kg": pytest.approx(0.3)}
    assert public["phases"][0] == {"name": "train", "count": 2, "duration_s": 1000.0, "energy_kwh": pytest.approx(0.75),
                                   "energy_by_device_kwh": pytest.approx({"gpu:0": 0.75, "cpu:0": 0.0}),
                                   "emissions_kg": pytest.approx(0.225)}
    ca = public["carbon_aware"]
    assert (ca["emissions_kg"], ca["straight_through_kg"], ca["saved_kg"], ca["waited_h"]) == (0.5, 0.52, 0.02, 1.0)
    assert not {"emissions_g", "straight_through_g", "saved_g"} & set(ca)
    assert public["prior_energy_kwh"] == 0.25 and public["intensity"] == s.to_dict()["intensity"]
    text = json.dumps(public)
    for suffix in ('_j"', '_g"', '_j":', '_g":'):
        assert suffix not in text, suffix
