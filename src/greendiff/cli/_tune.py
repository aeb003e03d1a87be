"""``greendiff tune``: energy-aware hyperparameter search over the trainer's config, on Optuna. The study
and its trials are :mod:`greendiff.workflows` (new_study, continue_study, work_on_study); here: the flags,
worker processes with a bar, and the report.

A study lives in a folder (``runs/tune/NAME``: ``study.toml``, the space, the trials' run
directories, ``best.toml``) and in its Optuna storage, which also holds its spec, so that workers
started later or elsewhere continue the same study. Every trial is an ordinary trainer run and a
ledger run (kind ``tune-trial``) linked to the study.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from greendiff.cli._options import (
    REPORTS, ROWS, SEED, STARTUP_TRIALS, TRIAL_BUDGET_KWH, TRIAL_NUMBER, WORKER_SLOT, WORKERS, name_option,
    number_option, parse_sets, switch, with_measurement,
)
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, fmt_mass, plain
from greendiff.display import energy_text, plain_number
from greendiff.errors import UserInputError
from greendiff.workflows import (
    ENV_STORAGE, MeasurementOptions, StudyJob, continue_study, job_default, new_study, resolve_settings, work_on_study,
)
from greendiff.workflows._tune import storage_url
from greendiff.workflows._tune_report import StudyReport, check_continue_flags, run_study_workers, study_report

Opt = typer.Option


# -- the command -----------------------------------------------------------------------------------

SEARCH, CONTINUE, REPORT = "Budget and search", "Workers, storage and resuming", "Report"  #: --help panels


@with_measurement
def tune_command(
    space: Annotated[Optional[Path], Opt("--space", metavar="FILE", help="TOML file with a \\[space] table: trainer keys and their ranges.")] = None,
    trials: Annotated[Optional[int], number_option("--trials", bounds=ROWS, help="Finished (complete or pruned) trials the study should reach.")] = None,
    config_file: Annotated[Optional[Path], Opt("--config", metavar="FILE", help="Trainer config TOML every trial starts from.")] = None,
    sets: Annotated[list[str], Opt("--set", metavar="KEY=VAL", help="Trainer config key for every trial, e.g. --set model.preset=nano (repeatable).")] = [],
    name: Annotated[Optional[str], name_option("--name", help="Study name (default: tune-<time>).")] = None,
    output_dir: Annotated[Path, Opt("--output-dir", metavar="DIR", help="Parent of the study folder.")] = job_default(StudyJob, "output_dir"),
    mode: Annotated[str, Opt("--mode", metavar="MODE", rich_help_panel=SEARCH,
                             help="budget: best quality within --trial-budget-kwh per trial (pruned early); "
                                  "pareto: quality vs training kWh, no pruning.")] = job_default(StudyJob, "mode"),
    trial_budget_kwh: Annotated[Optional[float], number_option("--trial-budget-kwh", bounds=TRIAL_BUDGET_KWH, rich_help_panel=SEARCH, help="Energy each trial may use, evaluations included (budget mode; a cap in pareto mode): it stops before its next step would pass it; an overrun is reported.")] = None,
    reports: Annotated[int, number_option("--reports", bounds=REPORTS, rich_help_panel=SEARCH, help="Evaluations per trial, at equal energy intervals, that the pruner acts on.")] = job_default(StudyJob, "reports"),
    pruner: Annotated[Optional[str], Opt("--pruner", metavar="NAME", rich_help_panel=SEARCH, help="hyperband (default), median, sha or none; pareto mode: none only.")] = None,
    seed: Annotated[int, number_option("--seed", bounds=SEED, rich_help_panel=SEARCH, help="Seed of the TPE sampler.")] = job_default(StudyJob, "seed"),
    startup_trials: Annotated[int, number_option("--startup-trials", bounds=STARTUP_TRIALS, rich_help_panel=SEARCH, help="Random trials before TPE (0: a third of --trials, 3 to 10).")] = job_default(StudyJob, "startup_trials"),
    no_base_trial: Annotated[bool, Opt("--no-base-trial", metavar="", rich_help_panel=SEARCH, help="Leave out trial 0, the base config's own values (those inside the space).")] = False,
    base_trial: Annotated[bool, Opt("--base-trial", hidden=True, help="Trial 0 is the base config (the default).")] = False,
    workers: Annotated[int, number_option("--workers", bounds=WORKERS, rich_help_panel=CONTINUE, help="Worker processes on this machine (journal storage).")] = job_default(StudyJob, "workers"),
    storage: Annotated[Optional[str], Opt("--storage", metavar="URL", envvar=ENV_STORAGE, show_envvar=False, rich_help_panel=CONTINUE,
                                          help=f"Optuna storage: sqlite:///F.db, journal:F.journal, postgresql://... (env {ENV_STORAGE}; default: a file in the study folder).")] = None,
    resume: Annotated[Optional[Path], Opt("--resume", metavar="FOLDER", rich_help_panel=CONTINUE, help="Study folder to continue (dead trials are marked failed and retried).")] = None,
    join: Annotated[bool, Opt("--join", metavar="", rich_help_panel=CONTINUE, help="Work on the study --study in --storage (e.g. from another machine).")] = False,
    study: Annotated[Optional[str], name_option("--study", rich_help_panel=CONTINUE, help="Study name, with --join.")] = None,
    report: Annotated[Optional[Path], Opt("--report", metavar="FOLDER", rich_help_panel=REPORT, help="Study folder: print its trials, energy, CO2e and best config.")] = None,
    export: Annotated[Optional[Path], Opt("--export", metavar="FILE", rich_help_panel=REPORT, help="With --report: where to write the best config (default: FOLDER/best.toml).")] = None,
    pick: Annotated[Optional[int], number_option("--trial", bounds=TRIAL_NUMBER, rich_help_panel=REPORT, help="With --report: export this trial instead of the best.")] = None,
    as_json: Annotated[bool, Opt("--json", metavar="", rich_help_panel=REPORT, help="With --report: also print the study, its summary and every trial as JSON on stdout.")] = False,
    worker_slot: Annotated[int, number_option("--worker", bounds=WORKER_SLOT, hidden=True, help="Set by --workers: this worker's slot (its sampler seed).")] = 0,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Search the trainer's config for the best quality per kWh, every trial measured and in the ledger."""
    as_worker = worker_slot > 0
    switch("--base-trial", base_trial, no_base_trial)  # --help shows --no-base-trial; --base-trial, the default, stays
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # greendiff prints its own line per trial
    console = Console(stderr=True)
    progress = RichProgress(console)
    if report is not None:
        _render_report(study_report(report, storage, export, pick, measurement.ledger), console, as_json, pick)
        return
    resumed = None
    if resume is not None:  # the folder's study.toml checked before anything is opened or created (the ledger too)
        from greendiff.tune import read_study_file

        folder = read_study_file(resume)
        resumed = folder, storage_url(folder, storage)
    settings = resolve_settings(measurement)
    if resume is not None or join:
        check_continue_flags([("--space", space), ("--config", config_file), ("--set", sets or None),
                              ("--trial-budget-kwh", trial_budget_kwh), ("--pruner", pruner)])
        study_ = continue_study(resumed, join, study, storage, output_dir, trials, workers, worker_slot, progress)
    else:
        if space is None or trials is None:
            raise UserInputError("a new study needs --space FILE and --trials N (or --resume FOLDER / --report FOLDER)")
        study_ = new_study(StudyJob(space, trials, config_file, parse_sets(sets), mode, trial_budget_kwh, reports, pruner,
                                    seed, startup_trials, not no_base_trial, workers, storage, name, output_dir))
        spec = study_.spec
        console.print(f"study {study_.study.study_name}: {spec.trials} trials, {spec.mode} mode"
                      + (f", {energy_text(spec.trial_budget_kwh)} per trial, pruner {spec.pruner}" if spec.mode == "budget" else "")
                      + f" · folder {study_.folder}", highlight=False)
    if workers > 1 and not as_worker:
        _run_workers(study_, workers, measurement.argv(), console, progress)
    else:
        work_on_study(study_, settings, progress, on_trial_end=_TrialLine(
            study_.spec.metric, console, study_.spec.trial_budget_kwh))
    if not as_worker:
        _render_report(study_report(study_.folder, study_.url, None, None, measurement.ledger), console)


