from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import psutil
import pytest

from greendiff.cli._app import main
from greendiff.energy import read_cpuinfo
from greendiff.ledger import Ledger, default_ledger_path
from greendiff.tracking import RunSummary

PY = sys.executable
BUSY = "import time\nend=time.process_time()+0.3\nwhile time.process_time()<end: pass"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command_with_one_line(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("measure", "demo", "runs"):
        assert command in out


def test_measure_records_the_child_process_tree(capsys):
    code, out, err = run_cli(capsys, "measure", "--country", "FRA", "--cpu-watts", "20", "--json", "--", PY, "-c", BUSY)
    assert code == 0
    summary = json.loads(out)
    assert summary["status"] == "completed" and summary["kind"] == "measure"
    assert summary["command"] == shlex.join([PY, "-c", BUSY])
    assert 0.28 <= summary["cpu_time_s"] <= 1.5  # the child's 0.3 s plus python start-up
    cpu = next(d for d in summary["devices"] if d["kind"] == "cpu")
    assert cpu["method"] == "estimate:user-watts-cputime"
    siblings = read_cpuinfo().logical_cpus_per_package  # --cpu-watts is the whole package's power
    assert cpu["energy_kwh"] * 3.6e6 == pytest.approx(summary["cpu_time_s"] * 20.0 / siblings, rel=0.05)
    assert summary["location"]["country"] == "FRA"
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.status == "completed" and run.exit_code == 0


def test_measure_propagates_exit_code_and_marks_failed(capsys):
    code, out, _ = run_cli(capsys, "measure", "--json", "--", PY, "-c", "raise SystemExit(3)")
    assert code == 3
    assert json.loads(out)["status"] == "failed"
    assert Ledger(default_ledger_path()).list_runs()[0].exit_code == 3


def test_runs_list_show_export(capsys, tmp_path):
    run_cli(capsys, "measure", "--grid", "CISO", "--pue", "1.2", "--name", "job", "--", PY, "-c", "pass")
    code, out, _ = run_cli(capsys, "runs", "list", "--json")
    (row,) = json.loads(out)
    assert code == 0 and row["name"] == "job" and row["status"] == "completed"
    code, out, _ = run_cli(capsys, "runs", "show", str(row["id"]), "--json")
    shown = json.loads(out)
    assert shown["pue"]["value"] == 1.2 and "CISO" in shown["intensity"]["source"]
    code, out, _ = run_cli(capsys, "runs", "show", str(row["id"]))
    assert "job" in out and "CISO" in out
    code, out, _ = run_cli(capsys, "runs", "export", str(row["id"]), "-f", "model-card")
    assert out.startswith("co2_eq_emissions:\n  emissions: ")
    target = tmp_path / "emissions.csv"
    for _ in range(2):
        assert run_cli(capsys, "runs", "export", str(row["id"]), "-f", "codecarbon", "-o", str(target))[0] == 0
    lines = target.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("timestamp,project_name")  # one header, two rows
    run_cli(capsys, "measure", "--country", "FRA", "--name", "job2", "--", PY, "-c", "pass")
    code, out, _ = run_cli(capsys, "runs", "export", str(row["id"]), str(row["id"] + 1), "-f", "csv")
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["name"] for r in rows] == ["job", "job2"] and rows[0]["pue"] == "1.2"
    assert rows[1]["country"] == "FRA" and "CISO" in rows[0]["intensity_source"]
    assert float(rows[0]["energy_kwh"]) == pytest.approx(shown["energy_kwh"])
    assert float(rows[0]["energy_kwh_low"]) <= float(rows[0]["energy_kwh"]) <= float(rows[0]["energy_kwh_high"])
    devices = [c for c in rows[0] if c.startswith("energy_kwh:")]
    assert devices and sum(float(rows[0][c]) for c in devices) == pytest.approx(shown["energy_kwh"])
    code, out, _ = run_cli(capsys, "runs", "export", str(row["id"]), str(row["id"] + 1), "-f", "json")
    assert [s["name"] for s in json.loads(out)] == ["job", "job2"]
    code, _, err = run_cli(capsys, "runs", "export", str(row["id"]), str(row["id"] + 1), "-f", "model-card")
    assert code == 2 and "model-card describes one run" in err
    code, _, err = run_cli(capsys, "runs", "export", "999", "-f", "csv")
    assert code == 2 and "no run with id 999" in err
    code, _, err = run_cli(capsys, "runs", "export", str(row["id"]), "-o", str(tmp_path / "no" / "x.json"))
    assert code == 2 and "does not exist" in err


