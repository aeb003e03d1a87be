"""The CLI's renderers print every duration with the one formatter (scaled: seconds, minutes or hours)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from greendiff.cli._render import fmt_duration, render_carbon_aware
from greendiff.display import duration_text

CARBON_AWARE = {"policy": "threshold", "pauses": 1, "waited_h": 0.01, "active_h": 4.0, "emissions_g": 0.5,
                "straight_through_g": 0.6, "saved_g": 0.1, "saved_frac": 1 / 6, "deadline": None, "met_deadline": None}


def rendered(ca: dict) -> str:
    out = io.StringIO()
    render_carbon_aware(ca, Console(file=out, width=200))
    return out.getvalue().strip()


def test_a_short_carbon_aware_wait_is_shown_in_seconds_not_as_zero_hours():
    """Ctrl-C 36 s into a pause used to read "waited 0.0 h"."""
    assert rendered(CARBON_AWARE) == ("carbon-aware (threshold): 1 pause, waited 36.0 s, trained 4.00 h · 500 mg CO2e "
                                      "against 600 mg straight through: saved 100 mg (16.7%)")


@pytest.mark.parametrize("waited_h, pauses, shown", [
    (0.2, 2, "2 pauses, waited 12.0 min"), (11.5, 3, "3 pauses, waited 11.5 h"), (0.0, 0, "0 pauses, waited 0 s"),
])
def test_waits_scale_to_minutes_and_hours(waited_h, pauses, shown):
    assert f": {shown}, trained 4.00 h" in rendered({**CARBON_AWARE, "waited_h": waited_h, "pauses": pauses})


def test_a_run_that_never_paused_claims_no_saving():
    """"0 pauses, waited 0 s … saved 0.00000182 mg (0.0%)": the two pricings' rounding read as a saving."""
    ca = {**CARBON_AWARE, "pauses": 0, "waited_h": 0.0, "emissions_g": 0.5, "straight_through_g": 0.5 + 1.82e-9,
          "saved_g": 1.82e-9, "saved_frac": 3.6e-9}
    assert rendered(ca) == ("carbon-aware (threshold): 0 pauses, waited 0 s, trained 4.00 h · 500 mg CO2e, "
                            "run straight through: no saving")
    assert rendered({**ca, "deadline": "2026-01-01T00:00:00+00:00", "met_deadline": True}).endswith(
        "no saving · deadline met")


def test_the_cli_has_one_duration_formatter_the_reports():
    assert fmt_duration is duration_text
    assert [fmt_duration(s) for s in (36, 720, 41_400)] == ["36.0 s", "12.0 min", "11.5 h"]


def test_hints_are_the_clis_added_when_it_renders_not_stored_in_the_summary():
    from greendiff.carbon import DEFAULT_PUE, INDUSTRY_PUE, WorldAverageProvider
    from greendiff.cli._render import LOCATION_HINT, intensity_line, note_line, pue_line
    from greendiff.tracking import IntensityUsed, PueUsed

    assert "--" not in DEFAULT_PUE[1]
    assert pue_line(PueUsed(*DEFAULT_PUE)) == (
        "PUE: 1.00, default 1.0: no facility overhead counted (on-premise machine); pass --pue for a data centre "
        "(industry average 1.58, Uptime Institute 2023)")
    assert INDUSTRY_PUE.value == 1.58 and "Uptime Institute" in INDUSTRY_PUE.source
    assert pue_line(PueUsed(1.1, "Google fleet-average PUE 1.10")) == "PUE: 1.10, Google fleet-average PUE 1.10"
    stored_with_hint = DEFAULT_PUE[1] + "; pass --pue for a data centre (industry average 1.58, Uptime Institute 2023)"
    assert pue_line(PueUsed(1.0, stored_with_hint)).count("--pue") == 1  # an older run's row: said once
    bare_note = "LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x."
    assert note_line(bare_note) == f"{bare_note} {LOCATION_HINT}"
    assert note_line(WorldAverageProvider.NOTE).count("--country") == 1
    assert note_line("2022 trace used as a typical year") == "2022 trace used as a typical year"
    half_hourly = IntensityUsed("UK Carbon Intensity API", "live", None, 150.0, (), None, "half-hourly")
    assert intensity_line(half_hourly) == "intensity: 150 gCO2e/kWh, UK Carbon Intensity API (live, half-hourly)"
    assert intensity_line(IntensityUsed("t.csv", "trace", 2024, 99.6, (), None, "10-second")).endswith("(10-second)")



