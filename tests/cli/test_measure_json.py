"""``greendiff measure --json FILE``: machine output on its own channel, never mixed with the command's output
(issue 20: ``measure --json -- CMD > out.json`` wrote the command's stdout into the JSON)."""

from __future__ import annotations

import json
import sys

import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger, default_ledger_path

PRINTS = "print('hello from the command'); print('{not json')"


def test_json_file_holds_the_summary_and_the_command_prints_on_the_terminal(capfd, tmp_path):
    target = tmp_path / "out.json"
    code = main(["measure", "--country", "FRA", "--json", str(target), "--", sys.executable, "-c", PRINTS])
    out, err = capfd.readouterr()
    assert code == 0, err
    summary = json.loads(target.read_text())
    assert summary["status"] == "completed" and summary["kind"] == "measure" and summary["energy_kwh"] > 0
    assert summary["location"]["country"] == "FRA"
    assert out == "hello from the command\n{not json\n"  # the command's stdout, untouched
    assert "JSON summary → " in err and "out.json" in err  # the human summary and where the JSON went
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert summary["run_id"] == run.id


@pytest.mark.parametrize("form", [["--json", "-"], ["--json"]], ids=["dash", "old switch before --"])
def test_json_on_stdout_moves_the_command_s_stdout_to_stderr(capfd, form):
    code = main(["measure", "--country", "FRA", *form, "--", sys.executable, "-c", PRINTS])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"  # stdout is the JSON alone: `> out.json` parses
    assert "hello from the command\n{not json\n" in err


@pytest.mark.parametrize(("value", "message"), [
    ("{tmp}/missing/out.json", "--json {tmp}/missing/out.json: folder {tmp}/missing does not exist"),
    ("{tmp}", "--json takes a FILE ending in .json"),
    ("{tmp}/folder.json", "--json {tmp}/folder.json is a folder"),
    ("python", "--json takes a FILE ending in .json (or - for stdout), got 'python'"),
    ("--name", "--json takes a FILE ending in .json (or - for stdout), got '--name'"),
])
def test_a_bad_json_file_is_one_line_and_nothing_runs(capfd, tmp_path, value, message):
    (tmp_path / "folder.json").mkdir()
    marker = tmp_path / "ran"
    code = main(["measure", "--json", value.format(tmp=tmp_path), "--", sys.executable, "-c",
                 f"open({str(marker)!r}, 'w').close()"])
    out, err = capfd.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message.format(tmp=tmp_path) in err
    assert not marker.exists(), "the command must not run"
    assert not default_ledger_path().exists() or Ledger(default_ledger_path()).list_runs() == []


def test_measure_json_and_runs_show_json_are_the_same_document(capfd, tmp_path, monkeypatch):
    """One public form of a summary (energy in kWh, CO2e in kg), written whole: measure's file, measure's stdout
    and ``runs show --json`` of the same run are one document."""
    import greendiff.cli._measure as measure_cli

    written = []
    real = measure_cli.atomic_write_text
    monkeypatch.setattr(measure_cli, "atomic_write_text", lambda path, text: (written.append(path), real(path, text)))
    target = tmp_path / "out.json"
    assert main(["measure", "--country", "FRA", "--json", str(target), "--", sys.executable, "-c", "pass"]) == 0
    assert written == [target]  # atomically: a reader never sees half a file
    capfd.readouterr()
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert main(["runs", "show", str(run.id), "--json"]) == 0
    shown, _ = capfd.readouterr()
    assert json.loads(target.read_text()) == json.loads(shown)
    assert target.read_text() == shown
    assert main(["runs", "export", str(run.id), "-f", "json"]) == 0
    assert capfd.readouterr()[0] == shown
    document = json.loads(shown)
    assert "energy_j" not in document and all("emissions_g" not in d and "energy_j" not in d for d in document["devices"])
    assert all("emissions_kg" in d for d in document["devices"])
