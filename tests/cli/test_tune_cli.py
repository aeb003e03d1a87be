from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from greendiff.cli._app import main
from greendiff.cli._render import fmt_energy
from greendiff.ledger import Ledger, default_ledger_path

BASE = ["--set", "model.preset=nano", "--set", "model.block_out_channels=8,16", "--set", "data.dataset=digits",
        "--set", "data.resolution=8", "--set", "optim.batch_size=16", "--set", "optim.sample_steps=4",
        "--set", "stop.eval_samples=8", "--set", "run.log_every=1"]
SPACE = '[space]\n"optim.lr" = { low = 1e-3, high = 1e-2, log = true }\n"optim.timestep_sampling" = { choices = ["uniform", "stratified"] }\n'


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


def scripted_quality(monkeypatch, fids):
    import greendiff.evaluate as evaluate_pkg
    from greendiff.evaluate import Quality

    values = iter(fids)
    monkeypatch.setattr(evaluate_pkg, "quality", lambda *a, **k: Quality(next(values), 0.0, 0.0, 1.0, 1.0, 8))


def counting_energy(monkeypatch):
    """Meter every run with a counter that adds 1 J per meter read: reads happen at every window boundary
    and budget check, so the energy follows the work done, deterministically. (The CPU-time estimate at
    these sub-joule scales is noise, and so is wall time on a loaded machine: a 1-step pruned trial once
    measured more than a 3-step one with either.)"""
    from greendiff.energy import DeviceInfo, EnergyMonitor, Meter

    class CountingMeter(Meter):
        kind = "cpu"

        def __init__(self):
            self.reads = 0

        def devices(self):
            return [DeviceInfo("cpu:reads", "cpu", "1 J per read", "estimate:tdp-cputime", "process-tree")]

        def read_energy_j(self):
            self.reads += 1
            return {"cpu:reads": float(self.reads)}

    monkeypatch.setattr(EnergyMonitor, "detect", classmethod(lambda cls, options=None: EnergyMonitor([CountingMeter()])))


def study_trials(study_dir):
    from greendiff.tune import load_study, open_storage

    study, _ = load_study(open_storage(f"sqlite:///{study_dir / 'study.db'}"), study_dir.name)
    return study.trials


