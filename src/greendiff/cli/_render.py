"""Rich tables for run summaries, readable at 80 columns: long names fold inside their column, figures never
break, and every figure is printed by the report's one formatter (fixed-point, scaled, unit printed).

The summary's texts state facts (they travel into statements and exports); what to type about them is the
CLI's to say, here, when it renders them (:func:`pue_line`, :func:`note_line`)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from greendiff.carbon import INDUSTRY_PUE, Pue, is_default_pue
from greendiff.display import ENERGY_UNITS, MASS_UNITS, band_text, duration_text, energy_text, mass_text
from greendiff.tracking import IntensityUsed, PueUsed, RunSummary
from greendiff.units import G_PER_KG, joules_to_kwh


def plain(value: object) -> Text:
    """Text shown as is: no Rich markup (a run named ``[red]x`` or ``[/]``), control characters escaped
    (a name from another tool must not move the cursor or recolour the terminal)."""
    text = str(value)
    return Text("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))


#: Energy given in kWh, a mass (CO2e) given in kg and a duration given in seconds, as people read them: ``"350 Wh"``,
#: ``"28.0 g"``, ``"36.0 s"`` / ``"12.0 min"`` / ``"11.5 h"`` (the report's formatters: one per quantity).
fmt_energy, fmt_mass, fmt_duration = energy_text, mass_text, duration_text
_S_PER_H = 3600.0


def fmt_hours(hours: float) -> str:
    """A duration given in hours (a plan's job, the carbon-aware summary's waits), scaled as
    :func:`fmt_duration` prints it: ``fmt_hours(0.0854749) == "5.13 min"``."""
    return duration_text(hours * _S_PER_H)


def table(*columns: str, title: object = None, figures: tuple[str, ...] = (), words: tuple[str, ...] = ()) -> Table:
    """A compact table (no side borders) whose text columns fold (a long name wraps inside its column, never
    cut); ``figures`` stay on one line, right-aligned, and ``words`` (a status) on one line."""
    out = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                collapse_padding=True)
    for col in columns:
        if col in figures:
            out.add_column(col, justify="right", no_wrap=True)
        else:
            out.add_column(col, overflow="fold", no_wrap=col in words)
    return out


#: What a user types to price a run somewhere: said beside the world-average note.
LOCATION_HINT = "Pass --country ISO3, --cloud PROVIDER:REGION or --grid NAME."
_WORLD_AVERAGE_NOTE = "LOCATION UNKNOWN"


def pue_line(pue: PueUsed) -> str:
    """``PUE: 1.00, <source>``; the default PUE (nobody gave one) with how to give one and the average data
    centre's figure (:data:`greendiff.carbon.INDUSTRY_PUE`)."""
    line = f"PUE: {pue.value:.2f}, {pue.source}"
    if is_default_pue(Pue(pue.value, pue.source)):
        line += (f"; pass --pue for a data centre (industry average {INDUSTRY_PUE.value:.2f}, "
                 "Uptime Institute 2023)")
    return line


def note_line(note: str) -> str:
    """A summary's note as printed: the world-average note with how to give a location (unless an older
    run's note says it already)."""
    if note.startswith(_WORLD_AVERAGE_NOTE) and "--country" not in note:
        return f"{note} {LOCATION_HINT}"
    return note


def intensity_line(intensity: IntensityUsed) -> str:
    """``intensity: 56 gCO2e/kWh, <source> (yearly)``: the figure, its source and its resolution."""
    what = intensity.resolution or intensity.kind
    if intensity.kind == "live":
        what = f"live, {intensity.resolution}" if intensity.resolution else "live"
    return f"intensity: {intensity.mean_g_per_kwh:.0f} gCO2e/kWh, {intensity.source} ({what})"


#: The device table's columns, and those dropped, in order, while it is wider than the console (the band, then the
#: device's long name: its key and method stay, whole).
DEVICE_COLUMNS = ("device", "name", "method", "energy", "±", "CO2e")
DROPPED_WHEN_NARROW = ("±", "name")
_FIGURES = ("energy", "±", "CO2e", "windows", "time")
_GAP = 2  # columns between two of :func:`table`'s columns (padding and rule)


