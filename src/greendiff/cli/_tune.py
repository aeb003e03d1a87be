"""``greendiff tune``: energy-aware hyperparameter search over the trainer's config, on Optuna. The study
and its trials are :mod:`greendiff.workflows` (new_study, continue_study, work_on_study); here: the flags,
worker processes with a bar, and the report.

A study lives in a folder (``runs/tune/NAME``: ``study.toml``, the space, the trials' run
directories, ``best.toml``) and in its Optuna storage, which also holds its spec, so that workers
started later or elsewhere continue the same study. Every trial is an ordinary trainer run and a
ledger run (kind ``tune-trial``) linked to the study.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from greendiff.cli._options import (
    REPORTS, ROWS, SEED, STARTUP_TRIALS, TRIAL_BUDGET_KWH, TRIAL_NUMBER, WORKER_SLOT, WORKERS, name_option,
    number_option, parse_sets, with_measurement,
)
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, fmt_mass, plain
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import one_line
from greendiff.workflows import (
    ENV_STORAGE, MeasurementOptions, StudyJob, continue_study, new_study, resolve_settings, storage_url, work_on_study,
)

Opt = typer.Option


# -- the command -----------------------------------------------------------------------------------

@with_measurement
def tune_command(
    space: Annotated[Optional[Path], Opt("--space", help="TOML file with a [space] table: trainer keys and their ranges.")] = None,
    trials: Annotated[Optional[int], number_option("--trials", bounds=ROWS, help="Finished (complete or pruned) trials the study should reach.")] = None,
    config_file: Annotated[Optional[Path], Opt("--config", help="Trainer config TOML every trial starts from.")] = None,
    sets: Annotated[list[str], Opt("--set", help="Trainer config key for every trial, e.g. --set model.preset=nano (repeatable).")] = [],
    mode: Annotated[str, Opt("--mode", help="budget: best quality within --trial-budget-kwh per trial (pruned early); "
                                            "pareto: quality vs training kWh, no pruning.")] = "budget",
    trial_budget_kwh: Annotated[Optional[float], number_option("--trial-budget-kwh", bounds=TRIAL_BUDGET_KWH, help="Energy each trial may use (budget mode; a cap in pareto mode).")] = None,
    reports: Annotated[int, number_option("--reports", bounds=REPORTS, help="Evaluations per trial, at equal energy intervals, that the pruner acts on.")] = 4,
    pruner: Annotated[Optional[str], Opt("--pruner", help="hyperband (default), median, sha or none; pareto mode: none only.")] = None,
    seed: Annotated[int, number_option("--seed", bounds=SEED, help="Seed of the TPE sampler.")] = 0,
    startup_trials: Annotated[int, number_option("--startup-trials", bounds=STARTUP_TRIALS, help="Random trials before TPE (0: a third of --trials, 3 to 10).")] = 0,
    base_trial: Annotated[bool, Opt("--base-trial/--no-base-trial", help="First trial: the base config's own values (those inside the space).")] = True,
    workers: Annotated[int, number_option("--workers", bounds=WORKERS, help="Worker processes on this machine (journal storage).")] = 1,
    storage: Annotated[Optional[str], Opt("--storage", envvar=ENV_STORAGE, show_envvar=True,
                                          help="Optuna storage: sqlite:///F.db, journal:F.journal, postgresql://... (default: a file in the study folder).")] = None,
    name: Annotated[Optional[str], name_option("--name", help="Study name (default tune-<time>).")] = None,
    output_dir: Annotated[Path, Opt("--output-dir", help="Parent of the study folder.")] = Path("runs/tune"),
    resume: Annotated[Optional[Path], Opt("--resume", help="Study folder to continue (dead trials are marked failed and retried).")] = None,
    join: Annotated[bool, Opt("--join", help="Work on the study --study in --storage (e.g. from another machine).")] = False,
    study: Annotated[Optional[str], name_option("--study", help="Study name, with --join.")] = None,
    report: Annotated[Optional[Path], Opt("--report", help="Study folder: print its trials, energy, CO2e and best config.")] = None,
    export: Annotated[Optional[Path], Opt("--export", help="With --report: where to write the best config (default FOLDER/best.toml).")] = None,
    pick: Annotated[Optional[int], number_option("--trial", bounds=TRIAL_NUMBER, help="With --report: export this trial instead of the best.")] = None,
    as_json: Annotated[bool, Opt("--json", help="With --report: also print the study, its summary and every trial as JSON on stdout.")] = False,
    worker_slot: Annotated[int, number_option("--worker", bounds=WORKER_SLOT, hidden=True, help="Set by --workers: this worker's slot (its sampler seed).")] = 0,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Search the trainer's config for the best quality per kWh, every trial measured and in the ledger."""
    as_worker = worker_slot > 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # greendiff prints its own line per trial
    console = Console(stderr=True)
    progress = RichProgress(console)
    if report is not None:
        _print_report(report, storage, export, pick, measurement.ledger, console, as_json)
        return
    resumed = None
    if resume is not None:  # the folder's study.toml checked before anything is opened or created (the ledger too)
        from greendiff.tune import read_study_file

        folder = read_study_file(resume)
        resumed = folder, storage_url(folder, storage)
    settings = resolve_settings(measurement)
    if resume is not None or join:
        given = [flag for flag, value in (("--space", space), ("--config", config_file), ("--set", sets or None),
                                          ("--trial-budget-kwh", trial_budget_kwh), ("--pruner", pruner)) if value]
        if given:
            raise UserInputError(f"a study keeps its spec; continuing it takes only --trials, --workers and --storage (got {', '.join(given)})")
        study_ = continue_study(resumed, join, study, storage, output_dir, trials, workers, worker_slot, progress)
    else:
        if space is None or trials is None:
            raise UserInputError("a new study needs --space FILE and --trials N (or --resume FOLDER / --report FOLDER)")
        study_ = new_study(StudyJob(space, trials, config_file, parse_sets(sets), mode, trial_budget_kwh, reports, pruner,
                                    seed, startup_trials, base_trial, workers, storage, name, output_dir))
        spec = study_.spec
        console.print(f"study {study_.study.study_name}: {spec.trials} trials, {spec.mode} mode"
                      + (f", {spec.trial_budget_kwh:g} kWh per trial, pruner {spec.pruner}" if spec.mode == "budget" else "")
                      + f" · folder {study_.folder}", highlight=False)
    if workers > 1 and not as_worker:
        _spawn_workers(study_.folder, study_.study, study_.spec, study_.url, workers, measurement.argv(), console)
    else:
        work_on_study(study_, settings, progress, on_trial_end=_TrialLine(study_.spec.metric, console))
    if not as_worker:
        _print_report(study_.folder, study_.url, None, None, measurement.ledger, console)