def test_a_budget_study_prunes_a_bad_trial_and_exports_a_config_the_trainer_takes(capsys, tmp_path, space, monkeypatch):
    # 72 J a trial (the counting meter: ~6 J a step, ~3 J an evaluation) with 2 reports: an evaluation after
    # 36 J (step 6), the budget stops a trial at step 9 (with room for the closing evaluation, its value)
    scripted_quality(monkeypatch, [10, 8, 11, 9, 50, 9.5, 7.5])
    counting_energy(monkeypatch)
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 4, "--trial-budget-kwh", "2e-5", "--reports", 2,
                           "--pruner", "median", "--name", "s", "--output-dir", tmp_path / "tune", *BASE,
                           "--set", "run.max_steps=50")
    assert code == 0, err
    study_dir = tmp_path / "tune" / "s"
    trials = study_trials(study_dir)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert [t.value for t in trials] == [8, 9, 50, 7.5] and trials[2].intermediate_values == {1: 50}
    assert [t.user_attrs["outcome"]["steps"] for t in trials] == [9, 9, 6, 9]
    for t in trials:  # the budget held up to the closing evaluation; the final checkpoint and export follow it
        records = [json.loads(line) for line in (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").open()]
        assert max(r.get("energy_kwh", 0.0) for r in records) <= 2e-5
        assert [r.get("event") for r in records].count("stopped") == 1 and records[-1]["event"] == "stopped"
    assert trials[2].user_attrs["outcome"]["energy_kwh"] < min(t.user_attrs["outcome"]["energy_kwh"] for t in trials[:2])
    runs = [r for r in Ledger(default_ledger_path()).list_runs() if r.kind == "tune-trial"]
    assert sorted(r.assumptions["config"]["tune"]["trial"] for r in runs) == [0, 1, 2, 3]
    assert {r.assumptions["config"]["tune"]["study"] for r in runs} == {"s"} and {r.status for r in runs} == {"completed"}
    assert sorted(t.user_attrs["ledger"]["run_id"] for t in trials) == sorted(r.id for r in runs)
    err = " ".join(err.split())  # rich wraps lines
    assert "1 pruned" in err and "pruning: a search without it would have used about" in err and "best: trial 3, fid 7.500" in err
    # each trial's line sets its measured energy against the budget (the final checkpoint and export passed it)
    from greendiff.tune import budget_note

    used = trials[0].user_attrs["outcome"]["energy_kwh"]
    assert used > 2e-5 and f"trial 0: complete · fid 8.000 · {fmt_energy(used)} · stopped at the budget, {budget_note(used, 2e-5)}" in err
    assert err.count("budget used") == err.count("of the budget used")  # no bare "budget used" label

    code, out, err = run_cli(capsys, "tune", "--report", study_dir, "--export", tmp_path / "mine.toml", "--json")
    assert code == 0 and "search total:" in err
    report = json.loads(out)
    assert report["exported"] == {"trial": 3, "path": str(tmp_path / "mine.toml")}
    assert report["summary"]["by_state"]["PRUNED"]["trials"] == 1 and [t["state"] for t in report["trials"]][2] == "PRUNED"
    assert report["summary"]["energy_kwh"] == pytest.approx(sum(t.user_attrs["outcome"]["energy_kwh"] for t in trials))
    code, out, err = run_cli(capsys, "train", "--config", tmp_path / "mine.toml", "--dry-run")
    assert code == 0, err
    assert f"lr = {trials[3].params['optim.lr']}" in out and "max_steps = 9" in out and 'preset = "nano"' in out
    code, _, err = run_cli(capsys, "tune", "--report", study_dir, "--trial", 2)
    assert code == 2 and "--trial 2: no complete trial" in err


def test_a_trial_line_prints_its_score_as_people_read_it_not_in_e_notation():
    """A KID of 1.2346e-05 reads 0.00001235 (greendiff.tune.metric_text), as the pruner's reason does."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from greendiff.cli._tune import _TrialLine

    console = Console(file=io.StringIO(), width=200)
    trial = SimpleNamespace(number=4, values=[1.2346e-05], user_attrs={}, state=SimpleNamespace(name="COMPLETE"))
    _TrialLine("kid", console)(trial)
    assert console.file.getvalue().strip() == "trial 4: complete · kid 0.00001235 · 0 mWh"


def test_parallel_journal_workers_share_one_study(capsys, tmp_path, space):
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 4, "--trial-budget-kwh", 1.0, "--workers", 2,
                           "--name", "par", "--output-dir", tmp_path / "tune", *BASE, "--set", "run.max_steps=3")
    assert code == 0, err
    study_dir = tmp_path / "tune" / "par"
    assert (study_dir / "study.journal").is_file() and not (study_dir / "study.db").exists()
    from greendiff.tune import load_study, open_storage

    study, _ = load_study(open_storage(f"journal:{study_dir / 'study.journal'}"), "par")
    trials = study.trials
    assert 4 <= len(trials) <= 5 and [t.number for t in trials] == list(range(len(trials)))  # at most one extra: a race
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both workers ran trials
    assert len({t.params["optim.lr"] for t in trials}) == len(trials)  # each worker has its own sampler seed
    runs = [r for r in Ledger(default_ledger_path()).list_runs() if r.kind == "tune-trial"]
    assert sorted(r.id for r in runs) == sorted(t.user_attrs["ledger"]["run_id"] for t in trials)
    assert all(r.status == "completed" and r.summary["energy_kwh"] > 0 for r in runs)
    assert (study_dir / "worker-0.log").is_file() and (study_dir / "worker-1.log").is_file()


def test_resume_marks_dead_trials_failed_and_retries_them(capsys, tmp_path, space):
    args = ["--output-dir", tmp_path / "tune", *BASE, "--set", "run.max_steps=3"]
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 2, "--trial-budget-kwh", 1.0, "--name", "r", *args)
    assert code == 0, err
    study_dir = tmp_path / "tune" / "r"
    from greendiff.tune import load_study, open_storage

    study, spec = load_study(open_storage(f"sqlite:///{study_dir / 'study.db'}"), "r")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed = study.ask()  # a trial whose worker was killed mid-run
    values = {p.key: p.suggest(killed) for p in spec.params}
    killed.set_user_attr("worker", {"host": socket.gethostname(), "pid": gone.pid, "started_unix_s": 0.0})
    code, _, err = run_cli(capsys, "tune", "--resume", study_dir, "--trials", 3)
    assert code == 0, err
    err = " ".join(err.split())
    assert "trials 2 died with their worker: marked failed, queued again" in err
    trials = study_trials(study_dir)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].user_attrs["retry_of"] == 2 and trials[3].params == killed.params
    assert trials[2].user_attrs["fail_reason"] == "its worker process died" and values
    code, _, err = run_cli(capsys, "tune", "--resume", study_dir, "--space", space)
    assert code == 2 and "continuing it takes only --trials" in err
    code, _, err = run_cli(capsys, "tune", "--resume", study_dir, "--workers", 2)
    assert code == 2 and "storage is SQLite, which is for a single worker" in err


def test_pareto_mode_prints_and_plots_the_front(capsys, tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[space]\n"run.max_steps" = { low = 2, high = 6, step = 2 }\n')
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 3, "--mode", "pareto", "--name", "p",
                           "--output-dir", tmp_path / "tune", *BASE)
    assert code == 0, err
    err = " ".join(err.split())
    assert "pruners do not apply to multi-objective" in err and "Pareto front" in err
    svg = (tmp_path / "tune" / "p" / "pareto.svg").read_text()
    assert svg.count("<circle") == 3
    trials = study_trials(tmp_path / "tune" / "p")
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in trials)


BAD = [
    ('[space]\n"optim.bogus" = { low = 1, high = 2 }\n', [], "unknown parameter 'optim.bogus'"),
    ('[space]\n"optim.lr" = { low = 1e-2, high = 1e-3 }\n', [], "empty range"),
    ('[space]\n"optim.batch_size" = { choices = [] }\n', [], "choices must be a non-empty list"),
    ('[lr]\nlow = 1\n', [], "expected one [space] table"),
    (SPACE, ["--trial-budget-kwh", "0"], "--trial-budget-kwh must be > 0"),
    (SPACE, ["--trial-budget-kwh", "-1"], "--trial-budget-kwh must be > 0"),
    (SPACE, ["--storage", "postgresql://alice:s3cret@127.0.0.1:1/studies"], "cannot reach the storage postgresql://***@"),
    (SPACE, ["--storage", "sqlite:////nonexistent-dir/study.db"], "cannot reach the storage"),
    (SPACE, ["--storage", "sqlite:///x.db", "--workers", "2"], "SQLite storage is for a single worker"),
    (SPACE, ["--mode", "pareto", "--pruner", "median"], "pruners do not apply"),
    (SPACE, ["--workers", "0"], "--workers must be >= 1"),
    (SPACE, ["--set", "optim.batch_size=5000"], "fewer than one batch of 5000"),
]


@pytest.mark.parametrize(("space_text", "extra", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_tune_input_is_one_line_exit_2(capsys, tmp_path, space_text, extra, message):
    space = tmp_path / "space.toml"
    space.write_text(space_text)
    budget = [] if any(a.startswith("--trial-budget") for a in extra) else ["--trial-budget-kwh", "1"]
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 2, *budget, "--output-dir", tmp_path / "tune",
                           *BASE, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "s3cret" not in err, err
    assert not (tmp_path / "tune").exists(), "nothing created for bad input"


def test_a_folder_that_is_not_a_study_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "--report", tmp_path)
    assert code == 2 and "not a study folder" in err
    code, _, err = run_cli(capsys, "tune", "--trials", 3)
    assert code == 2 and "a new study needs --space FILE and --trials N" in err
    assert json.dumps(os.environ.get("GREENDIFF_TUNE_STORAGE")) == "null"


def test_a_name_taken_in_a_shared_storage_creates_no_folder(capsys, tmp_path, space):
    from greendiff.tune import StudySpec, create_study, open_storage

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    create_study(StudySpec(trial_budget_kwh=1.0, space={"optim.lr": {"low": 1e-3, "high": 1e-2}}), open_storage(url), "taken")
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 2, "--trial-budget-kwh", 1, "--storage", url,
                           "--name", "taken", "--output-dir", tmp_path / "tune", *BASE)
    assert code == 2 and "a study named 'taken' already exists" in err
    assert not (tmp_path / "tune").exists()


HOSTILE = [
    ("name = \n", "study.toml: invalid TOML"),
    ('name = "../../../escaped"\nstorage_file = "study.db"\n', "study.toml: name '../../../escaped' is not a usable name"),
    ('name = "x"\nstorage_file = "../outside.db"\n', "study.toml: storage_file '../outside.db' is not a usable name"),
    ('name = "x"\nstorage_file = "{tmp}/outside.db"\n', "is not a usable name: it contains '/'"),
    ('name = "x"\nstorage = "postgresql://u:s3cret@127.0.0.1:1/x"\n', "study.toml: storage 'postgresql://***@127.0.0.1:1/x' "
                                                                     "is not a file inside the study folder; pass --storage URL"),
    ('name = "x"\nstorage = "sqlite:///{tmp}/outside.db"\n', "is not a file inside the study folder"),
    ('name = "x"\nstorage = "journal:../outside.journal"\n', "is not a file inside the study folder"),
]


@pytest.mark.parametrize("command", ["--report", "--resume"])
@pytest.mark.parametrize(("text", "message"), HOSTILE, ids=[m for _, m in HOSTILE])
def test_a_hostile_study_folder_is_one_line_and_opens_nothing(capsys, tmp_path, monkeypatch, command, text, message):
    """study.toml is read by one checked parser: a traceback (bad TOML), a storage file outside the folder
    (opened, and created) or a remote database (connected to) on the folder's word alone were all possible."""
    import greendiff.tune

    def refuse(*args, **kwargs):
        raise AssertionError("a storage was opened")

    monkeypatch.setattr(greendiff.tune, "open_storage", refuse)
    folder = tmp_path / "shared" / "study"
    folder.mkdir(parents=True)
    (folder / "study.db").touch()
    (folder / "study.toml").write_text(text.format(tmp=tmp_path))
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, "tune", command, folder, "--no-gpu", "--country", "FRA")
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"greendiff: error: {folder / 'study.toml'}: "), err
    assert message in err and "Traceback" not in out + err and "s3cret" not in err
    assert sorted(tmp_path.rglob("*")) == before  # nothing created: no outside.db, no escaped folder


