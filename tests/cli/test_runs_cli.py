"""``greendiff runs list|show|export``: readable at 80 columns, a run named by ledger id or run directory,
the statement, CodeCarbon and model-card exports."""

from __future__ import annotations

import json

import pytest

from greendiff.cli._app import main
from greendiff.report import emissions_statement
from greendiff.tracking import RunSummary
from tests.ledger.summaries import CLOUD, COUNTRY, GRID, ledger_with, resumed_ledger

LONG_NAME = "ddpm-cifar10-ema-0.9999-lr2e-4-batch128"


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    """Runs 1 (France), 2 (a cloud region), 3 (a US grid, a long name) in the ledger of GREENDIFF_LEDGER."""
    db = ledger_with(tmp_path / "l.sqlite", COUNTRY, CLOUD, {**GRID, "name": LONG_NAME})
    monkeypatch.setenv("GREENDIFF_LEDGER", str(db.path))
    return db


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_list_and_show_fit_80_columns_with_figures_whole(capsys, ledger, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "runs", "list")
    lines = out.splitlines()
    assert code == 0 and max(map(len, lines)) <= 80
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in ("1", "2", "3")}
    assert "unet-tiny" in rows["1"] and "500 Wh" in rows["1"] and "28.0 g" in rows["1"] and "completed" in rows["1"]
    assert "finetune" in rows["2"] and "1.20 mWh" in rows["2"] and "0.164 mg" in rows["2"]
    folded = "".join(line[4:30].strip() for line in lines[lines.index(rows["3"]):] if line[4:30].strip())
    assert LONG_NAME in folded  # a long name folds inside its column: every character shown, none cut
    assert "…" not in out
    code, out, _ = run(capsys, "runs", "show", "1")
    assert code == 0 and max(map(len, out.splitlines())) <= 80 and "…" not in out
    assert "energy: 500 Wh (450–550 Wh) · CO2e: 28.0 g (25.2–30.8 g)" in out
    assert "NVIDIA H200" in out and "11.2 g" in out and "200 Wh" in out