def test_runs_show_computes_summary_of_an_interrupted_run(capsys):
    ledger = Ledger(default_ledger_path())
    assumptions = {"location": {"country": "DEU", "cloud": None, "grid": None}, "pue": {"value": 1.0, "source": "t"}}
    devices = [{"key": "cpu:package-0", "kind": "cpu", "name": "X", "method": "rapl", "scope": "package", "uncertainty_frac": 0.1}]
    run_id = ledger.start_run("dead", "test", "", assumptions, devices)
    ledger.add_sample(run_id, 1000.0, 0.0, {"cpu:package-0": 0.0})
    ledger.add_sample(run_id, 1100.0, 5.0, {"cpu:package-0": 3.6e6})
    with ledger._transaction() as cur:  # the writer "died": a pid that does not exist
        cur.execute("UPDATE runs SET pid = 2147483646 WHERE id = ?", (run_id,))
    code, out, _ = run_cli(capsys, "runs", "show", str(run_id), "--json")
    summary = json.loads(out)
    assert summary["status"] == "interrupted" and summary["energy_kwh"] == pytest.approx(1.0)


def test_demo_runs_and_prints_summary(capsys):
    code, out, _ = run_cli(capsys, "demo", "--seconds", "0.5", "--country", "SWE")
    assert code == 0
    assert "demo-cpu-workload" in out and "the same energy elsewhere" in out and "SWE" in out
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.summary["phases"][0]["name"] == "step" and run.summary["phases"][0]["count"] >= 1


