from __future__ import annotations

import copy
import csv
import io
import json
from datetime import datetime

import pytest

from greendiff import __version__
from greendiff.errors import UserInputError
from greendiff.ledger import (
    CODECARBON_COLUMNS, append_codecarbon_csv, codecarbon_csv, intensity_citation, model_card_data, model_card_yaml,
    without_cli_hints,
)
from tests.ledger.summaries import CLOUD, COUNTRY, GRID, TYPICAL_YEAR


def test_codecarbon_row_matches_its_schema_and_units():
    rows = list(csv.DictReader(io.StringIO(codecarbon_csv([COUNTRY]))))
    assert len(rows) == 1 and tuple(rows[0]) == CODECARBON_COLUMNS
    row = rows[0]
    assert float(row["energy_consumed"]) == 0.5 and float(row["emissions"]) == 0.028
    assert float(row["gpu_energy"]) == pytest.approx(0.4) and float(row["ram_energy"]) == 0.02
    assert float(row["gpu_power"]) == pytest.approx(0.4 * 3.6e6 / 5400)  # watts
    assert (row["country_name"], row["country_iso_code"], row["on_cloud"]) == ("France", "FRA", "N")
    assert row["gpu_model"] == "NVIDIA H200" and row["gpu_count"] == "2" and row["pue"] == "1.0"
    # CodeCarbon's own timestamp: naive local time to the second, as its tracker writes datetime.now()
    local = datetime.fromisoformat(COUNTRY["ended"]).astimezone().replace(tzinfo=None)
    assert row["timestamp"] == local.strftime("%Y-%m-%dT%H:%M:%S")


def test_codecarbon_country_name_of_a_cloud_region_and_a_grid():
    row = next(csv.DictReader(io.StringIO(codecarbon_csv([CLOUD]))))
    assert (row["country_name"], row["country_iso_code"], row["cloud_provider"], row["cloud_region"]) == (
        "Belgium", "BEL", "gcp", "europe-west1")
    row = next(csv.DictReader(io.StringIO(codecarbon_csv([GRID]))))
    assert (row["country_name"], row["country_iso_code"], row["region"]) == ("United States", "USA", "CISO")


# A row as CodeCarbon 3.x's FileOutput writes it (pandas to_csv of EmissionsData: naive local timestamp, repr floats).
CODECARBON_WRITTEN = (",".join(CODECARBON_COLUMNS) + "\n"
                      "2026-11-28T09:12:44,codecarbon,5b0fa12a-3dd7-45bb-9766-cc326314d9f1,"
                      "5b0fa12a-3dd7-45bb-9766-cc326314d9f1,120.0532,1.6430339882e-05,1.3685996e-07,42.5,0.0,3.0,"
                      "0.0014174,0.0,0.0001,0.0015174,0.0,France,FRA,île-de-france,,,Linux-6.1.0-x86_64-with-glibc2.36,"
                      "3.11.7,3.0.1,8,Intel(R) Xeon(R) CPU,0,,2.35,48.85,8.0,machine,12.5,0.0,40.2,3.2,N,1.0,0.0\n")


