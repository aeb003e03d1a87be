from __future__ import annotations

import re

from greendiff import __version__
from greendiff.report import emissions_statement
from greendiff.tracking import RunSummary
from tests.ledger.summaries import CLOUD, COUNTRY, GRID, TYPICAL_YEAR

METHOD = ("Emissions are IT energy x PUE x grid carbon intensity; the range combines each device's measurement "
          "uncertainty, not the error of the intensity data.")


def test_statement_of_a_country_run():
    assert emissions_statement(RunSummary.from_dict(COUNTRY)) == (
        "This run (unet-tiny) used 2 x NVIDIA H200, AMD EPYC 9654 for 1.50 h in France. It consumed 500 Wh of "
        "electricity (range 450–550 Wh), measured with NVML's GPU energy counter, estimated as memory size x a power "
        "per GB and CPU time x the CPU's TDP. "
        "At a grid carbon intensity of 56.0 gCO2e/kWh (Our World in Data / Ember country table: FRA (France), 2023; "
        "a yearly average) and a PUE of 1.00 (default 1.0: no facility overhead counted (on-premise machine)), this "
        f"corresponds to 28.0 g CO2e (range 25.2–30.8 g CO2e). {METHOD} Measured with greendiff {__version__}.")


def test_statement_of_a_cloud_run_is_fixed_point():
    assert emissions_statement(RunSummary.from_dict(CLOUD)) == (
        "This run (finetune) used Intel Xeon for 42.0 s in Google Cloud europe-west1 (Belgium). It consumed 1.20 mWh "
        "of electricity (range 1.10–1.30 mWh), estimated as CPU time x the CPU's TDP. At a grid carbon "
        "intensity of 125 gCO2e/kWh (Google Cloud region carbon data 2024: gcp:europe-west1 (Belgium); a yearly "
        "average) and a PUE of 1.10 (Google fleet-average PUE 1.10 (Google 2023 environmental report)), this "
        f"corresponds to 0.164 mg CO2e (range 0.151–0.178 mg CO2e). {METHOD} Measured with greendiff {__version__}.")


def test_statement_keeps_the_typical_year_note_and_never_a_cli_hint_or_exponent():
    for summary in (COUNTRY, CLOUD, GRID):
        text = emissions_statement(RunSummary.from_dict(summary))
        assert "--" not in text and not re.search(r"\de[-+]?\d", text) and "country FRA" not in text
    grid = emissions_statement(RunSummary.from_dict(GRID))
    assert "in California (grid CISO), United States." in grid and f"Note: {TYPICAL_YEAR}." in grid
    assert "(EIA-930 hourly CISO 2022; hour by hour)" in grid
    unknown = RunSummary.from_dict({**COUNTRY, "location": {}, "intensity": {
        **COUNTRY["intensity"], "source": "world average", "year": None,
        "notes": ["LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x. Pass --country ISO3."]}})
    text = emissions_statement(unknown)
    assert "in an unstated location, priced at the world-average grid intensity." in text
    assert "(world average; year not stated; a yearly average)" in text
    assert "Note: LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x." in text and "--" not in text


def test_statement_says_how_a_traces_resolution_was_applied():
    """A half-hourly series read "(...; half-hourly)" (the statement knew only static and hourly)."""
    def basis(kind: str, resolution: str | None, year: int | None = 2024) -> str:
        intensity = {**GRID["intensity"], "source": "s", "kind": kind, "resolution": resolution, "year": year}
        return emissions_statement(RunSummary.from_dict({**GRID, "intensity": intensity}))

    assert "(s, 2024; half-hour by half-hour)" in basis("trace", "half-hourly")
    assert "(s, 2024; in 10-second steps)" in basis("trace", "10-second")
    assert "(s, 2024; hour by hour)" in basis("hourly", None)  # a summary stored before kind and resolution split
    assert "(s; live data)" in basis("live", None, None)
    assert "(s; half-hour by half-hour)" in basis("live", "half-hourly", None)


def test_statement_words_each_method_for_people_and_names_a_resumed_segment_once():
    ccf = {**CLOUD, "methods": ["estimate:ccf-vcpu-cputime", "rapl"]}
    text = emissions_statement(RunSummary.from_dict(ccf))
    assert ("measured with RAPL energy counters, estimated as CPU time x a cloud fleet-average power per vCPU "
            "(Cloud Carbon Footprint).") in text and "estimate:" not in text and "measured per device" not in text
    resumed = emissions_statement(RunSummary.from_dict({**COUNTRY, "name": "20261130-intr (resumed)", "run_id": 8}))
    assert resumed.startswith("This resumed segment of the run 20261130-intr (ledger run 8) used 2 x NVIDIA H200")