def test_a_study_s_files_are_written_atomically(capsys, tmp_path, monkeypatch):
    """study.toml, space.toml, trial config.toml, pareto.svg and the exported config go through
    files.atomic_write_text (a kill mid-write left half a file); a plain write_text fails this test."""
    from pathlib import Path

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{self} written in place")

    monkeypatch.setattr(Path, "write_text", refuse)
    space = tmp_path / "space.toml"
    space.write_bytes(b'[space]\n"run.max_steps" = { low = 2, high = 4, step = 2 }\n')
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 1, "--mode", "pareto", "--name", "p",
                           "--output-dir", tmp_path / "tune", *BASE)
    assert code == 0, err
    folder = tmp_path / "tune" / "p"
    assert (folder / "study.toml").read_text() == 'name = "p"\nstorage_file = "study.db"\n'
    assert (folder / "space.toml").read_bytes() == space.read_bytes()
    assert (folder / "pareto.svg").is_file() and (folder / "best.toml").is_file()
    assert len(list((folder / "trials").glob("*/config.toml"))) == 1


@pytest.mark.parametrize("url", [
    "sqlite+pysqlcipher://:PASSW0RDX@/{tmp}/nodir/study.db", "sqlite://tuner:PASSW0RDX@/x",
    "sqlite://tuner:PASSW0RDX@/{tmp}/nodir/a.db?bad=1", "nosuch://tuner:PASSW0RDX@h/d",
    "postgresql://tuner:PASSW0RDX@h:notaport/db", "postgresql://tuner:PASSW0RDX@127.0.0.1:1/db"])
