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
    assert cpu["energy_j"] == pytest.approx(summary["cpu_time_s"] * 20.0 / siblings, rel=0.05)
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
    assert code == 2 and "a model card describes one run" in err
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
    (["measure", "--", "definitely-not-a-command-xyz"], "command not found"),
    (["measure", "--live", "uk", "--country", "FRA", "--", PY, "-c", "pass"], "Great Britain only"),
    (["runs", "show", "42"], "no run with id 42"),
    (["runs", "show", "abc"], "Invalid value"),
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
    assert summary["status"] == "interrupted" and summary["cpu_time_s"] > 0 and summary["energy_j"] > 0


def test_python_dash_m_greendiff_passes_the_exit_code_on():
    """torchrun and accelerate launch run ``python -m greendiff``: a failing rank must fail the job."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "greendiff", "train", "--max-steps", "-3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "run.max_steps must be a positive integer" in proc.stderr