BAD_INPUTS = [
    (["measure", "--country", "FR", "--", PY, "-c", "pass"], "unknown country code 'FR'.*did you mean FRA"),
    (["measure", "--cloud", "aws:mars-1", "--", PY, "-c", "pass"], "unknown cloud region 'aws:mars-1'"),
    (["measure", "--cloud", "gcp", "--", PY, "-c", "pass"], "PROVIDER:REGION"),
    (["measure", "--grid", "{bad_csv}", "--", PY, "-c", "pass"], r"bad\.csv:3: bad timestamp"),
    (["measure", "--pue", "-1.5", "--", PY, "-c", "pass"], "--pue must be a positive number"),
    (["measure", "--pue", "abc", "--", PY, "-c", "pass"], "--pue must be a number"),
    (["measure", "--cpu-watts", "lots", "--", PY, "-c", "pass"], "--cpu-watts must be a number"),
    (["measure", "--cpu-watts", "-20", "--", PY, "-c", "pass"], "--cpu-watts must be a positive number"),
    (["measure", "--ledger", "{tmp}/file/ledger.sqlite", "--", PY, "-c", "pass"], "cannot open the ledger"),
    (["measure"], "no command to measure"),
    (["measure", "--live", "uk", "--country", "FRA", "--", PY, "-c", "pass"], "Great Britain only"),
    (["runs", "show", "42"], "no run with id 42"),
    (["runs", "show", "abc"], "Invalid value|must be an integer|unknown run 'abc'"),
    (["runs", "show", "99999999999999999999"], "run id must be (a whole number from 1 to|a positive integer up to)"),
    (["runs", "show", "--", "-3"], "run id must be (a whole number from 1 to|a positive integer up to)"),
    (["runs", "show", "0"], "run id must be (a whole number from 1 to|a positive integer up to)"),
    (["runs", "export", "1e5"], "Invalid value|must be an integer|whole number|unknown run '1e5'"),
    (["runs", "export", "99999999999999999999", "-f", "csv"], "run id must be"),
    (["runs", "list", "--limit", "0"], "--limit must be a positive"),
    (["demo", "--seconds", "-1"], "--seconds must be in"),
    (["nonsense"], "No such command"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_records_nothing(capsys, tmp_path, argv, message):
    import re

    (tmp_path / "file").write_text("not a directory")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("timestamp,intensity\n2024-01-01T00:00:00Z,100\nnot-a-time,200\n")
    argv = [a.format(tmp=tmp_path, bad_csv=bad_csv) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greendiff: error: "), err
    assert re.search(message, lines[0])
    assert "Traceback" not in err + out
    path = default_ledger_path()
    assert not path.exists() or Ledger(path).list_runs() == []


def test_console_script_bad_input_has_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    result = subprocess.run([os.path.join(os.path.dirname(PY), "greendiff"), "measure", "--country", "XX", "--", "true"],
                            capture_output=True, text=True, env={**os.environ, "GREENDIFF_LEDGER": str(tmp_path / "l.sqlite")})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def _start_measure(tmp_path, *child: str) -> tuple[subprocess.Popen, Ledger]:
    ledger_path = tmp_path / "sig.sqlite"
    proc = subprocess.Popen([os.path.join(os.path.dirname(PY), "greendiff"), "measure", "--sample-interval", "0.2",
                             "--country", "FRA", "--", *child],
                            env={**os.environ, "GREENDIFF_LEDGER": str(ledger_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the ledger holds samples spanning > 1.5 s
        if ledger_path.exists():  # (the process tree is rescanned for new children once a second)
            runs = Ledger(ledger_path).list_runs()
            samples = Ledger(ledger_path).samples(runs[0].id) if runs else []
            if len(samples) >= 2 and samples[-1].unix_s - samples[0].unix_s > 1.5:
                break
        time.sleep(0.1)
    return proc, Ledger(ledger_path)


def test_sigterm_is_forwarded_and_the_run_marked_interrupted(tmp_path):
    proc, ledger = _start_measure(tmp_path, PY, "-c", "import time; time.sleep(60)")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.returncode == 128 + signal.SIGTERM  # the child died of the forwarded signal
    (run,) = ledger.list_runs()
    assert run.status == "interrupted" and run.summary["status"] == "interrupted"


def test_sigkilled_measure_leaves_an_interrupted_run_with_its_samples(tmp_path):
    proc, ledger = _start_measure(tmp_path, PY, "-c", BUSY.replace("0.3", "30"))
    orphans = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    for orphan in orphans:  # the measured command outlives a SIGKILLed greendiff; clean it up
        orphan.kill()
    (run,) = ledger.list_runs()
    assert run.status == "interrupted" and run.summary is None
    summary = json.loads(subprocess.run(
        [os.path.join(os.path.dirname(PY), "greendiff"), "runs", "show", str(run.id), "--json", "--ledger", str(ledger.path)],
        capture_output=True, text=True, check=True).stdout)
    assert summary["status"] == "interrupted" and summary["cpu_time_s"] > 0 and summary["energy_kwh"] > 0


def test_python_dash_m_greendiff_passes_the_exit_code_on():
    """torchrun and accelerate launch run ``python -m greendiff``: a failing rank must fail the job."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "greendiff", "train", "--max-steps", "-3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "run.max_steps must be a positive integer" in proc.stderr


# -- measure: the exit code, the ledger row, and the intensity fallback (issue 18) ---------------------

def _short_trace(path, before_s: int, after_s: int, inside_g: float = 100.0, early_g: float = 400.0):
    """A 1-second trace from ``before_s`` before now to ``after_s`` after: ``early_g`` for its first 10
    seconds, ``inside_g`` after that. Returns the trace's time-weighted mean."""
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc).replace(microsecond=0)
    values = [early_g if i < 10 else inside_g for i in range(before_s + after_s)]
    rows = [f"{(now + timedelta(seconds=i - before_s)).isoformat()},{v:g}" for i, v in enumerate(values)]
    path.write_text("timestamp,intensity\n" + "\n".join(rows) + "\n")
    return sum(values) / len(values)


def _outlive_trace(seconds_after: int, exit_code: int) -> list[str]:
    """A command that runs until ``seconds_after`` from now has passed (the trace's end), then 1 s more."""
    end = int(time.time()) + seconds_after
    return ["sh", "-c", f"while [ $(date +%s) -le {end} ]; do sleep 0.1; done; sleep 1; exit {exit_code}"]


def test_a_trace_that_ends_mid_run_prices_with_a_labelled_fallback_and_passes_the_exit_code_on(capsys, caplog, tmp_path):
    trace = tmp_path / "short.csv"
    mean = _short_trace(trace, before_s=20, after_s=4)
    code, out, err = run_cli(capsys, "measure", "--grid", str(trace), "--sample-interval", "0.2", "--json", "--",
                             *_outlive_trace(4, 3))
    assert code == 3, err  # the command's exit code, not 2
    summary = json.loads(out)
    (run,) = Ledger(default_ledger_path()).list_runs()
    assert run.status == "failed" and run.exit_code == 3  # closed, not 'running'
    assert RunSummary.from_dict(run.summary).to_public_dict() == summary  # measure --json: the public form
    fallback = summary["intensity"]["fallback"]
    assert f"priced at the trace's mean, {mean:.0f} gCO2e/kWh (fallback)" in fallback and str(trace) in fallback
    assert fallback in summary["intensity"]["notes"]
    assert [p["name"] for p in summary["phases"]] == ["command"] and summary["phases"][0]["duration_s"] > 4
    # energy inside the trace met 100 g, energy after its end the trace's mean (> 100 g): the run's mean lies between
    assert summary["energy_kwh"] > 0 and 100.0 < summary["intensity"]["mean_g_per_kwh"] < mean
    assert summary["emissions_kg"] == pytest.approx(summary["energy_kwh"] * summary["intensity"]["mean_g_per_kwh"] / 1e3)
    assert any("priced with a fallback" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def _dead_run(ledger: Ledger, name: str, location: dict, kwh: float = 1.0) -> int:
    """An interrupted run as a killed writer leaves it: samples and no summary."""
    devices = [{"key": "cpu:package-0", "kind": "cpu", "name": "X", "method": "rapl", "scope": "package", "uncertainty_frac": 0.1}]
    run_id = ledger.start_run(name, "measure", "x", {"location": location, "pue": {"value": 1.0, "source": "t"}}, devices)
    t0 = time.time() - 600
    for i in range(3):
        ledger.add_sample(run_id, t0 + 60 * i, float(i), {"cpu:package-0": kwh * 3.6e6 * i / 2})
    with ledger._transaction() as cur:  # the writer "died": a pid that does not exist
        cur.execute("UPDATE runs SET pid = 2147483646 WHERE id = ?", (run_id,))
    return run_id


def test_every_reader_works_for_every_run_after_a_trace_is_deleted(capsys, caplog, tmp_path):
    import csv
    import io

    from greendiff.carbon import country_provider

    trace = tmp_path / "short.csv"
    _short_trace(trace, before_s=20, after_s=4)
    assert run_cli(capsys, "measure", "--grid", str(trace), "--name", "short", "--", *_outlive_trace(4, 3))[0] == 3
    assert run_cli(capsys, "measure", "--country", "FRA", "--name", "plain", "--", PY, "-c", "pass")[0] == 0
    ledger = Ledger(default_ledger_path())
    dead = _dead_run(ledger, "dead", {"grid": str(trace), "country": "DEU"})
    trace.unlink()
    caplog.clear()
    code, out, err = run_cli(capsys, "runs", "list", "--json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)] == ["dead", "plain", "short"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and f"ledger run {dead} (dead)" in warned[0] and "ledger run 1 (short)" in warned[1]
    assert "cannot be used now" in warned[0] and "Our World in Data / Ember country table: DEU" in warned[0]
    assert run_cli(capsys, "runs", "list")[0] == 0
    code, out, _ = run_cli(capsys, "runs", "show", str(dead), "--json")
    shown = json.loads(out)
    deu = country_provider("DEU").row.intensity_g_per_kwh
    assert code == 0 and shown["status"] == "interrupted" and shown["energy_kwh"] == pytest.approx(1.0)
    assert shown["emissions_kg"] == pytest.approx(deu / 1e3) and "(fallback)" in shown["intensity"]["fallback"]
    assert run_cli(capsys, "runs", "show", str(dead))[0] == 0
    code, out, _ = run_cli(capsys, "runs", "export", "1", "2", str(dead), "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["name"] for r in rows] == ["short", "plain", "dead"]
    assert float(rows[2]["emissions_kg"]) == pytest.approx(deu / 1e3)
    html = tmp_path / "r.html"
    code, out, err = run_cli(capsys, "report", str(dead), "1", "-o", str(html))
    assert code == 0, err
    assert "priced with Our World in Data / Ember country table: DEU" in html.read_text()


def test_measure_never_unpickles(capsys, monkeypatch):
    import pickle

    def refuse(*_a, **_k):
        raise AssertionError("measure unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    code, out, _ = run_cli(capsys, "measure", "--country", "FRA", "--json", "--", PY, "-c", "pass")
    assert code == 0 and json.loads(out)["status"] == "completed"
    assert run_cli(capsys, "runs", "show", "1", "--json")[0] == 0


# -- measure: commands that cannot start ---------------------------------------------------------------

def _unrunnable(tmp_path, kind: str) -> str:
    path = tmp_path / kind
    if kind == "garbage":
        path.write_bytes(b"\x00\x01garbage\xff" * 8)
    elif kind == "bad-shebang":
        path.write_text("#!/nonexistent/interpreter\necho hi\n")
    elif kind == "not-executable":
        path.write_text("#!/bin/sh\necho hi\n")
        return str(path)
    elif kind == "directory":
        path.mkdir()
        return str(path)
    else:
        return "definitely-not-a-command-xyz"
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(("kind", "exit_code", "message", "row"), [
    ("not-found", 127, "command not found", None),
    ("directory", 126, "is a directory", None),
    ("not-executable", 126, "permission denied", None),
    ("bad-shebang", 127, "bad interpreter /nonexistent/interpreter", None),
    ("garbage", 126, "cannot execute: Exec format error", "failed"),  # only exec can tell: the row is closed
])
def test_a_command_that_cannot_start_is_one_line_with_the_shells_exit_code(capsys, tmp_path, kind, exit_code, message, row):
    program = _unrunnable(tmp_path, kind)
    code, out, err = run_cli(capsys, "measure", "--country", "FRA", "--", program, "arg")
    lines = err.strip().splitlines()
    assert code == exit_code and len(lines) == 1 and lines[0].startswith("greendiff: error: "), err
    assert message in lines[0] and "Traceback" not in err + out
    path = default_ledger_path()
    runs = Ledger(path).list_runs() if path.exists() else []
    assert [r.status for r in runs] == ([row] if row else [])
    if row:
        assert runs[0].exit_code == exit_code and runs[0].summary["status"] == "failed"


# -- measure: signals reach the whole process group, and nothing of it survives ------------------------

def _measure_subprocess(tmp_path, script: str) -> tuple[subprocess.Popen, Ledger, int]:
    """``python -m greendiff measure -- sh -c SCRIPT``, once the script has written its grandchild's pid."""
    ledger_path, pidfile = tmp_path / "sig.sqlite", tmp_path / "pid"
    proc = subprocess.Popen([PY, "-m", "greendiff", "measure", "--sample-interval", "0.2", "--country", "FRA", "--",
                             "sh", "-c", script.format(pidfile=pidfile)],
                            env={**os.environ, "GREENDIFF_LEDGER": str(ledger_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (pidfile.exists() and pidfile.read_text().strip()):
        time.sleep(0.05)
    time.sleep(0.3)  # the shell reaches its 'wait'
    return proc, Ledger(ledger_path), int(pidfile.read_text())


def _gone(pid: int) -> bool:
    """Not running (a zombie waiting for a container's init to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigterm_reaches_the_grandchild_and_the_run_is_closed_interrupted(tmp_path):
    proc, ledger, grandchild = _measure_subprocess(tmp_path, "sleep 60 & echo $! > {pidfile}; wait")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()
    assert _gone(grandchild)
    (run,) = ledger.list_runs()
    assert run.status == "interrupted" and run.exit_code == 143 and run.summary["status"] == "interrupted"


def test_ctrl_c_is_forwarded_to_the_group_and_a_second_one_kills_it(tmp_path):
    """The child has its own session, so a terminal's Ctrl-C reaches it only through greendiff."""
    proc, ledger, grandchild = _measure_subprocess(tmp_path, "sleep 60 & echo $! > {pidfile}; wait")
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    assert proc.returncode == 128 + signal.SIGINT and _gone(grandchild)
    # a command that ignores SIGINT: the first Ctrl-C is passed on (and ignored), the second kills the group
    second = tmp_path / "second"
    second.mkdir()
    proc, ledger, grandchild = _measure_subprocess(second, "trap '' INT; sleep 60 & echo $! > {pidfile}; wait")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None and not _gone(grandchild)
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    assert proc.returncode == 128 + signal.SIGKILL and _gone(grandchild)
    assert ledger.list_runs()[0].status == "interrupted"


def test_what_a_command_leaves_in_its_group_is_ended_after_it_exits(tmp_path):
    """A grandchild that even ignores SIGTERM does not outlive the command: SIGKILL after the grace period."""
    proc, ledger, grandchild = _measure_subprocess(tmp_path, "(trap '' TERM; exec sleep 60) & echo $! > {pidfile}; "
                                                             "sleep 0.5; exit 3")
    proc.wait(30)
    err = proc.stderr.read()
    assert proc.returncode == 3 and _gone(grandchild)
    assert "ended 1 process the command left running in its process group" in err
    (run,) = ledger.list_runs()
    assert run.status == "failed" and run.exit_code == 3


#: What the code uses that sets a lower bound: the text in src/ -> (distribution, version that has it)
NEEDS = {"import tomllib": ("python", (3, 11)), "torch.OutOfMemoryError": ("torch", (2, 5)),
         "torch.amp.GradScaler": ("torch", (2, 3)), "torch.utils.flop_counter": ("torch", (2, 1))}


def test_declared_lower_bounds_cover_the_apis_in_use():
    """issue 20: requires-python said 3.10 while tomllib needs 3.11, and torch>=2.1 lacked torch.OutOfMemoryError."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = {"python": project["requires-python"]}
    declared.update(re.match(r"([\w-]+)(.*)", d).groups() for d in project["dependencies"])
    source = "\n".join(p.read_text() for p in (root / "src" / "greendiff").rglob("*.py"))
    for text, (dist, needed) in NEEDS.items():
        assert text in source, f"{text} no longer used: drop it from NEEDS"
        lower = tuple(int(x) for x in re.fullmatch(r">=(\d+(?:\.\d+)*)", declared[dist].strip()).group(1).split("."))
        assert lower >= needed, f"{dist}{declared[dist]} is below {'.'.join(map(str, needed))}, which {text} needs"