@pytest.mark.parametrize("by_env", [False, True])
def test_a_storage_url_s_userinfo_is_never_printed(capsys, monkeypatch, tmp_path, url, by_env):
    url = url.format(tmp=str(tmp_path).lstrip("/"))
    given = ["--storage", url]
    if by_env:
        monkeypatch.setenv("GREENDIFF_TUNE_STORAGE", url)
        given = []
    code, out, err = run_cli(capsys, "tune", "--join", "--study", "x", "--output-dir", tmp_path / "t", *given)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "PASSW0RDX" not in out + err and "tuner" not in out + err, err
    assert "cannot reach the storage" in err and "://***" in err, err


def test_tune_help_reads_whole_at_80_columns(capsys, monkeypatch):
    """Issue 20: at 80 columns the help cut GREENDIFF_TUNE_STORAGE with "…", ate the "[space]" of --space's
    text as markup, and left its text a 20-column strip beside a --base-trial/--no-base-trial column."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["tune", "--help"]) == 0
    text = capsys.readouterr().out
    assert "…" not in text and [line for line in text.splitlines() if len(line) > 80] == []
    flat = " ".join(text.replace("│", " ").split())
    assert re.findall(r"╭─ (.+?) ─", text) == ["Options", "Budget and search", "Workers, storage and resuming",
                                                 "Report", "Measurement"]
    for shown in ("--space FILE TOML file with a [space] table: trainer keys and their ranges.",
                  "(env GREENDIFF_TUNE_STORAGE; default: a file in the study folder)",
                  "--no-base-trial Leave out trial 0, the base config's own values (those inside the space).",
                  "--json With --report: also print"):
        assert shown in flat
    assert "<bool>" not in text  # switches, --help included, show no type
    assert not re.search(r"(?<![\w-])--base-trial(?![\w-])", text)  # the default: a hidden option


@pytest.fixture
def study_jobs(monkeypatch):
    """The StudyJob a ``tune`` call would start; the call stops there (exit 2), no study is made."""
    import greendiff.cli._tune as tune_cli
    from greendiff.errors import UserInputError

    jobs = []

    def made(job):
        jobs.append(job)
        raise UserInputError("stop here")

    monkeypatch.setattr(tune_cli, "new_study", made)
    return jobs


@pytest.mark.parametrize(("flags", "base_trial"), [([], True), (["--no-base-trial"], False), (["--base-trial"], True)])
def test_base_trial_is_on_unless_no_base_trial(capsys, tmp_path, space, study_jobs, flags, base_trial):
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 2, "--trial-budget-kwh", 1,
                           "--output-dir", tmp_path / "tune", *flags)
    assert code == 2 and "stop here" in err and [job.base_trial for job in study_jobs] == [base_trial]


def test_base_trial_and_no_base_trial_together_is_one_line(capsys, tmp_path, space, study_jobs):
    code, _, err = run_cli(capsys, "tune", "--space", space, "--trials", 2, "--trial-budget-kwh", 1,
                           "--output-dir", tmp_path / "tune", "--base-trial", "--no-base-trial")
    assert code == 2 and err.strip() == "greendiff: error: give --base-trial or --no-base-trial, not both", err
    assert study_jobs == [] and not (tmp_path / "tune").exists()