def test_a_file_codecarbon_wrote_reads_back_with_pandas_after_our_rows(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "emissions.csv"
    path.write_text(CODECARBON_WRITTEN)
    assert append_codecarbon_csv(path, [COUNTRY, CLOUD]) is None  # same columns: appended, no backup
    frame = pd.read_csv(path, parse_dates=["timestamp"])
    assert str(frame["timestamp"].dtype).startswith("datetime64")
    local = datetime.fromisoformat(COUNTRY["ended"]).astimezone().replace(tzinfo=None)
    assert list(frame["timestamp"]) == [pd.Timestamp("2026-11-28T09:12:44"), pd.Timestamp(local), pd.Timestamp(local)]
    assert frame["energy_consumed"].dtype == "float64" and frame["emissions"].dtype == "float64"
    assert list(frame["energy_consumed"]) == [0.0015174, 0.5, 1.2e-6]
    assert list(frame["emissions"]) == [1.6430339882e-05, 0.028, 1.644e-07]
    assert list(frame["country_name"]) == ["France", "France", "Belgium"]
    assert list(frame["project_name"]) == ["codecarbon", "unet-tiny", "finetune"]


def test_appending_keeps_the_files_column_order(tmp_path):
    path = tmp_path / "emissions.csv"
    columns = list(reversed(CODECARBON_COLUMNS))
    path.write_text(",".join(columns) + "\n")
    append_codecarbon_csv(path, [COUNTRY])
    (row,) = csv.DictReader(path.open())
    assert list(row) == columns and row["project_name"] == "unet-tiny" and row["country_name"] == "France"


def test_a_file_with_other_columns_is_backed_up_as_codecarbon_does(tmp_path):
    path = tmp_path / "emissions.csv"
    for i, backup in enumerate(("emissions.csv.bak", "emissions.csv_0.bak", "emissions.csv_1.bak")):
        path.write_text(f"timestamp,project_name\n2020-01-01T00:00:00,old{i}\n")
        assert append_codecarbon_csv(path, [COUNTRY]) == tmp_path / backup
        assert (tmp_path / backup).read_text().endswith(f"old{i}\n")
        lines = path.read_text().splitlines()
        assert len(lines) == 2 and lines[0] == ",".join(CODECARBON_COLUMNS)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert append_codecarbon_csv(empty, [COUNTRY]) is None and len(empty.read_text().splitlines()) == 2


def test_appending_to_a_file_without_a_final_newline(tmp_path):
    path = tmp_path / "emissions.csv"
    path.write_text(CODECARBON_WRITTEN.rstrip("\n"))
    append_codecarbon_csv(path, [COUNTRY])
    assert [r["project_name"] for r in csv.DictReader(path.open())] == ["codecarbon", "unet-tiny"]


def test_cli_hints_are_dropped_from_pasted_text():
    assert without_cli_hints(COUNTRY["pue"]["source"]) == "default 1.0: no facility overhead counted (on-premise machine)"
    assert without_cli_hints("LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x. "
                             "Pass --country ISO3, --cloud PROVIDER:REGION or --grid NAME.") == (
        "LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x.")


def _card(text: str):
    from huggingface_hub import ModelCard

    return ModelCard(f"---\n{text}---\n\n# model\n")


def test_model_card_reads_back_through_huggingface_hub(tmp_path):
    from huggingface_hub import metadata_load

    text = model_card_yaml(CLOUD, "fine-tuning")
    assert "e-0" not in text and "emissions: 0.0001644\n" in text  # grams, fixed-point: the Hub reads 1.6e-04 as 1.6
    co2 = _card(text).data.co2_eq_emissions
    assert co2 == {"emissions": 0.0001644, "source": co2["source"], "training_type": "fine-tuning",
                   "geographical_location": "Google Cloud europe-west1 (Belgium)", "hardware_used": "Intel Xeon"}
    assert co2["source"] == (f"greendiff {__version__}, energy estimated as CPU time x the CPU's TDP; grid intensity: "
                             "Google Cloud region carbon data 2024: gcp:europe-west1 (Belgium); PUE 1.10 (Google "
                             "fleet-average PUE 1.10 (Google 2023 environmental report))")
    readme = tmp_path / "README.md"
    readme.write_text(f"---\n{model_card_yaml(GRID)}---\n")
    meta = metadata_load(readme)
    block = meta["greendiff"]
    assert meta["co2_eq_emissions"]["emissions"] == 28.0 and meta["co2_eq_emissions"]["training_type"] == "pre-training"
    assert meta["co2_eq_emissions"]["geographical_location"] == "California (grid CISO), United States"
    assert meta["co2_eq_emissions"]["hardware_used"] == "2 x NVIDIA H200, AMD EPYC 9654"
    assert block["location"] == {"grid": "CISO"} and block["notes"] == [TYPICAL_YEAR]
    assert (block["energy_kwh_low"], block["energy_kwh"], block["energy_kwh_high"]) == (0.45, 0.5, 0.55)
    assert (block["emissions_kg_low"], block["emissions_kg"], block["emissions_kg_high"]) == (0.0252, 0.028, 0.0308)
    assert (block["intensity_g_per_kwh"], block["intensity_year"], block["pue"]) == (210.0, 2022, 1.0)
    assert "--pue" not in readme.read_text()  # no CLI hint in a card


def test_model_card_data_is_huggingface_hubs_and_training_type_is_checked():
    from huggingface_hub import ModelCardData

    assert isinstance(model_card_data(COUNTRY), ModelCardData)
    with pytest.raises(UserInputError, match="^training type must be pre-training or fine-tuning .*got 'training'$"):
        model_card_data(COUNTRY, "training")


def test_one_citation_names_the_intensitys_year_once():
    assert intensity_citation("EIA-930 hourly CISO 2022", 2022) == "EIA-930 hourly CISO 2022"
    assert intensity_citation("Google Cloud region carbon data", 2024) == "Google Cloud region carbon data, 2024"
    assert intensity_citation("a table", None) == "a table; year not stated"
    assert intensity_citation("UK Carbon Intensity API (national)", None, "live") == "UK Carbon Intensity API (national)"


def test_model_card_source_and_statement_cite_the_year_with_the_one_function():
    from greendiff.report import emissions_statement
    from greendiff.tracking import RunSummary

    undated = {**copy.deepcopy(COUNTRY), "intensity": {**COUNTRY["intensity"], "source": "a table", "year": None}}
    source = model_card_data(undated).co2_eq_emissions["source"]
    assert "grid intensity: a table; year not stated; PUE" in source
    assert "(a table; year not stated; a yearly average)" in emissions_statement(RunSummary.from_dict(undated))
