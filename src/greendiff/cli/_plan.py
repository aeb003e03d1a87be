"""``greendiff profile`` and ``greendiff plan regions|window``: forecast a run, then choose where and when."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from greendiff.carbon import check_supported, parse_positive
from greendiff.cli._options import (
    COUNT, COUNT0, ENERGY0_KWH, ENERGY_KWH, PUE, ROWS, YEAR_HOURS, number_option,
    Cloud, Country, Grid, PueOpt, parse_sets, renamed, with_default, with_measurement,
)
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, fmt_hours, fmt_mass, plain
from greendiff.display import fixed_point, plain_number
from greendiff.errors import UserInputError
from greendiff.numbers import HOURS_IN_A_YEAR
from greendiff.plan import WARMUP_COST
from greendiff.workflows import (
    Interrupted, MeasurementOptions, ProfileJob, RegionsJob, WindowJob, job_default, run_plan_regions, run_plan_window,
    run_profile_job,
)
from greendiff.units import G_PER_KG

Opt = typer.Option
plan_app = typer.Typer(help="Choose where and when to run: regions ranked, the lowest-carbon window.", no_args_is_help=True)

EnergyKwh = Annotated[Optional[str], number_option("--energy-kwh", bounds=ENERGY_KWH, keep_text=True, help="IT energy of the job in kWh (or take it from --profile).")]
ProfilePath = Annotated[Optional[Path], Opt("--profile", metavar="FILE", help="A 'greendiff profile' output: its forecast energy, hours and pause cost.")]
AsJson = Annotated[bool, Opt("--json", metavar="", help="Print JSON for scripts.")]
MAX_WINDOW = timedelta(hours=HOURS_IN_A_YEAR)  # a plan covers at most a year (a leap year's 8,784 h)


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0.0
    except ValueError:
        return False


def job_size(energy_kwh: str | None, hours: str | None, profile: Path | None) -> tuple[float, float | None, float | None]:
    """``(energy_kwh, hours, pause_cost_kwh)`` from flags, a profile filling what the flags leave."""
    from greendiff.plan import Forecast

    forecast = Forecast.from_file(profile) if profile is not None else None
    if energy_kwh is None and forecast is None:
        raise UserInputError("give the job's energy: --energy-kwh E, or --profile FILE from 'greendiff profile'")
    energy = parse_positive(energy_kwh, "--energy-kwh") if energy_kwh is not None else forecast.energy_kwh
    duration = parse_positive(hours, "--hours") if hours is not None else (forecast.hours if forecast else None)
    return energy, duration, forecast.pause_cost_kwh if forecast else None


# -- profile ----------------------------------------------------------------------------------------------

TrainSteps = Annotated[Optional[int], number_option("--train-steps", bounds=COUNT, help=with_default("Training steps to profile.", job_default(ProfileJob, "steps")))]
OldSteps = Annotated[Optional[int], number_option("--steps", bounds=COUNT, hidden=True, help="Old name of --train-steps.")]
Unmetered = Annotated[Optional[int], number_option("--unmetered-steps", bounds=COUNT0, help=with_default(f"First steps left out of the rate: warm-up ({WARMUP_COST}).", job_default(ProfileJob, "warmup")))]
OldWarmup = Annotated[Optional[int], number_option("--warmup", bounds=COUNT0, hidden=True, help="Old name of --unmetered-steps.")]


@with_measurement
def profile_command(
    config_file: Annotated[Optional[Path], Opt("--config", metavar="FILE", help="Training config (TOML) to profile (default: the green recipe's default job).")] = None,
    sets: Annotated[list[str], Opt("--set", metavar="KEY=VAL", help="Any config key, e.g. --set run.max_steps=20000 (repeatable).")] = [],
    train_steps: TrainSteps = None, steps: OldSteps = None, unmetered_steps: Unmetered = None, warmup: OldWarmup = None,
    output: Annotated[Path, Opt("--output", "-o", metavar="FILE", help="Where to write the profile (JSON; a file there is replaced).")] = job_default(ProfileJob, "output"),
    measurement: MeasurementOptions = MeasurementOptions(), as_json: AsJson = False,
) -> None:
    """Profile a training config for a few steps and forecast the full run's energy and time, with a band."""
    console = Console(stderr=True)
    job = ProfileJob(config_file=config_file, overrides=parse_sets(sets),
                     steps=renamed(("--train-steps", train_steps), ("--steps", steps), job_default(ProfileJob, "steps")),
                     warmup=renamed(("--unmetered-steps", unmetered_steps), ("--warmup", warmup), job_default(ProfileJob, "warmup")),
                     output=output,
                     measurement=measurement)
    try:
        outcome = run_profile_job(job, RichProgress(console))
    except Interrupted:
        console.print("profile interrupted; nothing written")
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(outcome.to_dict(), indent=2))
        return
    render_profile(outcome, Console(), console)