class _TrialLine:
    """One line per finished trial: its state, value, energy and why it stopped."""

    def __init__(self, metric: str, console: Console) -> None:
        self.metric, self.console = metric, console

    def __call__(self, trial) -> None:
        value = f"{self.metric} {trial.values[0]:.4g}" if trial.values else trial.user_attrs.get("fail_reason", "")
        outcome = trial.user_attrs.get("outcome") or {}
        self.console.print(f"trial {trial.number}: {trial.state.name.lower()} · {value} · "
                           f"{fmt_energy(outcome.get('energy_kwh', 0.0))}"
                           + (f" · {outcome['stop_reason']}" if outcome.get("stop_reason") else ""), highlight=False)


def _spawn_workers(study_dir, study_obj, spec, url, workers, measure_argv, console) -> None:
    """``workers`` processes of ``greendiff tune --resume FOLDER --worker``; their output goes to
    ``FOLDER/worker-K.log``; a bar follows the study's finished trials."""
    from greendiff.tune import counts

    # each worker takes its share of the cores itself (greendiff.parallel.CoreShare), and a worker that ends
    # early gives its share back to the others; worker k gets --worker k+1 (its sampler seed: _seed_slot)
    env = {**os.environ, ENV_STORAGE: url}
    procs = []
    for k in range(workers):
        log = (study_dir / f"worker-{k}.log").open("w")
        procs.append((subprocess.Popen([sys.executable, "-m", "greendiff", "tune", "--resume", str(study_dir), "--worker",
                                        str(k + 1), *measure_argv], stdout=log, stderr=subprocess.STDOUT, env=env), log, k))
    progress = Progress(TextColumn("[bold]tune[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
    try:
        with progress:
            task = progress.add_task("tune", total=spec.trials, info=f"{workers} workers")
            while any(p.poll() is None for p, _, _ in procs):
                n = counts(study_obj)
                progress.update(task, completed=min(spec.trials, n.get("COMPLETE", 0) + n.get("PRUNED", 0)),
                                info=f"{n.get('RUNNING', 0)} running · {n.get('PRUNED', 0)} pruned · {n.get('FAIL', 0)} failed")
                time.sleep(1.0)
    except KeyboardInterrupt:  # a terminal's Ctrl-C reaches the workers too; a signal to this process alone does not
        time.sleep(2.0)
        for p, _, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p, _, _ in procs:
            p.wait()
        console.print(f"interrupted; continue the study with: greendiff tune --resume {study_dir} --workers {workers}")
        raise typer.Exit(130) from None
    finally:
        for _, log, _ in procs:
            log.close()
    bad = [(k, p.returncode) for p, _, k in procs if p.returncode != 0]
    for k, code in bad:
        lines = (study_dir / f"worker-{k}.log").read_text(errors="replace").splitlines()
        last = next((one_line(line) for line in reversed(lines) if line.strip()), "(no output)")
        console.print(plain(f"worker {k} exited with code {code}: {last}"), style="red", highlight=False)


# -- report ------------------------------------------------------------------------------------------

def _ledger_energy(ledger_path: Path | None):
    from greendiff.ledger import Ledger
    from greendiff.tracking import run_summary

    def lookup(attr: dict) -> tuple[float, float] | None:
        if attr.get("host") != socket.gethostname():
            return None
        path = attr.get("path") or ledger_path
        if path is not None and not Path(path).is_file():  # opening a ledger would create one
            return None
        try:
            db = Ledger(path)
            summary = run_summary(db, db.get_run(int(attr["run_id"])))
        except UserInputError:
            return None
        return summary.energy_kwh, summary.emissions_kg

    return lookup


def _short_note(row) -> str:
    note = row.note
    if note.startswith("energy budget") or note.startswith("carbon budget"):
        return "budget used"
    if note.startswith("pruned by"):
        return "pruned " + note.split(" pruner ", 1)[-1].split(" (")[0]
    return note if len(note) <= 60 else note[:57] + "..."


def _print_report(study_dir: Path, storage: str | None, export: Path | None, pick: int | None, ledger: Path | None,
                  console: Console, as_json: bool = False) -> None:
    from greendiff.tune import (
        best_row, export_toml, load_study, open_storage, pareto_svg, read_study_file, summarize_study, trial_rows,
    )

    folder = read_study_file(study_dir)  # checked before any storage is opened
    study_obj, spec = load_study(open_storage(storage_url(folder, storage)), folder.name)
    rows = trial_rows(study_obj, _ledger_energy(ledger))
    summary = summarize_study(spec, rows)
    metric = spec.metric
    table = Table(title=f"study {folder.name} · {spec.mode} mode", title_justify="left")
    for column in ("trial", "state", metric.upper(), "energy", "steps", "parameters", "note"):
        table.add_column(column, justify="right" if column in ("trial", metric.upper(), "energy", "steps") else "left")
    for r in rows:
        value = f"{r.values[0]:.4g}" if r.values else "—"
        params = " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in r.params.items())
        table.add_row(f"{r.number}{' (base)' if r.base else ''}", r.state.lower(), value, fmt_energy(r.energy_kwh) + ("*" if r.energy_source == "ledger" else ""),
                      "—" if r.steps is None else str(r.steps), params, _short_note(r))
    console.print(table)
    states = ", ".join(f"{n} {s.lower()} ({fmt_energy(v['energy_kwh'])})" for s, v in summary["by_state"].items() for n in [v["trials"]])
    console.print(f"search total: {fmt_energy(summary['energy_kwh'])}, {fmt_mass(summary['emissions_kg'])} CO2e "
                  f"(evaluations {fmt_energy(summary['eval_kwh'])}) · {states}", highlight=False)
    if any(r.energy_source == "ledger" for r in rows):
        console.print("* energy of a trial whose worker died, as the ledger measured it until then", highlight=False)
    if summary["unmeasured_trials"]:
        console.print(f"trials {summary['unmeasured_trials']} have no energy on record here (run on another machine "
                      "that died, or not started): not in the total", style="yellow", highlight=False)
    if spec.mode == "budget" and summary["no_pruning_estimate_kwh"]:
        console.print(f"pruning: a search without it would have used about {fmt_energy(summary['no_pruning_estimate_kwh'])} "
                      f"(each pruned trial run to its budget like the complete ones): {summary['pruning_saving_frac']:.0%} saved",
                      highlight=False)
    if summary["base_trial"] is not None and summary["best_value"] is not None:
        console.print(f"base config (trial {summary['base_trial']}): {metric} {summary['base_value']:.4g}; best "
                      f"{summary['best_value']:.4g} ({summary['best_value'] / summary['base_value'] - 1:+.1%})", highlight=False)
    if spec.mode == "pareto":
        console.print("Pareto mode: Optuna's pruners do not apply to multi-objective studies, so every trial runs to the end.",
                      highlight=False)
        svg = study_dir / "pareto.svg"
        atomic_write_text(svg, pareto_svg(rows, metric))
        console.print(f"Pareto front (lowest {metric} for its energy): trials {summary['pareto_front']} · plot {svg}", highlight=False)
    chosen = best_row(spec, rows) if pick is None else next((r for r in rows if r.number == pick), None)
    if pick is not None and (chosen is None or chosen.state != "COMPLETE"):
        raise UserInputError(f"--trial {pick}: no complete trial with that number in study {folder.name}")
    target = export or study_dir / "best.toml"
    if chosen is None:
        console.print("no complete trial yet: nothing to export", style="yellow")
    else:
        try:
            atomic_write_text(target, export_toml(spec, chosen, folder.name, metric))
        except OSError as exc:
            raise UserInputError(f"cannot write {target}: {exc.strerror}") from None
        console.print(f"{'best' if pick is None else 'chosen'}: trial {chosen.number}, {metric} {chosen.values[0]:.4g} "
                      f"with {fmt_energy(chosen.energy_kwh)} · config {target} (train it: greendiff train --config {target})",
                      highlight=False)
    if as_json:
        typer.echo(json.dumps({"study": folder.name, "mode": spec.mode, "metric": metric, "spec": dataclasses.asdict(spec),
                               "summary": summary, "exported": None if chosen is None else {"trial": chosen.number, "path": str(target)},
                               "trials": [dataclasses.asdict(r) for r in rows]}, indent=2))
