"""A fallback is said once per command, and never followed by an error that contradicts it."""

from __future__ import annotations

import sys

from greendiff.cli._app import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unreachable_electricitymaps_is_one_warning_for_a_whole_run(capsys, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", "t0k")
    monkeypatch.setenv("GREENDIFF_ELECTRICITYMAPS_URL", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setenv("GREENDIFF_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run_cli(capsys, "measure", "--live", "electricitymaps", "--zone", "FR", "--country", "FRA",
                             "--ledger", str(tmp_path / "l.sqlite"), "--", sys.executable, "-c", "pass")
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "fell back" in r.getMessage()]
    assert len(warnings) == 1 and "electricity-maps unavailable" in warnings[0] and "FRA" in warnings[0]


def test_live_uk_offline_in_plan_window_is_one_error_and_no_fallback(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GREENDIFF_UK_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GREENDIFF_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run_cli(capsys, "plan", "window", "--live", "uk", "--energy-kwh", "2", "--hours", "3",
                             "--start", "2022-06-01T00:00", "--flex-hours", "24")
    assert code == 2 and "fell back" not in out + err and len(err.strip().splitlines()) == 1
    assert "no hourly series for the window: the UK Carbon Intensity API gave none" in err and "127.0.0.1:9" in err