def warmup_line(unmetered: int, measured: int, per: str) -> str:
    """Whether figures per ``per`` (step, sample) include the first steps' warm-up, in one line."""
    if unmetered == 0:
        return f"per {per}: all {measured} steps, warm-up included ({WARMUP_COST}); --unmetered-steps N leaves the first N out"
    return f"per {per}: {measured} measured steps after {unmetered} unmetered (warm-up left out; {WARMUP_COST})"


def render_profile(outcome, out: Console, err: Console) -> None:
    """The forecast by phase (stdout), then its total, band, warm-up and the file written (stderr)."""
    f, name = outcome.forecast, outcome.name
    table = Table(title=f"forecast · {name} · {f.steps:,} steps", title_justify="left")
    table.add_column("phase")
    table.add_column("count", justify="right")
    table.add_column("each", justify="right")
    table.add_column("total", justify="right")
    for label, count, each_kwh in (("training step", f.steps, f.energy_per_step_kwh),
                                   ("evaluation", f.evaluations, f.energy_per_eval_kwh),
                                   ("sample grid", f.sample_grids, f.energy_per_grid_kwh),
                                   ("checkpoint", f.checkpoints, f.energy_per_checkpoint_kwh)):
        table.add_row(label, f"{count:,}", fmt_energy(each_kwh), fmt_energy(count * each_kwh))
    out.print(table)
    replaced = " (replaced the file that was there)" if outcome.replaced else ""
    err.print(f"forecast {fmt_energy(f.energy_kwh)} ({fmt_energy(f.energy_low_kwh)}–{fmt_energy(f.energy_high_kwh)}, "
              f"±{f.uncertainty_frac:.0%}) over {fmt_hours(f.hours)} on {f.device} ({f.method})\n"
              f"{warmup_line(f.unmetered_steps, f.profiled_steps - f.unmetered_steps, 'step')}\n"
              f"wrote {outcome.output}{replaced}\n"
              f"next: greendiff plan window --profile {outcome.output} --grid CISO --flex-hours 24\n"
              f"      greendiff plan regions --profile {outcome.output}", highlight=False)


# -- plan regions -------------------------------------------------------------------------------------------

#: Below this width the regions table keeps its essential columns (place, intensity, data year, PUE, CO2e, vs you).
WIDE_REGIONS = 130
#: Rows ``plan regions`` shows unless told (``-n/--limit``): a display choice, so the CLI's own.
REGION_ROWS = 15


@plan_app.command("regions")
def plan_regions(
    energy_kwh: EnergyKwh = None, profile: ProfilePath = None,
    provider: Annotated[list[str], Opt("--provider", metavar="PROVIDER", help="Keep only this provider: gcp, aws, azure, ..., or country (repeatable).")] = [],
    continent: Annotated[Optional[str], Opt("--continent", metavar="NAME", help="Africa, Asia, Europe, North America, Oceania or South America.")] = None,
    limit: Annotated[Optional[int], number_option("--limit", "-n", bounds=ROWS, help=with_default("Rows to show.", REGION_ROWS))] = None,
    top: Annotated[Optional[int], number_option("--top", bounds=ROWS, hidden=True, help="Old name of --limit.")] = None,
    country: Country = None, cloud: Cloud = None, grid: Grid = None,
    pue: Annotated[Optional[str], number_option("--pue", bounds=PUE, keep_text=True, help="Your PUE, also used for every country row (default: your provider's, else 1.0).")] = None,
    country_pue: Annotated[Optional[str], number_option("--country-pue", bounds=PUE, keep_text=True, hidden=True, help="Old name of --pue.")] = None,
    as_json: AsJson = False,
) -> None:
    """Rank cloud regions and countries by the job's location-based emissions, each row's data year shown, against
    where you run now (--country, --cloud or --grid)."""
    rows = renamed(("--limit", limit), ("--top", top), REGION_ROWS)
    energy, _, _ = job_size(energy_kwh, None, profile)
    outcome = run_plan_regions(RegionsJob(energy, tuple(provider), continent, country, cloud, grid,
                                          renamed(("--pue", pue), ("--country-pue", country_pue), None)))
    if as_json:
        typer.echo(json.dumps(outcome.to_dict(), indent=2))
        return
    render_regions(outcome, rows, continent, Console())


