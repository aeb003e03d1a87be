"""Warnings and notes the CLI logs are wrapped at the terminal's width, under their "greendiff: " prefix."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from greendiff.cli._app import WrappingFormatter, terminal_columns
from greendiff.cli._render import LOCATION_HINT

# the unknown-location note as it reached the terminal in issue 20: 162 columns on one line
LONG = ("LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x. Give the country, cloud region "
        "or grid the run is in.")
SHOWN = LONG + " " + LOCATION_HINT  # the CLI adds how to give a location, as the summary's note does


def record(message: str, *args) -> logging.LogRecord:
    return logging.LogRecord("greendiff.test", logging.WARNING, __file__, 1, message, args, None)


def test_a_long_warning_wraps_at_80_columns_under_its_prefix():
    text = WrappingFormatter(columns=lambda: 80).format(record("%s", LONG))
    lines = text.splitlines()
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("greendiff: LOCATION UNKNOWN:") and lines[1].startswith(" " * 11)
    assert lines[1][11] != " " and " ".join(line.strip() for line in lines) == "greendiff: " + SHOWN


def test_no_width_keeps_one_line_per_message_and_a_long_word_stays_whole():
    assert WrappingFormatter(columns=lambda: None).format(record(LONG)) == "greendiff: " + SHOWN
    path = "/data/" + "x" * 90 + "/run"
    lines = WrappingFormatter(columns=lambda: 80).format(record(f"cannot read {path}: gone")).splitlines()
    assert lines == ["greendiff: cannot read", " " * 11 + path + ":", " " * 11 + "gone"]


def test_a_message_of_several_lines_keeps_them_indented_and_a_narrow_terminal_still_shows_words():
    lines = WrappingFormatter(columns=lambda: 80).format(record("first line\nsecond line")).splitlines()
    assert lines == ["greendiff: first line", " " * 11 + "second line"]
    narrow = WrappingFormatter(columns=lambda: 5).format(record(LONG)).splitlines()
    assert all(len(line) <= 31 or " " not in line.strip() for line in narrow)  # 11 of prefix + 20 of text at least


@pytest.mark.parametrize(("env", "expected"), [({"COLUMNS": "80"}, 80), ({"COLUMNS": " 132 "}, 132)])
def test_columns_come_from_the_environment_first(env, expected):
    assert terminal_columns(env) == expected


def test_a_bad_columns_value_is_ignored(monkeypatch):
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: (_ for _ in ()).throw(OSError("not a terminal")))
    assert [terminal_columns({"COLUMNS": v}) for v in ("", "0", "-3", "wide", "٨٠")] == [None] * 5


def test_the_cli_wraps_its_logged_warnings_at_columns_80(tmp_path):
    # issue 20: the fallback and LOCATION UNKNOWN warnings ran to ~160 columns on one line at COLUMNS=80
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENDIFF_") and k != "ELECTRICITYMAPS_API_TOKEN"}
    env.update(COLUMNS="80", GREENDIFF_LEDGER=str(tmp_path / "l.sqlite"), GREENDIFF_CACHE_DIR=str(tmp_path / "cache"),
               GREENDIFF_CREDENTIALS=str(tmp_path / "none.toml"), GREENDIFF_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "greendiff", "measure", "--live", "electricitymaps", "--zone", "XX",
                           "--", sys.executable, "-c", "pass"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    logged = done.stderr.splitlines()
    assert sum(line.startswith("greendiff: electricity-maps unavailable") for line in logged) == 1, done.stderr
    assert max(map(len, logged)) <= 80, done.stderr
    assert "no bundled table knows zone XX" in " ".join(line.strip() for line in logged)


def test_the_logged_unknown_location_warning_says_how_to_give_a_location(tmp_path):
    # issue 20: once library notes stopped carrying CLI hints, the warning logged when a run starts said
    # "LOCATION UNKNOWN: ... may be off by 10x." and nothing about what to do; the summary's note had the hint
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENDIFF_")}
    env.update(COLUMNS="200", GREENDIFF_LEDGER=str(tmp_path / "l.sqlite"), GREENDIFF_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "greendiff", "measure", "--no-gpu", "--", sys.executable, "-c", "pass"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("greendiff: LOCATION UNKNOWN")]
    assert len(warned) == 1 and warned[0].endswith("Pass --country ISO3, --cloud PROVIDER:REGION or --grid NAME."), done.stderr
