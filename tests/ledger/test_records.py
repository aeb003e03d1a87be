"""Ledgers written by other tools or older versions: every bad row is named, and the others still read."""

from __future__ import annotations

import json
import sqlite3

import pytest

from greendiff.cli._app import main
from greendiff.errors import UserInputError
from greendiff.ledger import BadRecordError, Ledger, parse_summary

DEVICE = {"key": "cpu:0", "kind": "cpu", "name": "X", "method": "rapl", "scope": "package", "uncertainty_frac": 0.1}
ASSUMPTIONS = {"location": {"country": "FRA"}, "pue": {"value": 1.0, "source": "t"}}
# Another tool's table: the same columns without greendiff's NOT NULL and CHECK constraints.
LOOSE_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, name, kind, status, started_unix_s, ended_unix_s,
                   heartbeat_unix_s, host, pid, command, exit_code, assumptions_json, devices_json, summary_json);
CREATE TABLE samples (run_id, unix_s, cpu_time_s, energy_json);
"""


def _good_summary(ledger: Ledger, run_id: int) -> dict:
    """A run closed by greendiff itself, for a valid stored summary."""
    from greendiff.tracking import run_summary

    summary = run_summary(ledger, ledger.get_run(run_id)).to_dict()  # the stored form
    ledger.finish_run(run_id, "completed", summary, 0)
    return summary


def _ledger_with_bad_rows(path) -> tuple[Ledger, dict[str, int]]:
    conn = sqlite3.connect(path)
    conn.executescript(LOOSE_SCHEMA)
    conn.commit()
    ledger = Ledger(path)
    ids: dict[str, int] = {}

    def run(label: str, _samples: list[str] | None = None, **columns) -> None:
        row = {"name": label, "kind": "measure", "status": "completed", "started_unix_s": 1.7e9, "ended_unix_s": 1.7e9 + 120,
               "heartbeat_unix_s": 1.7e9 + 120, "host": "elsewhere", "pid": 1, "command": "x", "exit_code": 0,
               "assumptions_json": json.dumps(ASSUMPTIONS), "devices_json": json.dumps([DEVICE]), "summary_json": None}
        row.update(columns)
        cur = conn.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        ids[label] = cur.lastrowid
        for i, energy in enumerate(_samples or ['{"cpu:0": 0.0}', '{"cpu:0": 3600000.0}']):
            conn.execute("INSERT INTO samples VALUES (?, ?, ?, ?)", (ids[label], 1.7e9 + 60 * i, float(i), energy))
        conn.commit()

    run("good")
    run("bad-status", status="paused")
    run("null-name", name=None)
    run("no-start", started_unix_s=None)
    run("inf-start", started_unix_s=float("inf"))
    run("far-future", started_unix_s=1e300)
    run("text-start", started_unix_s="yesterday")
    run("bad-summary-json", summary_json="{not json")
    run("summary-is-a-list", summary_json="[1, 2]")
    run("summary-missing-keys", summary_json=json.dumps({"run_id": 9, "energy_kwh": 1.0}))
    run("summary-nan", summary_json='{"run_id": NaN}')
    run("bad-assumptions", assumptions_json="{{{")
    run("assumptions-wrong-types", assumptions_json=json.dumps({"location": {"country": 7}, "pue": "high", "live": 3}))
    run("null-assumptions", assumptions_json=None)
    run("bad-devices", devices_json=json.dumps([{"key": "cpu:0"}, "gpu"]))
    run("garbage-samples", _samples=['{"cpu:0": 0.0}', "oops", '{"cpu:0": Infinity}', '["cpu"]', '{"cpu:0": 3600000.0}'])
    conn.execute("INSERT INTO samples VALUES (?, NULL, 0, '{}')", (ids["garbage-samples"],))
    conn.commit()
    return ledger, ids


UNREADABLE = {"bad-status": "unknown status \"paused\"", "null-name": "name should be text, got NULL",
              "no-start": "started_unix_s should be a Unix time, got null",
              "inf-start": "started_unix_s should be a Unix time, got Infinity",
              "far-future": "started_unix_s should be a Unix time", "text-start": "started_unix_s should be a Unix time"}


def test_list_names_each_unreadable_row_and_reads_the_others(tmp_path, caplog):
    ledger, ids = _ledger_with_bad_rows(tmp_path / "l.sqlite")
    runs = ledger.list_runs()
    assert sorted(r.name for r in runs) == sorted(set(ids) - set(UNREADABLE))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(UNREADABLE)  # one per bad row
    for label, problem in UNREADABLE.items():
        (line,) = [w for w in warnings if w.startswith(f"ledger run {ids[label]}: ")]
        assert problem in line and line.endswith("; skipped")
        with pytest.raises(BadRecordError, match=f"^ledger run {ids[label]}: .*{problem[:20]}"):
            ledger.get_run(ids[label])


def test_damage_a_reader_can_work_around_is_kept_as_the_rows_problems(tmp_path):
    ledger, ids = _ledger_with_bad_rows(tmp_path / "l.sqlite")
    by_name = {r.name: r for r in ledger.list_runs()}
    assert by_name["good"].problems == ()
    for label in ("bad-summary-json", "summary-is-a-list", "summary-missing-keys", "summary-nan"):
        record = by_name[label]
        assert record.summary is None and record.problems[0].endswith("re-priced from its samples"), label
    assert "summary_json is not valid JSON" in by_name["bad-summary-json"].problems[0]
    assert "summary_json should be an object, got list" in by_name["summary-is-a-list"].problems[0]
    assert "summary_json lacks 'name'" in by_name["summary-missing-keys"].problems[0]
    assert "summary_json.run_id should be an integer, got NaN" in by_name["summary-nan"].problems[0]
    assert by_name["bad-assumptions"].assumptions == {} and "assumptions_json is not valid JSON" in by_name["bad-assumptions"].problems[0]
    assert by_name["null-assumptions"].problems == ("assumptions_json is NULL; priced as an unknown location",)
    assert by_name["bad-devices"].devices == [] and len(by_name["bad-devices"].problems) == 2
    samples = ledger.samples(ids["garbage-samples"], problems := [])
    assert [s.energy_j["cpu:0"] for s in samples] == [0.0, 3.6e6]
    assert problems == ["4 of 6 samples unreadable and skipped (first: unix_s should be a Unix time, got null)"]


def test_every_reader_prices_what_it_can_with_one_warning_per_bad_row(capsys, caplog, tmp_path, monkeypatch):
    ledger, ids = _ledger_with_bad_rows(tmp_path / "l.sqlite")
    monkeypatch.setenv("GREENDIFF_LEDGER", str(ledger.path))
    caplog.clear()
    assert main(["runs", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == len(ids) - len(UNREADABLE)
    energy = {r["name"]: r["energy_kwh"] for r in listed}
    assert energy["good"] == pytest.approx(1.0) and energy["garbage-samples"] == pytest.approx(1.0)
    assert energy["summary-nan"] == pytest.approx(1.0)  # re-priced from its samples, not NaN
    assert energy["bad-devices"] == 0.0  # its only device is unreadable: nothing can be counted
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for label in (*UNREADABLE, "bad-summary-json", "summary-nan", "bad-assumptions", "bad-devices", "garbage-samples"):
        assert sum(w.startswith(f"ledger run {ids[label]}") for w in warned) == 1, label
    assert main(["runs", "list"]) == 0
    capsys.readouterr()
    # priced where the assumptions could not be read: a labelled fallback (the world average), not an error
    for label in ("bad-assumptions", "assumptions-wrong-types", "null-assumptions"):
        assert main(["runs", "show", str(ids[label]), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["emissions_kg"] == pytest.approx(0.475) and summary["energy_kwh"] == pytest.approx(1.0), label
    assert main(["runs", "export", str(ids["good"]), str(ids["summary-nan"]), "-f", "csv"]) == 0
    # one unreadable row asked for by id: a one-line error naming it
    capsys.readouterr()
    for label, problem in UNREADABLE.items():
        for argv in (["runs", "show", str(ids[label])], ["runs", "export", str(ids[label])], ["report", str(ids[label])]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"greendiff: error: ledger run {ids[label]}: ") and problem in err[0]


def test_non_finite_values_never_reach_a_renderer(capsys, tmp_path, monkeypatch):
    """Infinity and NaN written by another tool: the row is named or re-priced, the tables print."""
    from greendiff.cli._render import fmt_energy, fmt_mass

    assert fmt_energy(float("nan")) == "n/a" and fmt_mass(float("inf")) == "n/a" and fmt_mass(float("-inf")) == "n/a"
    ledger = Ledger(tmp_path / "l.sqlite")
    monkeypatch.setenv("GREENDIFF_LEDGER", str(ledger.path))
    run_id = ledger.start_run("inf", "measure", "x", ASSUMPTIONS, [DEVICE])
    ledger.add_sample(run_id, 1.7e9, 0.0, {"cpu:0": 0.0})
    ledger.add_sample(run_id, 1.7e9 + 60, 1.0, {"cpu:0": float("inf")})
    ledger.add_sample(run_id, 1.7e9 + 120, 2.0, {"cpu:0": 3.6e6})
    summary = _good_summary(ledger, run_id)
    assert summary["energy_kwh"] == pytest.approx(1.0)  # the infinite sample is skipped
    nan_summary = {**summary, "energy_kwh": float("nan"), "emissions_kg": float("inf")}
    with ledger._transaction() as cur:
        cur.execute("UPDATE runs SET summary_json = ? WHERE id = ?", (json.dumps(nan_summary), run_id))
    for argv in (["runs", "list"], ["runs", "show", str(run_id)], ["runs", "export", str(run_id), "-f", "csv"],
                 ["runs", "show", str(run_id), "--json"]):
        assert main(argv) == 0, argv
    capsys.readouterr()
    assert main(["runs", "show", str(run_id), "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out and json.loads(out)["energy_kwh"] == pytest.approx(1.0)


def test_a_valid_summary_passes_and_a_wrong_one_names_its_field(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    run_id = ledger.start_run("r", "measure", "x", ASSUMPTIONS, [DEVICE])
    ledger.add_sample(run_id, 1.7e9, 0.0, {"cpu:0": 0.0})
    summary = _good_summary(ledger, run_id)
    assert parse_summary(summary) is summary
    broken = {**summary, "devices": [{**summary["devices"][0], "energy_kwh": "lots"}]}
    with pytest.raises(BadRecordError, match=r"^summary\.devices\[0\]\.energy_kwh should be a finite number, got \"lots\""):
        parse_summary(broken)


def test_run_ids_outside_sqlites_range_are_one_line_errors(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    for bad in (0, -3, 2**63, 10**20):
        with pytest.raises(UserInputError, match="run id must be a whole number from 1 to 9223372036854775807"):
            ledger.get_run(bad)
    assert ledger.list_runs(limit=10**30) == []


def test_a_ledger_with_a_foreign_schema_is_a_one_line_error(tmp_path):
    path = tmp_path / "l.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, what TEXT)")
    conn.execute("INSERT INTO runs VALUES (1, 'x')")
    conn.commit()
    with pytest.raises(UserInputError, match=f"cannot read the ledger at {path}: no such column"):
        Ledger(path).list_runs()
    conn.execute("UPDATE meta SET value = 'v2' WHERE key = 'schema_version'")
    conn.commit()
    with pytest.raises(UserInputError, match="schema version 'v2' is not a number"):
        Ledger(path)