def _device(key: str, name: str, method: str, energy_j: float) -> dict:
    return {"key": key, "kind": key.split(":")[0], "name": name, "method": method, "scope": "process",
            "uncertainty_frac": 0.3, "note": None, "energy_j": energy_j, "energy_kwh": energy_j / 3.6e6,
            "emissions_g": energy_j / 3.6e6 * 50.0}


LONG_NAMES = [("cpu:0", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "estimate:ccf-vcpu-cputime", 3e4),
              ("dram", "DRAM", "dram:process-tree", 2e3), ("gpu:0", "NVIDIA H200", "nvml:total-energy", 5e5)]


def rendered_summary(width: int) -> list[str]:
    from greendiff.cli._render import render_summary
    from greendiff.tracking import RunSummary

    summary = RunSummary.from_dict({
        "run_id": 7, "name": "20261130-101010-intr", "kind": "train", "status": "completed", "started": None,
        "ended": None, "duration_s": 2.0, "cpu_time_s": 1.0, "energy_j": 532e3, "energy_kwh": 532e3 / 3.6e6,
        "energy_kwh_low": 0.1, "energy_kwh_high": 0.2, "emissions_kg": 0.0074, "emissions_kg_low": 0.005,
        "emissions_kg_high": 0.01, "devices": [_device(*d) for d in LONG_NAMES], "phases": [],
        "intensity": {"source": "t", "kind": "static", "mean_g_per_kwh": 50.0, "notes": []},
        "pue": {"value": 1.0, "source": "x"}, "methods": [], "notes": []})
    out = io.StringIO()
    render_summary(summary, Console(file=out, width=width))
    return out.getvalue().splitlines()


def test_the_device_table_at_80_columns_keeps_method_ids_and_keys_whole_and_wraps_names_between_words():
    """``estimate:ccf-vcpu-cputi|me`` and ``dram:process-tre|e`` used to break mid-word at 80 columns."""
    lines = rendered_summary(80)
    assert max(len(line) for line in lines) <= 80
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["cpu:0"], ["dram"], ["gpu:0"])}
    assert rows["cpu:0"][-6:] == ["estimate:ccf-vcpu-cputime", "8.33", "Wh", "30%", "417", "mg"]
    assert rows["dram"][-6:] == ["dram:process-tree", "556", "mWh", "30%", "27.8", "mg"]
    assert rows["gpu:0"][-6:] == ["nvml:total-energy", "139", "Wh", "30%", "6.94", "g"]
    words = [w for line in lines[2:] for w in line.split()]
    assert {"Intel(R)", "Xeon(R)", "Platinum", "8375C", "2.90GHz", "NVIDIA", "H200"} <= set(words)


@pytest.mark.parametrize("width, header", [
    (62, ["device", "name", "method", "energy", "CO2e"]),  # the band goes first
    (50, ["device", "method", "energy", "CO2e"]),  # then the long device name
])
def test_a_narrow_device_table_drops_the_band_then_the_name_before_breaking_a_method_id(width, header):
    lines = rendered_summary(width)
    assert lines[1].split() == header
    assert max(len(line) for line in lines[:8]) <= width
    cpu = lines[3].split()
    assert cpu[0] == "cpu:0" and cpu[-5:] == ["estimate:ccf-vcpu-cputime", "8.33", "Wh", "417", "mg"]
    assert ("Intel(R)" in cpu) == ("name" in header)