class _TrialLine:
    """One line per finished trial: its state, value, energy and why it stopped (against the trial budget: the
    share used, or by how much it passed it)."""

    def __init__(self, metric: str, console: Console, budget_kwh: float = 0.0) -> None:
        self.metric, self.console, self.budget_kwh = metric, console, budget_kwh

    def __call__(self, trial) -> None:
        from greendiff.tune import TrialRecord, metric_text, trial_note  # greendiff.tune imports torch: not for --help

        value = f"{self.metric} {metric_text(trial.values[0])}" if trial.values else trial.user_attrs.get("fail_reason", "")
        record = TrialRecord.of(trial)
        note = trial_note(record.stop_reason, record.energy_kwh, self.budget_kwh, record.pruned_after) if record else ""
        self.console.print(f"trial {trial.number}: {trial.state.name.lower()} · {value} · "
                           f"{fmt_energy(record.energy_kwh if record else 0.0)}" + (f" · {note}" if note else ""),
                           highlight=False)


def _run_workers(study_, workers: int, measure_argv, console: Console, progress: RichProgress) -> None:
    """The study's worker processes with a bar following its finished trials; a red line per failed worker."""
    bar = Progress(TextColumn("[bold]tune[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
    with bar:
        task = bar.add_task("tune", total=study_.spec.trials, info=f"{workers} workers")
        failed = run_study_workers(study_, workers, measure_argv, progress, watch=lambda s: bar.update(
            task, completed=s.finished, info=f"{s.running} running · {s.pruned} pruned · {s.failed} failed"))
    for worker in failed:
        console.print(plain(f"worker {worker.worker} exited with code {worker.code}: {worker.last_line}"), style="red",
                      highlight=False)


# -- report ------------------------------------------------------------------------------------------

def _render_report(report: StudyReport, console: Console, as_json: bool = False, pick: int | None = None) -> None:
    from greendiff.tune import metric_text, trial_note

    spec, rows, summary, metric = report.spec, report.rows, report.summary, report.metric
    table = Table(title=f"study {report.name} · {spec.mode} mode", title_justify="left")
    for column in ("trial", "state", metric.upper(), "energy", "steps", "parameters", "note"):
        table.add_column(column, justify="right" if column in ("trial", metric.upper(), "energy", "steps") else "left")
    for r in rows:
        value = metric_text(r.values[0]) if r.values else "—"
        params = " ".join(f"{k.split('.')[-1]}={plain_number(v)}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in r.params.items())
        table.add_row(f"{r.number}{' (base)' if r.base else ''}", r.state.lower(), value, fmt_energy(r.energy_kwh) + ("*" if r.energy_source == "ledger" else ""),
                      "—" if r.steps is None else str(r.steps), params,
                      trial_note(r.note, r.energy_kwh, spec.trial_budget_kwh, r.pruned_after))
    console.print(table)
    states = ", ".join(f"{n} {s.lower()} ({fmt_energy(v.energy_kwh)})" for s, v in summary.by_state.items() for n in [v.trials])
    console.print(f"search total: {fmt_energy(summary.energy_kwh)}, {fmt_mass(summary.emissions_kg)} CO2e "
                  f"(evaluations {fmt_energy(summary.eval_kwh)}) · {states}", highlight=False)
    if any(r.energy_source == "ledger" for r in rows):
        console.print("* energy of a trial whose worker died, as the ledger measured it until then", highlight=False)
    if summary.unmeasured_trials:
        console.print(f"trials {summary.unmeasured_trials} have no energy on record here (run on another machine "
                      "that died, or not started): not in the total", style="yellow", highlight=False)
    if spec.mode == "budget" and summary.no_pruning_estimate_kwh:
        console.print(f"pruning: a search without it would have used about {fmt_energy(summary.no_pruning_estimate_kwh)} "
                      f"(each pruned trial run to its budget like the complete ones): {summary.pruning_saving_frac:.0%} saved",
                      highlight=False)
    if summary.base_trial is not None and summary.best_value is not None:
        console.print(f"base config (trial {summary.base_trial}): {metric} {metric_text(summary.base_value)}; best "
                      f"{metric_text(summary.best_value)} ({summary.best_value / summary.base_value - 1:+.1%})", highlight=False)
    if spec.mode == "pareto":
        console.print("Pareto mode: Optuna's pruners do not apply to multi-objective studies, so every trial runs to the end.",
                      highlight=False)
        console.print(f"Pareto front (lowest {metric} for its energy): trials {summary.pareto_front} · plot {report.pareto_svg}",
                      highlight=False)
    chosen, target = report.chosen, report.export
    if chosen is None:
        console.print("no complete trial yet: nothing to export", style="yellow")
    else:
        console.print(f"{'best' if pick is None else 'chosen'}: trial {chosen.number}, {metric} {metric_text(chosen.values[0])} "
                      f"with {fmt_energy(chosen.energy_kwh)} · config {target} (train it: greendiff "
                      f"{'finetune' if metric == 'val_loss' else 'train'} --config {target})",
                      highlight=False)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
