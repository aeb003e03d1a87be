"""The emissions statement a paper can quote, from one run's summary: the one formatter behind the report's
statement and ``greendiff runs export RUN -f statement``.

Place names (``France``, ``Google Cloud europe-west1 (Belgium)``), fixed-point figures with their units and
bands, the intensity's source and year, the PUE and its source, and no command-line hints.
"""

from __future__ import annotations

from greendiff import __version__
from greendiff.carbon import basis_text, place_name
from greendiff.display import ENERGY_UNITS, MASS_UNITS, band_text, duration_text, energy_text, fixed_point, mass_text
from greendiff.ledger import hardware_text, intensity_citation, methods_text, without_cli_hints
from greendiff.tracking import RESUMED_SUFFIX, RunSummary, run_name

_UNKNOWN_PLACE = "an unstated location, priced at the world-average grid intensity"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _subject(summary: RunSummary) -> str:
    """What the statement is about: ``This run (intr)``; a run in several segments says them (``This run (intr,
    in 2 segments: ledger runs 7 and 8)``); one resumed segment says it is one."""
    ids = summary.extra.get("ledger_run_ids")
    if isinstance(ids, list) and len(ids) > 1:
        listed = f"{', '.join(map(str, ids[:-1]))} and {ids[-1]}"
        return f"This run ({summary.name}, in {len(ids)} segments: ledger runs {listed})"
    if summary.name.endswith(RESUMED_SUFFIX):
        return f"This resumed segment of the run {run_name(summary.name)} (ledger run {summary.run_id})"
    return f"This run ({summary.name})"


def emissions_statement(summary: RunSummary) -> str:
    """A paragraph with the run (and its segments, for a resumed run's whole), the hardware, duration, place, energy
    and its band and how it was measured or estimated (:func:`greendiff.ledger.methods_text`), grid intensity
    with its source and year, PUE with its source, CO2e and its band, and the notes on the intensity, in that order.

    Example:
        >>> from greendiff.tracking import RunSummary
        >>> s = RunSummary.from_dict({"run_id": 1, "name": "r", "kind": "train", "status": "completed",
        ...     "started": None, "ended": None, "duration_s": 5400.0, "cpu_time_s": 1.0, "energy_j": 1.8e6,
        ...     "energy_kwh": 0.5, "energy_kwh_low": 0.45, "energy_kwh_high": 0.55, "emissions_kg": 0.028,
        ...     "emissions_kg_low": 0.0252, "emissions_kg_high": 0.0308, "devices": [], "phases": [],
        ...     "location": {"country": "FRA"}, "intensity": {"source": "t", "kind": "static", "year": 2023,
        ...     "mean_g_per_kwh": 56.0, "notes": []}, "pue": {"value": 1.0, "source": "on premise"},
        ...     "methods": ["rapl"], "notes": []})
        >>> print(emissions_statement(s)[:91])
        This run (r) used unstated hardware for 1.50 h in France. It consumed 500 Wh of electricity
    """
    intensity, pue = summary.intensity, summary.pue
    hardware = hardware_text([{"kind": d.kind, "name": d.name} for d in summary.devices]) or "unstated hardware"
    unit_energy = energy_text(summary.energy_kwh)
    unit_mass = mass_text(summary.emissions_kg)
    notes = "".join(f" Note: {_sentence(n)}" for n in map(without_cli_hints, intensity.notes) if n)
    cited = intensity_citation(intensity.source, intensity.year, intensity.kind)
    return (
        f"{_subject(summary)} used {hardware} for {duration_text(summary.duration_s)} in "
        f"{place_name(summary.location) or _UNKNOWN_PLACE}. It consumed {unit_energy} of electricity (range "
        f"{band_text(summary.energy_kwh_low, summary.energy_kwh_high, ENERGY_UNITS, summary.energy_kwh)}), "
        f"{methods_text(summary.methods)}. At a grid carbon intensity of "
        f"{fixed_point(intensity.mean_g_per_kwh)} gCO2e/kWh ({cited}; "
        f"{basis_text(intensity.kind, intensity.resolution)}) and a PUE of {pue.value:.2f} "
        f"({without_cli_hints(pue.source) or 'source not stated'}), this corresponds to {unit_mass} CO2e (range "
        f"{band_text(summary.emissions_kg_low, summary.emissions_kg_high, MASS_UNITS, summary.emissions_kg)} CO2e). "
        f"Emissions are IT energy x PUE x grid carbon intensity; the range combines each device's measurement "
        f"uncertainty, not the error of the intensity data.{notes} Measured with greendiff {__version__}."
    )