def device_table(summary: RunSummary, console: Console) -> Table:
    """The devices of ``summary`` and their total, fitted to ``console``'s width: device keys and method ids never
    break (``estimate:ccf-vcpu-cputime`` is one word), names wrap between words, and the band column and then the
    name column are left out where the whole table would not fit otherwise."""
    rows = [{"device": plain(d.key), "name": plain(d.name), "method": plain(d.method),
             "energy": fmt_energy(d.energy_kwh), "±": f"{d.uncertainty_frac:.0%}",
             "CO2e": fmt_mass(d.emissions_g / G_PER_KG)} for d in summary.devices]
    total = {"device": "total", "energy": fmt_energy(summary.energy_kwh), "CO2e": fmt_mass(summary.emissions_kg)}
    title = plain(f"run {summary.run_id} · {summary.name} · {summary.status}")
    shown = list(DEVICE_COLUMNS)
    for dropped in (None, *DROPPED_WHEN_NARROW):
        if dropped is not None:
            shown.remove(dropped)
        out = table(*shown, title=title, figures=_FIGURES, words=("device", "method"))
        for row in rows:
            out.add_row(*(row[c] for c in shown))
        out.add_row(*(total.get(c, "") for c in shown), style="bold")
        if least_width(out, console) <= console.width:
            break
    return out


def least_width(out: Table, console: Console) -> int:
    """The columns ``out`` (made by :func:`table`) needs with nothing cut: its one-line columns as wide as their
    widest cell, the others as wide as their longest word."""
    need = 0
    for column in out.columns:
        sizes = [Measurement.get(console, console.options, cell) for cell in (column.header, *column.cells)]
        need += max(m.maximum if column.no_wrap else m.minimum for m in sizes)
    return need + _GAP * (len(out.columns) - 1)


def render_summary(summary: RunSummary, console: Console) -> None:
    """Devices, phases, totals with bands, and every assumption."""
    console.print(device_table(summary, console))
    if summary.phases:
        phases = table("phase", "windows", "time", "energy", "CO2e", figures=_FIGURES, words=("phase",),
                       title="phases")
        for p in summary.phases:
            phases.add_row(plain(p.name), str(p.count), fmt_duration(p.duration_s), fmt_energy(joules_to_kwh(p.energy_j)),
                           fmt_mass(p.emissions_g / G_PER_KG))
        console.print(phases)
    intensity, pue = summary.intensity, summary.pue
    energy_band = band_text(summary.energy_kwh_low, summary.energy_kwh_high, ENERGY_UNITS, summary.energy_kwh)
    mass_band = band_text(summary.emissions_kg_low, summary.emissions_kg_high, MASS_UNITS, summary.emissions_kg)
    console.print(f"energy: [bold]{fmt_energy(summary.energy_kwh)}[/] ({energy_band}) · "
                  f"CO2e: [bold]{fmt_mass(summary.emissions_kg)}[/] ({mass_band})", highlight=False)
    console.print(f"time: {fmt_duration(summary.duration_s)} wall · {fmt_duration(summary.cpu_time_s)} CPU",
                  highlight=False)
    console.print(plain(intensity_line(intensity)), highlight=False)
    console.print(plain(pue_line(pue)), highlight=False)
    for note in [*summary.notes, *intensity.notes]:
        loud = note.startswith(_WORLD_AVERAGE_NOTE) or note == intensity.fallback
        console.print(plain(f"· {note_line(note)}"), style="bold yellow" if loud else "dim", highlight=False)
    if summary.carbon_aware:
        render_carbon_aware(summary.carbon_aware, console)


def render_carbon_aware(ca: dict, console: Console) -> None:
    """One line: pauses, the time waited and trained (scaled: a 36 s wait is ``36.0 s``, not ``0.0 h``), and the
    emissions against running straight through. A run that never paused ran straight through: it says so and
    claims no saving (the two figures differ there only by how each was priced)."""
    deadline = "" if ca["deadline"] is None else (" · deadline met" if ca["met_deadline"] else " · DEADLINE MISSED")
    pauses = f"{ca['pauses']} pause" + ("" if ca["pauses"] == 1 else "s")
    waited, trained = fmt_hours(ca["waited_h"]), fmt_hours(ca["active_h"])
    if ca["pauses"] == 0:
        outcome = f"{fmt_mass(ca['emissions_g'] / G_PER_KG)} CO2e, run straight through: no saving"
    else:
        outcome = (f"{fmt_mass(ca['emissions_g'] / G_PER_KG)} CO2e against "
                   f"{fmt_mass(ca['straight_through_g'] / G_PER_KG)} straight through: "
                   f"{'saved' if ca['saved_g'] >= 0 else 'cost'} {fmt_mass(abs(ca['saved_g']) / G_PER_KG)} "
                   f"({ca['saved_frac']:.1%})")
    console.print(f"carbon-aware ({ca['policy']}): {pauses}, waited {waited}, trained {trained} · {outcome}{deadline}",
                  highlight=False)