def test_a_wide_terminal_shows_kind_and_methods(capsys, ledger, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run(capsys, "runs", "list")
    assert code == 0 and "kind" in out and "estimate:tdp-cputime" in out and "2026-11-29 02:30" in out


def test_runs_show_and_export_take_a_run_directory_or_a_ledger_id(capsys, ledger, tmp_path):
    run_dir = tmp_path / "runs" / "20261129-finetune"
    run_dir.mkdir(parents=True)
    (run_dir / "emissions.json").write_text(json.dumps({"ledger_run_ids": [2]}))
    by_dir = run(capsys, "runs", "show", str(run_dir), "--json")
    by_id = run(capsys, "runs", "show", "2", "--json")
    assert by_dir[0] == by_id[0] == 0 and by_dir[1] == by_id[1] and json.loads(by_id[1])["name"] == "finetune"
    code, out, _ = run(capsys, "runs", "export", "1", str(run_dir), "-f", "csv")
    assert code == 0 and [line.split(",")[1] for line in out.splitlines()[1:]] == ["unet-tiny", "finetune"]
    for argv, message in ((["runs", "show", "0"], "run id must be a positive integer"),
                          (["runs", "export", "--", "-3"], "run id must be a positive integer"),
                          (["runs", "show", "42"], "no run with id 42"),
                          (["runs", "show", str(tmp_path)], "not a finished run directory"),
                          (["runs", "export", "nope"], "unknown run 'nope'")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_a_number_that_is_also_a_folder_here_is_refused_naming_both(capsys, ledger, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, run_id in (("2", 1), ("7", 3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "emissions.json").write_text(json.dumps({"ledger_run_ids": [run_id]}))
    code, _, err = run(capsys, "runs", "show", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "2 names both ledger run 2 (finetune, train) and the folder 2 here: write ./2 for the folder" in err
    code, out, _ = run(capsys, "runs", "show", "./2", "--json")
    assert code == 0 and json.loads(out)["name"] == "unet-tiny"  # the folder's run (ledger run 1)
    code, out, _ = run(capsys, "runs", "show", "7", "--json")  # no ledger run 7: the folder, no question
    assert code == 0 and json.loads(out)["name"] == LONG_NAME


def test_export_statement_is_the_reports_paragraph(capsys, ledger, tmp_path):
    code, out, _ = run(capsys, "runs", "export", "2", "-f", "statement")
    assert code == 0 and out == emissions_statement(RunSummary.from_dict({**CLOUD, "run_id": 2})) + "\n"
    assert out.startswith("This run (finetune) used Intel Xeon for 42.0 s in Google Cloud europe-west1 (Belgium).")
    target = tmp_path / "statement.txt"
    assert run(capsys, "runs", "export", "1", "-f", "statement", "-o", str(target))[0] == 0
    assert " in France. " in target.read_text() and "--pue" not in target.read_text()
    code, _, err = run(capsys, "runs", "export", "1", "2", "-f", "statement")
    assert code == 2 and "-f statement describes one run" in err


def test_export_json_has_one_unit_per_quantity(capsys, ledger):
    code, out, _ = run(capsys, "runs", "export", "1", "2", "-f", "json")
    exported = json.loads(out)
    assert code == 0 and [s["emissions_kg"] for s in exported] == [0.028, 1.644e-07]
    assert all("energy_j" not in s and all("emissions_g" not in d for d in s["devices"]) for s in exported)


def test_export_codecarbon_appends_and_backs_up_another_format(capsys, ledger, tmp_path):
    target = tmp_path / "emissions.csv"
    target.write_text("when,what\nyesterday,something\n")
    code, _, err = run(capsys, "runs", "export", "1", "-f", "codecarbon", "-o", str(target))
    assert code == 0 and "moved to" in err and (tmp_path / "emissions.csv.bak").read_text().startswith("when,what")
    assert run(capsys, "runs", "export", "2", "-f", "codecarbon", "-o", str(target))[0] == 0
    lines = target.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("timestamp,project_name") and ",France,FRA," in lines[1]
    assert ",Belgium,BEL," in lines[2]


def test_export_model_card_checks_the_training_type(capsys, ledger):
    code, out, _ = run(capsys, "runs", "export", "3", "-f", "model-card", "--training-type", "fine-tuning")
    assert code == 0 and out.startswith("co2_eq_emissions:\n  emissions: 28.0\n")
    assert "geographical_location: California (grid CISO), United States" in out and "training_type: fine-tuning" in out
    code, _, err = run(capsys, "runs", "export", "3", "-f", "model-card", "--training-type", "training")
    assert code == 2 and "training type must be pre-training or fine-tuning" in err and len(err.strip().splitlines()) == 1


def test_a_run_directory_is_the_whole_resumed_run_and_a_ledger_id_its_one_segment(capsys, tmp_path, monkeypatch):
    db, run_dir = resumed_ledger(tmp_path)
    monkeypatch.setenv("GREENDIFF_LEDGER", str(db.path))
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "runs", "show", str(run_dir))
    assert code == 0 and "2 segments (ledger runs 2, 3)" in out and max(map(len, out.splitlines())) <= 80
    assert "energy: 750 Wh (675–825 Wh) · CO2e: 42.0 g (37.8–46.2 g)" in out and "2.25 h wall" in out
    code, out, err = run(capsys, "runs", "show", str(run_dir), "--json")
    whole = json.loads(out)
    assert code == 0 and whole["energy_kwh"] == pytest.approx(0.75) and whole["ledger_run_ids"] == [2, 3]
    assert whole["name"] == "intr" and "2 segments" in err
    code, out, _ = run(capsys, "runs", "export", str(run_dir), "-f", "statement")
    assert code == 0 and out.startswith("This run (intr, in 2 segments: ledger runs 2 and 3) used 2 x NVIDIA H200, "
                                        "AMD EPYC 9654 for 2.25 h in France. It consumed 750 Wh of electricity")
    code, out, _ = run(capsys, "runs", "show", "3")
    assert code == 0 and "energy: 250 Wh" in out
    assert "ledger run 3 is one segment of the run in" in " ".join(out.split()) and "(ledger runs 2, 3)" in out
    code, out, _ = run(capsys, "runs", "export", "3", "-f", "statement")
    assert out.startswith("This resumed segment of the run intr (ledger run 3) used") and "250 Wh" in out
    assert "(resumed))" not in out


def test_export_model_card_to_a_markdown_file_is_a_card_the_hub_loads(capsys, ledger, tmp_path):
    from huggingface_hub import ModelCard, metadata_load

    card = tmp_path / "README.md"
    code, _, err = run(capsys, "runs", "export", "1", "-f", "model-card", "-o", str(card))
    assert code == 0 and f"wrote {card}" in err
    assert ModelCard.load(card).data.co2_eq_emissions["emissions"] == 28.0
    assert metadata_load(card)["co2_eq_emissions"]["geographical_location"] == "France"
    assert "## Environmental impact\n\nThis run (unet-tiny) used" in card.read_text()
    block = tmp_path / "card.yaml"
    assert run(capsys, "runs", "export", "1", "-f", "model-card", "-o", str(block))[0] == 0
    assert block.read_text().startswith("co2_eq_emissions:\n  emissions: 28.0\n")
    code, _, err = run(capsys, "runs", "export", "1", "-f", "model-card", "-o", str(tmp_path / "card.txt"))
    assert code == 2 and "must end in .md" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "card.txt").exists()


def test_an_unknown_format_is_one_line_listing_the_formats(capsys, ledger):
    code, _, err = run(capsys, "runs", "export", "1", "-f", "foo")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Value error" not in err
    assert "-f/--format must be one of codecarbon, csv, json, model-card, statement; got 'foo'" in err


def test_runs_list_shows_a_sub_millisecond_run_readably(capsys, tmp_path, monkeypatch):
    db = ledger_with(tmp_path / "l.sqlite", {**CLOUD, "duration_s": 9.54e-7})
    monkeypatch.setenv("GREENDIFF_LEDGER", str(db.path))
    code, out, _ = run(capsys, "runs", "list")
    assert code == 0 and "<1 ms" in out and "0.000000954" not in out
