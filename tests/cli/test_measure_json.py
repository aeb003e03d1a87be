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
