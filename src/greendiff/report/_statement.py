"""The emissions statement a paper can quote, from one run's summary (and the model-card block)."""

from __future__ import annotations

from greendiff import __version__
from greendiff.tracking import RunSummary


def place_of(summary: RunSummary) -> str:
    location = summary.location or {}
    parts = [f"US grid {location['grid']}" if location.get("grid") else "",
             f"cloud region {location['cloud']}" if location.get("cloud") else "",
             f"country {location['country']}" if location.get("country") else ""]
    return ", ".join(p for p in parts if p) or "an unstated location (world-average intensity)"


def hardware_of(summary: RunSummary) -> str:
    names: dict[str, int] = {}
    for d in summary.devices:
        if d.kind in ("gpu", "cpu"):
            names[d.name] = names.get(d.name, 0) + 1
    return ", ".join(f"{n} x {name}" if n > 1 else name for name, n in names.items()) or "unstated hardware"


def emissions_statement(summary: RunSummary) -> str:
    """A paragraph with the hardware, hours, location, grid intensity and source, PUE, kWh, kgCO2e,
    method and uncertainty, in that order."""
    hours = summary.duration_s / 3600
    intensity, pue = summary.intensity, summary.pue
    methods = ", ".join(summary.methods)
    return (
        f"This run ({summary.name}) used {hardware_of(summary)} for {hours:.3g} h in {place_of(summary)}. "
        f"It consumed {summary.energy_kwh:.4g} kWh of electricity (range {summary.energy_kwh_low:.4g}–"
        f"{summary.energy_kwh_high:.4g} kWh), measured per device with {methods}. At a grid carbon intensity of "
        f"{intensity.mean_g_per_kwh:.0f} gCO2e/kWh ({intensity.source}, {intensity.kind}) and a PUE of "
        f"{pue.value:g} ({pue.source}), this corresponds to {summary.emissions_kg:.4g} kgCO2e (range "
        f"{summary.emissions_kg_low:.4g}–{summary.emissions_kg_high:.4g} kgCO2e). Emissions are IT energy x PUE "
        f"x grid intensity, hour by hour; the range combines each measurement method's uncertainty. "
        f"Measured with greendiff {__version__}."
    )
