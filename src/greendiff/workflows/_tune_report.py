"""A study's worker processes (:func:`run_study_workers`) and its report (:func:`study_report`): the trials,
energy and CO2e, the Pareto plot and the exported config, as a typed :class:`StudyReport` the CLI renders."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import one_line
from greendiff.workflows._progress import Interrupted, NullProgress, Progress
from greendiff.workflows._tune import ENV_STORAGE, Study, storage_url


def check_continue_flags(given: Sequence[tuple[str, object]]) -> None:
    """A study keeps its spec: continuing it refuses the flags that define one (``(flag, value)`` pairs)."""
    named = [flag for flag, value in given if value]
    if named:
        raise UserInputError(f"a study keeps its spec; continuing it takes only --trials, --workers and --storage (got {', '.join(named)})")


@dataclass(frozen=True)
class WorkersState:
    """Where a study stands while its workers run: trials finished (complete or pruned) of ``total``."""

    finished: int
    total: int
    running: int
    pruned: int
    failed: int


@dataclass(frozen=True)
class WorkerExit:
    """A worker that exited with an error: its number, exit code and the last line of its log."""

    worker: int
    code: int
    last_line: str


def run_study_workers(study: Study, workers: int, measure_argv: Sequence[str], progress: Progress | None = None,
                      watch: Callable[[WorkersState], None] | None = None, poll_s: float = 1.0) -> list[WorkerExit]:
    """``workers`` processes of ``greendiff tune --resume FOLDER --worker K`` (output in ``FOLDER/worker-K.log``),
    ``watch`` called with the study's state every ``poll_s`` seconds until all exit; the workers that failed.
    Ctrl-C: passed on to the workers, waited for, noted, then :class:`Interrupted` (exit code 130)."""
    from greendiff.tune._study import counts

    progress = progress or NullProgress()
    # each worker takes its share of the cores itself (greendiff.parallel.CoreShare), and a worker that ends
    # early gives its share back to the others; worker k gets --worker k+1 (its sampler seed: seed_slot)
    env = {**os.environ, ENV_STORAGE: study.url}
    procs = []
    try:
        for k in range(workers):
            log = (study.folder / f"worker-{k}.log").open("w")
            procs.append((subprocess.Popen([sys.executable, "-m", "greendiff", "tune", "--resume", str(study.folder), "--worker",
                                            str(k + 1), *measure_argv], stdout=log, stderr=subprocess.STDOUT, env=env), log))
        while any(p.poll() is None for p, _ in procs):
            n = counts(study.study)
            if watch is not None:
                watch(WorkersState(min(study.spec.trials, n.get("COMPLETE", 0) + n.get("PRUNED", 0)), study.spec.trials,
                                   n.get("RUNNING", 0), n.get("PRUNED", 0), n.get("FAIL", 0)))
            time.sleep(poll_s)
    except KeyboardInterrupt:  # a terminal's Ctrl-C reaches the workers too; a signal to this process alone does not
        _interrupt(procs)
        progress.note(f"interrupted; continue the study with: greendiff tune --resume {study.folder} --workers {workers}")
        raise Interrupted(130) from None
    finally:
        for _, log in procs:
            log.close()
    return [WorkerExit(k, p.returncode, _last_line(study.folder / f"worker-{k}.log"))
            for k, (p, _) in enumerate(procs) if p.returncode != 0]


def _interrupt(procs) -> None:
    time.sleep(2.0)
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p, _ in procs:
        p.wait()


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return next((one_line(line) for line in reversed(lines) if line.strip()), "(no output)")


class LedgerEnergy:
    """``(kWh, kgCO2e)`` the ledger measured for a trial whose worker died (its ``ledger`` user attribute), on
    this host only; None when the ledger is elsewhere or missing (opening one would create it)."""

    def __init__(self, ledger_path: Path | None) -> None:
        self.ledger_path = ledger_path

    def __call__(self, attr: dict) -> tuple[float, float] | None:
        from greendiff.ledger import Ledger
        from greendiff.tracking import run_summary

        if attr.get("host") != socket.gethostname():
            return None
        path = attr.get("path") or self.ledger_path
        if path is not None and not Path(path).is_file():
            return None
        try:
            db = Ledger(path)
            summary = run_summary(db, db.get_run(int(attr["run_id"])))
        except UserInputError:
            return None
        return summary.energy_kwh, summary.emissions_kg


def ledger_energy(ledger_path: Path | None) -> LedgerEnergy:
    """The ``ledger_energy`` collaborator of :func:`greendiff.tune.trial_rows` (:class:`LedgerEnergy`)."""
    return LedgerEnergy(ledger_path)


@dataclass(frozen=True)
class StudyReport:
    """A study's report: its rows and summary, the plot (Pareto mode) and the exported trial.

    Args:
        name: the study's name; spec: its :class:`greendiff.tune.StudySpec`; metric: the score minimised.
        rows: one :class:`greendiff.tune.TrialRow` per trial; summary: a :class:`greendiff.tune.StudySummary`.
        pareto_svg: the plot written (Pareto mode), else None.
        chosen: the exported trial (the best, or ``pick``); None when no trial is complete.
        export: where its config was written (None when nothing was exported).
    """

    name: str
    spec: Any
    metric: str
    rows: list
    summary: Any
    pareto_svg: Path | None = None
    chosen: Any = None
    export: Path | None = None

    def to_dict(self) -> dict:
        """``tune --report --json``."""
        return {"study": self.name, "mode": self.spec.mode, "metric": self.metric, "spec": dataclasses.asdict(self.spec),
                "summary": self.summary.to_dict(),
                "exported": None if self.chosen is None else {"trial": self.chosen.number, "path": str(self.export)},
                "trials": [r.to_dict() for r in self.rows]}


def study_report(study_dir: Path, storage: str | None = None, export: Path | None = None, pick: int | None = None,
                 ledger: Path | None = None) -> StudyReport:
    """Report on the study in ``study_dir`` (its storage: ``storage`` or the folder's own file): write
    ``pareto.svg`` (Pareto mode) and the chosen trial's config (``export``, default ``FOLDER/best.toml``;
    ``pick``: that trial instead of the best). ``ledger``: for trials whose worker died."""
    from greendiff.tune import (
        best_row, export_toml, load_study, open_storage, pareto_svg, read_study_file, summarize_study, trial_rows,
    )

    folder = read_study_file(study_dir)  # checked before any storage is opened
    study_obj, spec = load_study(open_storage(storage_url(folder, storage)), folder.name)
    rows = trial_rows(study_obj, ledger_energy(ledger))
    metric = spec.metric
    chosen = best_row(spec, rows) if pick is None else next((r for r in rows if r.number == pick), None)
    if pick is not None and (chosen is None or chosen.state != "COMPLETE"):
        raise UserInputError(f"--trial {pick}: no complete trial with that number in study {folder.name}")
    svg = None
    if spec.mode == "pareto":
        svg = study_dir / "pareto.svg"
        atomic_write_text(svg, pareto_svg(rows, metric))
    target = export or study_dir / "best.toml"
    if chosen is not None:
        try:
            atomic_write_text(target, export_toml(spec, chosen, folder.name, metric))
        except OSError as exc:
            raise UserInputError(f"cannot write {target}: {exc.strerror}") from None
    return StudyReport(folder.name, spec, metric, rows, summarize_study(spec, rows), svg, chosen,
                       target if chosen is not None else None)
