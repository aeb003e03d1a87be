"""Rich tables for run summaries."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from greendiff.tracking import RunSummary
from greendiff.units import G_PER_KG, joules_to_kwh, kwh_to_joules


def plain(value: object) -> Text:
    """Text shown as is: no Rich markup (a run named ``[red]x`` or ``[/]``), control characters escaped
    (a name from another tool must not move the cursor or recolour the terminal)."""
    text = str(value)
    return Text("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))


def fmt_energy(kwh: float) -> str:
    if not math.isfinite(kwh):
        return "n/a"
    if kwh >= 1:
        return f"{kwh:.3f} kWh"
    if kwh >= 1e-3:
        return f"{kwh * 1e3:.3f} Wh"
    return f"{kwh_to_joules(kwh):.3g} J"


def fmt_mass(kg: float) -> str:
    if not math.isfinite(kg):
        return "n/a"
    for unit, scale in (("kg", 1.0), ("g", 1e-3), ("mg", 1e-6)):
        if kg >= scale:
            return f"{kg / scale:.3g} {unit}"
    return f"{kg / 1e-9:.3g} µg"


def render_summary(summary: RunSummary, console: Console) -> None:
    """Devices, phases, totals with bands, and every assumption."""
    table = Table(title=plain(f"run {summary.run_id} · {summary.name} · {summary.status}"), title_justify="left")
    for col in ("device", "name", "method", "energy", "±", "CO2e"):
        table.add_column(col, justify="right" if col in ("energy", "±", "CO2e") else "left", overflow="fold")
    for d in summary.devices:
        table.add_row(plain(d.key), plain(d.name), plain(d.method), fmt_energy(d.energy_kwh),
                      f"{d.uncertainty_frac:.0%}", fmt_mass(d.emissions_g / G_PER_KG))
    table.add_row("total", "", "", fmt_energy(summary.energy_kwh), "", fmt_mass(summary.emissions_kg), style="bold")
    console.print(table)
    if summary.phases:
        phases = Table(title="phases", title_justify="left")
        for col in ("phase", "windows", "time", "energy", "CO2e"):
            phases.add_column(col, justify="left" if col == "phase" else "right")
        for p in summary.phases:
            phases.add_row(plain(p.name), str(p.count), f"{p.duration_s:.2f} s", fmt_energy(joules_to_kwh(p.energy_j)),
                           fmt_mass(p.emissions_g / G_PER_KG))
        console.print(phases)
    intensity, pue = summary.intensity, summary.pue
    console.print(
        f"[bold]{fmt_energy(summary.energy_kwh)}[/] "
        f"({fmt_energy(summary.energy_kwh_low)} – {fmt_energy(summary.energy_kwh_high)}) · "
        f"[bold]{fmt_mass(summary.emissions_kg)} CO2e[/] "
        f"({fmt_mass(summary.emissions_kg_low)} – {fmt_mass(summary.emissions_kg_high)}) · "
        f"{summary.duration_s:.1f} s wall · {summary.cpu_time_s:.1f} CPU-s",
        highlight=False,
    )
    console.print(plain(f"intensity: {intensity.mean_g_per_kwh:.0f} gCO2e/kWh, {intensity.source} ({intensity.kind})"),
                  highlight=False)
    console.print(plain(f"PUE: {pue.value:g}, {pue.source}"), highlight=False)
    for note in [*summary.notes, *intensity.notes]:
        loud = note.startswith("LOCATION UNKNOWN") or note == intensity.fallback
        console.print(plain(f"· {note}"), style="bold yellow" if loud else "dim", highlight=False)
    if summary.carbon_aware:
        render_carbon_aware(summary.carbon_aware, console)


def render_carbon_aware(ca: dict, console: Console) -> None:
    """One line: pauses, waits, and the emissions against running straight through."""
    deadline = "" if ca["deadline"] is None else (" · deadline met" if ca["met_deadline"] else " · DEADLINE MISSED")
    console.print(f"carbon-aware ({ca['policy']}): {ca['pauses']} pauses, waited {ca['waited_h']:.1f} h, trained "
                  f"{ca['active_h']:.1f} h · {fmt_mass(ca['emissions_g'] / G_PER_KG)} CO2e against "
                  f"{fmt_mass(ca['straight_through_g'] / G_PER_KG)} straight through: "
                  f"{'saved' if ca['saved_g'] >= 0 else 'cost'} {fmt_mass(abs(ca['saved_g']) / G_PER_KG)} "
                  f"({ca['saved_frac']:.1%}){deadline}", highlight=False)