def render_regions(outcome, rows: int, continent: str | None, console: Console) -> None:
    """The first ``rows`` places; under :data:`WIDE_REGIONS` columns only the essential ones (nothing cut)."""
    wide = console.width >= WIDE_REGIONS
    options, current = outcome.regions, outcome.current
    title = f"{len(options)} places for {fmt_energy(outcome.energy_kwh)}" + (f" · {continent}" if continent else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    columns = ["#", "region", *(["where", "continent"] if wide else []), "g/kWh", "data", "PUE", "CO2e", "vs you",
               *(["CFE"] if wide else [])]
    for col in columns:
        right = col not in ("region", "where", "continent", "data")
        table.add_column(col, justify="right" if right else "left", no_wrap=col not in ("where", "continent"),
                         overflow="fold")
    for rank, o in enumerate(options[:rows], start=1):
        versus = outcome.versus(o)
        cells = [str(rank), o.key, *([o.name, o.continent] if wide else []), f"{o.intensity_g_per_kwh:.0f}", o.data,
                 f"{o.pue:.2f}", fmt_mass(o.emissions_kg), "" if versus is None else f"{versus:+.0%}",
                 *(["" if o.cfe_share is None else f"{o.cfe_share:.0%}"] if wide else [])]
        table.add_row(*map(plain, cells))
    console.print(table)
    if current is not None:
        console.print(plain(f"you: {fmt_mass(current.emissions_kg)} CO2e at {current.intensity_g_per_kwh:.0f} g/kWh "
                            f"({current.source}) and PUE {fixed_point(current.pue.value)} ({current.pue.source}); 'vs you' is the "
                            "change in emissions"), highlight=False)
    else:
        console.print("give --country, --cloud or --grid to compare with where you run now", highlight=False)
    console.print(plain(f"location-based: energy x PUE x the yearly intensity of the grid each place is on. 'data': "
                        f"whose figure and its year: GCP, Google's 2024 region data; grid PJM (BPAT, ...), the 2022 "
                        f"EIA-930 mean of the US grid a region is in; else the country's Our World in Data / Ember "
                        f"row. Country rows are at your PUE ({fixed_point(outcome.pue.value)}). --json has every row's source; "
                        f"see docs/plan.md")
                  + (plain(f"\nleft out, no citable figure: {', '.join(sorted(outcome.dropped))}") if outcome.dropped else ""),
                  style="dim", highlight=False)


# -- plan window ------------------------------------------------------------------------------------------

@plan_app.command("window")
def plan_window_command(
    energy_kwh: EnergyKwh = None, profile: ProfilePath = None,
    hours: Annotated[Optional[str], number_option("--hours", bounds=YEAR_HOURS, keep_text=True, help="Running time of the job in hours (or from --profile).")] = None,
    grid: Annotated[Optional[str], Opt("--grid", metavar="GRID", help="Hourly series: a bundled US grid (CISO, PJM, ...) or a timestamp,intensity CSV.")] = None,
    live: Annotated[str, Opt("--live", metavar="API", help="Forecast from a live API instead: uk (Great Britain, 48 h ahead).")] = "none",
    start: Annotated[Optional[str], Opt("--start", metavar="TIME", help="Earliest start, ISO 8601 (UTC unless a zone is given); default now.")] = None,
    deadline: Annotated[Optional[str], Opt("--deadline", metavar="TIME", help="Latest end, ISO 8601.")] = None,
    flex_hours: Annotated[Optional[str], number_option("--flex-hours", bounds=YEAR_HOURS, keep_text=True, help="Or: the deadline is this many hours after --start.")] = None,
    interruptible: Annotated[bool, Opt("--interruptible", metavar="", help="Recommend the best set of hours (the job can pause and resume).")] = False,
    pause_cost_kwh: Annotated[Optional[str], number_option("--pause-cost-kwh", bounds=ENERGY0_KWH, keep_text=True, help="Energy of one pause (checkpoint + restart); default from --profile, else 0.")] = None,
    pue: PueOpt = None, as_json: AsJson = False,
) -> None:
    """The lowest-emission time to run a job before a deadline: start now, best contiguous window, best
    interruptible schedule, and the savings, on an hourly intensity series."""
    energy, duration, profile_pause = job_size(energy_kwh, hours, profile)
    if duration is None:
        raise UserInputError("give the job's running time: --hours H, or --profile FILE")
    pause = profile_pause or 0.0
    if pause_cost_kwh is not None:
        pause = 0.0 if _is_zero(pause_cost_kwh) else parse_positive(pause_cost_kwh, "--pause-cost-kwh")
    t0, t1 = window_range(start, deadline, flex_hours)
    plan = run_plan_window(WindowJob(energy, duration, t0, t1, grid, live, pause, pue))
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
        return
    render_window(plan, interruptible, Console())


def window_range(start: str | None, deadline: str | None, flex_hours: str | None) -> tuple[datetime, datetime]:
    """``(start, deadline)`` of a plan from the flags: a start (default now), then a deadline or a number of
    hours after it. One line for each mistake: a time outside 1900-2199, a window of over a year or none."""
    from greendiff.train import parse_utc

    t0 = parse_utc(start, "--start") if start else datetime.now(timezone.utc)
    if (deadline is None) == (flex_hours is None):
        raise UserInputError("give exactly one of --deadline ISO or --flex-hours H")
    if deadline is not None:
        t1 = parse_utc(deadline, "--deadline")
    else:
        flex_h = parse_positive(flex_hours, "--flex-hours")
        if flex_h > MAX_WINDOW / timedelta(hours=1):  # before any date arithmetic: 1e9 h is past year 9999
            raise UserInputError(f"--flex-hours {flex_hours} is over a year; plan within a year "
                                 f"(at most {plain_number(MAX_WINDOW / timedelta(hours=1))} h)")
        t1 = check_supported(t0 + timedelta(hours=flex_h), "the deadline (--start + --flex-hours)")
    if t1 <= t0:
        raise UserInputError(f"--deadline {t1.isoformat()} is not after --start {t0.isoformat()}")
    if t1 - t0 > MAX_WINDOW:
        raise UserInputError(f"the window {t0.isoformat()} to {t1.isoformat()} is over a year; plan within a year")
    return t0, t1


def render_window(plan, interruptible: bool, console: Console) -> None:
    table = Table(title=f"{fmt_energy(plan.job.energy_kwh)} over {fmt_hours(plan.job.duration_h)}, "
                        f"{plan.now.start:%Y} · {plan.source}",
                  title_justify="left")
    for col in ("schedule", "start (UTC)", "end (UTC)", "runs", "CO2e", "saving", ""):
        table.add_column(col, justify="right" if col in ("runs", "CO2e", "saving") else "left", no_wrap=True)
    chosen = plan.interruptible if interruptible else plan.contiguous
    for s in (plan.now, plan.contiguous, plan.interruptible):
        table.add_row(s.kind, f"{s.start:%m-%d %H:%M}", f"{s.end:%m-%d %H:%M}", str(len(s.intervals)),
                      fmt_mass(s.emissions_g / G_PER_KG), "—" if s is plan.now else f"{plan.saving_frac(s):.1%}",
                      "◀" if s is chosen else "")
    console.print(table)
    if interruptible and len(plan.interruptible.intervals) > 1:
        console.print("run during: " + ", ".join(f"{a:%m-%d %H:%M}–{b:%H:%M}" for a, b in plan.interruptible.intervals),
                      highlight=False)
    elif not interruptible and plan.interruptible.emissions_g < plan.contiguous.emissions_g:
        console.print(f"with --interruptible (pause and resume) the job would save {plan.saving_frac(plan.interruptible):.1%}",
                      highlight=False)
    console.print(f"PUE {fixed_point(plan.pue)}; pause cost {fmt_energy(plan.job.pause_cost_kwh)} per pause"
                  + "".join(f"\nnote: {n}" for n in plan.notes), style="dim", highlight=False)

