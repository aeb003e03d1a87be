from __future__ import annotations

import csv
import io
import json

import pytest

from greendiff.ledger import CODECARBON_COLUMNS, codecarbon_csv, json_summary, model_card_yaml

SUMMARY = {
    "run_id": 3, "name": "unet-tiny", "ended": "2026-11-29T04:00:00+00:00", "duration_s": 100.0,
    "energy_kwh": 0.5, "emissions_kg": 0.2,
    "devices": [
        {"key": "gpu:0", "kind": "gpu", "name": "NVIDIA H200", "energy_kwh": 0.4, "method": "counter"},
        {"key": "cpu:process-tree", "kind": "cpu", "name": "AMD EPYC", "energy_kwh": 0.08, "method": "estimate:tdp-cputime"},
        {"key": "dram:process-tree", "kind": "dram", "name": "RAM", "energy_kwh": 0.02, "method": "estimate:ram-per-gb"},
    ],
    "location": {"country": "FRA", "cloud": "gcp:europe-west9", "grid": None},
    "host": {"os": "Linux", "python": "3.11.7", "cpu_count": 2, "ram_total_gb": 24.0},
    "intensity": {"source": "Google 2024", "mean_g_per_kwh": 400.0},
    "pue": {"value": 1.1, "source": "Google"},
    "methods": ["counter", "estimate:ram-per-gb", "estimate:tdp-cputime"],
}


def test_codecarbon_row_matches_its_schema_and_units():
    rows = list(csv.DictReader(io.StringIO(codecarbon_csv(SUMMARY))))
    assert len(rows) == 1 and tuple(rows[0]) == CODECARBON_COLUMNS
    row = rows[0]
    assert float(row["energy_consumed"]) == 0.5 and float(row["emissions"]) == 0.2
    assert float(row["gpu_energy"]) == 0.4 and float(row["ram_energy"]) == 0.02
    assert float(row["gpu_power"]) == pytest.approx(0.4 * 3.6e6 / 100)  # watts
    assert (row["cloud_provider"], row["cloud_region"], row["country_iso_code"]) == ("gcp", "europe-west9", "FRA")
    assert row["gpu_model"] == "NVIDIA H200" and row["pue"] == "1.1" and row["on_cloud"] == "Y"


def test_codecarbon_row_without_header_appends():
    assert codecarbon_csv(SUMMARY, header=False).count("\n") == 1


def test_codecarbon_columns_match_installed_codecarbon():
    dataclasses = pytest.importorskip("dataclasses")
    emissions_data = pytest.importorskip("codecarbon.output_methods.emissions_data")
    fields = tuple(f.name for f in dataclasses.fields(emissions_data.EmissionsData))
    assert CODECARBON_COLUMNS == fields


def test_model_card_block():
    text = model_card_yaml(SUMMARY, "fine-tuning")
    lines = text.splitlines()
    assert lines[0] == "co2_eq_emissions:"
    assert lines[1] == "  emissions: 200"  # grams
    fields = dict(line.strip().split(": ", 1) for line in lines[1:])
    assert json.loads(fields["training_type"]) == "fine-tuning"
    assert json.loads(fields["geographical_location"]) == "gcp:europe-west9"
    assert json.loads(fields["hardware_used"]) == "AMD EPYC (cpu), NVIDIA H200 (gpu), RAM (dram)"
    assert "PUE 1.1" in json.loads(fields["source"]) and "counter" in json.loads(fields["source"])


def test_json_summary_round_trips():
    assert json.loads(json_summary(SUMMARY)) == SUMMARY
