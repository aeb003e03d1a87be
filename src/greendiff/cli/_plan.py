"""``greendiff profile`` and ``greendiff plan regions|window``: forecast a run, then choose where and when."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from greendiff.carbon import (
    Location, Pue, check_supported, parse_positive, resolve_location, resolve_provider, resolve_pue,
)
from greendiff.cli._options import (
    COUNT, COUNT0, ENERGY0_KWH, ENERGY_KWH, PUE, ROWS, YEAR_HOURS, number_option,
    Cloud, Country, Grid, PueOpt, check_output, load_config_data, parse_sets, with_measurement,
)
from greendiff.cli._render import fmt_energy, fmt_mass
from greendiff.errors import UserInputError
from greendiff.workflows import MeasurementOptions, resolve_settings
from greendiff.files import atomic_write_text
from greendiff.numbers import HOURS_IN_A_YEAR
from greendiff.units import G_PER_KG, joules_to_kwh

Opt = typer.Option
plan_app = typer.Typer(help="Choose where and when to run: regions ranked, the lowest-carbon window.", no_args_is_help=True)

EnergyKwh = Annotated[Optional[str], number_option("--energy-kwh", bounds=ENERGY_KWH, keep_text=True, help="IT energy of the job in kWh (or take it from --profile).")]
ProfilePath = Annotated[Optional[Path], Opt("--profile", help="A 'greendiff profile' output: its forecast energy, hours and pause cost.")]
AsJson = Annotated[bool, Opt("--json", help="Print JSON for scripts.")]
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

@with_measurement
def profile_command(
    config_file: Annotated[Optional[Path], Opt("--config", help="Training config (TOML) to profile.")] = None,
    sets: Annotated[list[str], Opt("--set", help="Any config key, e.g. --set run.max_steps=20000 (repeatable).")] = [],
    steps: Annotated[int, number_option("--steps", bounds=COUNT, help="Training steps to profile (the first --warmup are not used for the rate).")] = 50,
    warmup: Annotated[int, number_option("--warmup", bounds=COUNT0, help="Leading steps left out of the rate (allocator, kernel selection).")] = 5,
    output: Annotated[Path, Opt("--output", "-o", help="Where to write the profile (JSON).")] = Path("profile.json"),
    measurement: MeasurementOptions = MeasurementOptions(), as_json: AsJson = False,
) -> None:
    """Profile a training config for a few steps and forecast the full run's energy and time, with a band."""
    from rich.progress import BarColumn, Progress, TextColumn

    from greendiff.plan import run_profile
    from greendiff.train import check_data, resolve_config, to_dict

    config = resolve_config(config_file, parse_sets(sets))
    if steps <= warmup + 3 or warmup < 0:
        raise UserInputError(f"--steps must be more than --warmup + 3 = {warmup + 3}, and --warmup >= 0 (got {steps}, {warmup})")
    check_output(output, (".json",))
    settings = resolve_settings(measurement)
    data = load_config_data(config, config_file)
    check_data(config, data)
    console = Console(stderr=True)
    name = config_file.name if config_file else f"{config.recipe}-{config.model.preset}"
    tracker = settings.tracker(f"profile {name}", "profile", f"greendiff profile --steps {steps}", config=to_dict(config)).start()
    progress = Progress(TextColumn("[bold]profile[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                        console=console)
    task = progress.add_task("profile", total=steps)
    try:
        with progress, tempfile.TemporaryDirectory(prefix="greendiff-profile-") as scratch:
            forecast = run_profile(config, data, tracker, Path(scratch), steps, warmup, name,
                                   on_log=lambda r: progress.update(task, completed=r.get("step", 0)))
    except KeyboardInterrupt:
        if tracker.summary is None:
            tracker.stop("interrupted")
        console.print("profile interrupted; nothing written")
        raise typer.Exit(130) from None
    except BaseException:
        if tracker.summary is None:
            tracker.stop("failed")
        raise
    report = {"forecast": forecast.to_dict(), "ledger_run_id": tracker.run_id, "config": to_dict(config),
              "method": "steps x J/step + evaluations x J/evaluation + grids x J/grid + checkpoints x J/checkpoint; "
                        "band: meter uncertainty, 2 standard errors of the step energy and first/second-half drift, "
                        "in quadrature"}
    try:
        atomic_write_text(output, json.dumps(report, indent=2))
    except OSError as exc:
        raise UserInputError(f"cannot write {output}: {exc.strerror}") from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    f = forecast
    table = Table(title=f"forecast · {name} · {f.steps:,} steps", title_justify="left")
    table.add_column("phase")
    table.add_column("count", justify="right")
    table.add_column("each", justify="right")
    table.add_column("total", justify="right")
    for label, count, each_j in (("training step", f.steps, f.energy_per_step_j), ("evaluation", f.evaluations, f.energy_per_eval_j),
                                 ("sample grid", f.sample_grids, f.energy_per_grid_j), ("checkpoint", f.checkpoints, f.energy_per_checkpoint_j)):
        table.add_row(label, f"{count:,}", fmt_energy(joules_to_kwh(each_j)), fmt_energy(joules_to_kwh(count * each_j)))
    Console().print(table)
    console.print(f"forecast {fmt_energy(f.energy_kwh)} ({fmt_energy(f.energy_low_kwh)}–{fmt_energy(f.energy_high_kwh)}, "
                  f"±{f.uncertainty_frac:.0%}) over {f.hours:.2f} h on {f.device} ({f.method}); "
                  f"{f.profiled_steps} steps profiled, {warmup} warm-up · wrote {output}\n"
                  f"next: greendiff plan window --profile {output} --grid CISO --flex-hours 24   ·   "
                  f"greendiff plan regions --profile {output}", highlight=False)


# -- plan regions -------------------------------------------------------------------------------------------

def _current(location: Location, pue: str | None, energy_kwh: float) -> tuple[float, str, Pue] | None:
    """Emissions (kg) of the job at the user's own location, with the intensity's source, or None if unknown."""
    if not location.is_known:
        return None
    provider = resolve_provider(location)
    first, last = provider.coverage()  # a trace shorter than a year: its own span; anything else: a year
    start = first or datetime(2022, 1, 1, tzinfo=timezone.utc)
    intensity = provider.intensity(start, last or start + timedelta(days=365))
    resolved = resolve_pue(pue, location)
    return energy_kwh * resolved.value * intensity.mean_g_per_kwh() / G_PER_KG, intensity.source, resolved


@plan_app.command("regions")
def plan_regions(
    energy_kwh: EnergyKwh = None, profile: ProfilePath = None,
    provider: Annotated[list[str], Opt("--provider", help="Keep only this provider: gcp, aws, azure, ..., or country (repeatable).")] = [],
    continent: Annotated[Optional[str], Opt("--continent", help="Africa, Asia, Europe, North America, Oceania or South America.")] = None,
    top: Annotated[int, number_option("--top", "-n", bounds=ROWS, help="Rows to show.")] = 15,
    country_pue: Annotated[Optional[str], number_option("--country-pue", bounds=PUE, keep_text=True, help="PUE assumed for a data centre in a country row (default 1.58, industry average).")] = None,
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    as_json: AsJson = False,
) -> None:
    """Rank the bundled cloud regions and countries by the job's emissions (PUE included), with the saving
    against your current location (--country / --cloud / --grid)."""
    from greendiff.plan import INDUSTRY_PUE, rank_regions

    if top <= 0:
        raise UserInputError(f"--top must be a positive number of rows, got {top}")
    energy, _, _ = job_size(energy_kwh, None, profile)
    cpue = INDUSTRY_PUE if country_pue is None else Pue(parse_positive(country_pue, "--country-pue"), "given by the user")
    if cpue.value < 1:
        raise UserInputError(f"--country-pue must be >= 1.0, got {country_pue}")
    options = rank_regions(energy, tuple(p.lower() for p in provider), continent, cpue)
    current = _current(resolve_location(country, cloud, grid), pue, energy)
    if as_json:
        typer.echo(json.dumps({"energy_kwh": energy, "current": None if current is None else
                               {"emissions_kg": current[0], "source": current[1], "pue": current[2].value},
                               "regions": [o.to_dict() for o in options]}, indent=2))
        return
    title = f"{len(options)} places for {fmt_energy(energy)}" + (f" · {continent}" if continent else "")
    table = Table(title=title, title_justify="left")
    for col in ("#", "region", "where", "continent", "gCO2e/kWh", "PUE", "CO2e", "vs you", "CFE"):
        table.add_column(col, justify="right" if col in ("#", "gCO2e/kWh", "PUE", "CO2e", "vs you", "CFE") else "left")
    for rank, o in enumerate(options[:top], start=1):
        versus = f"{o.emissions_kg / current[0] - 1:+.0%}" if current and current[0] > 0 else ""
        table.add_row(str(rank), o.key, o.name, o.continent, f"{o.intensity_g_per_kwh:.0f}", f"{o.pue:.2f}",
                      fmt_mass(o.emissions_kg), versus, "" if o.cfe_share is None else f"{o.cfe_share:.0%}")
    console = Console()
    console.print(table)
    if current is not None:
        console.print(f"you: {fmt_mass(current[0])} CO2e ({current[1]}; PUE {current[2].value:g}, {current[2].source}); "
                      "'vs you' is the change in emissions", highlight=False)
    else:
        console.print("give --country, --cloud or --grid to compare with where you run now", highlight=False)
    console.print("location-based: energy x PUE x the yearly grid intensity; CFE is Google's carbon-free energy share "
                  "(shown, not subtracted). Sources: GCP 2024 region data, ML CO2 Impact, OWID/Ember (see docs/plan.md)",
                  style="dim", highlight=False)


# -- plan window ------------------------------------------------------------------------------------------

@plan_app.command("window")
def plan_window_command(
    energy_kwh: EnergyKwh = None, profile: ProfilePath = None,
    hours: Annotated[Optional[str], number_option("--hours", bounds=YEAR_HOURS, keep_text=True, help="Running time of the job in hours (or from --profile).")] = None,
    grid: Annotated[Optional[str], Opt("--grid", help="Hourly series: a bundled US grid (CISO, PJM, ...) or a timestamp,intensity CSV.")] = None,
    live: Annotated[str, Opt("--live", help="Forecast from a live API instead: uk (Great Britain, 48 h ahead).")] = "none",
    start: Annotated[Optional[str], Opt("--start", help="Earliest start, ISO 8601 (UTC unless a zone is given); default now.")] = None,
    deadline: Annotated[Optional[str], Opt("--deadline", help="Latest end, ISO 8601.")] = None,
    flex_hours: Annotated[Optional[str], number_option("--flex-hours", bounds=YEAR_HOURS, keep_text=True, help="Or: the deadline is this many hours after --start.")] = None,
    interruptible: Annotated[bool, Opt("--interruptible", help="Recommend the best set of hours (the job can pause and resume).")] = False,
    pause_cost_kwh: Annotated[Optional[str], number_option("--pause-cost-kwh", bounds=ENERGY0_KWH, keep_text=True, help="Energy of one pause (checkpoint + restart); default from --profile, else 0.")] = None,
    pue: PueOpt = None, as_json: AsJson = False,
) -> None:
    """The lowest-emission time to run a job before a deadline: start now, best contiguous window, best
    interruptible schedule, and the savings, on an hourly intensity series."""
    from greendiff.plan import Job, plan_window

    energy, duration, profile_pause = job_size(energy_kwh, hours, profile)
    if duration is None:
        raise UserInputError("give the job's running time: --hours H, or --profile FILE")
    pause = profile_pause or 0.0
    if pause_cost_kwh is not None:
        pause = 0.0 if _is_zero(pause_cost_kwh) else parse_positive(pause_cost_kwh, "--pause-cost-kwh")
    t0, t1 = window_range(start, deadline, flex_hours)
    if live not in ("none", "uk"):
        raise UserInputError(f"--live {live}: only 'uk' offers a forecast (Electricity Maps' past-range has none); "
                             "use --live uk, --grid NAME or --grid FILE.csv")
    if (grid is None) == (live == "none"):
        raise UserInputError("give exactly one hourly series: --grid NAME|FILE.csv or --live uk")
    location = Location(grid=grid) if grid else Location(country="GBR")
    provider = resolve_provider(location, live)
    pue_value = resolve_pue(pue, location).value
    if duration > (t1 - t0).total_seconds() / 3600 + 1e-9:
        raise UserInputError(f"the job needs {duration:g} h but --start to --deadline is "
                             f"{(t1 - t0).total_seconds() / 3600:g} h; move the deadline or shorten the job")
    intensity = provider.intensity(t0, t1)
    if intensity.kind == "static":
        raise UserInputError(f"no hourly series for the window ({'; '.join(intensity.notes) or intensity.source})")
    plan = plan_window(list(intensity.segments), Job(energy, duration, pause), pue_value, intensity.source, intensity.notes)
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
                                 f"(at most {MAX_WINDOW / timedelta(hours=1):g} h)")
        t1 = check_supported(t0 + timedelta(hours=flex_h), "the deadline (--start + --flex-hours)")
    if t1 <= t0:
        raise UserInputError(f"--deadline {t1.isoformat()} is not after --start {t0.isoformat()}")
    if t1 - t0 > MAX_WINDOW:
        raise UserInputError(f"the window {t0.isoformat()} to {t1.isoformat()} is over a year; plan within a year")
    return t0, t1


def render_window(plan, interruptible: bool, console: Console) -> None:
    table = Table(title=f"{fmt_energy(plan.job.energy_kwh)} over {plan.job.duration_h:g} h, {plan.now.start:%Y} · {plan.source}",
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
    console.print(f"PUE {plan.pue:g}; pause cost {fmt_energy(plan.job.pause_cost_kwh)} per pause"
                  + "".join(f"\nnote: {n}" for n in plan.notes), style="dim", highlight=False)

