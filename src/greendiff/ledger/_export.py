"""Exports of a run summary that other tools read: CodeCarbon's ``emissions.csv``, the Hugging Face
model-card metadata and a flat CSV; and the words they (and the emissions statement) use for hardware and
for where an intensity figure comes from (:func:`intensity_citation`). Places are named by
:func:`greendiff.carbon.place_name`.

They read a summary in its stored form, the JSON object the ledger keeps (``runs.summary_json``,
checked by :func:`greendiff.ledger.parse_summary`): the ledger sits below ``tracking``, whose typed
``RunSummary.to_dict()`` gives exactly this object (its JSON for people and scripts is
``RunSummary.to_public_dict()``). Machine-readable outputs use one unit per quantity: energy in kWh, CO2e
in kg (CodeCarbon's own columns, and the Hub's ``co2_eq_emissions.emissions`` in grams, follow their tool's
schema).

Example:
    >>> intensity_citation("Our World in Data / Ember country table: FRA (France), 2023", 2023)
    'Our World in Data / Ember country table: FRA (France), 2023'
    >>> intensity_citation("EIA-930 hourly average intensity, CISO", 2022)
    'EIA-930 hourly average intensity, CISO, 2022'
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from greendiff import __version__
from greendiff.carbon import country_of, place_name
from greendiff.display import plain_number
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.units import G_PER_KG, joules_to_kwh, kwh_to_joules

# Column order of CodeCarbon's emissions.csv (``EmissionsData`` of CodeCarbon 3.x).
CODECARBON_COLUMNS = (
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "water_consumed", "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os",
    "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude",
    "latitude", "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue",
)
#: CodeCarbon's timestamp: naive local time, as its tracker writes ``datetime.now().strftime(...)``.
CODECARBON_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: The ``training_type`` values of the Hub's ``co2_eq_emissions`` metadata.
TRAINING_TYPES = ("pre-training", "fine-tuning")

# -- words ------------------------------------------------------------------------------------------

def hardware_text(devices: list[Mapping]) -> str:
    """The processors a run used, counted: ``"2 x NVIDIA H200, AMD EPYC 9654"`` (``""`` when none)."""
    names: dict[str, int] = {}
    for d in devices:
        if d["kind"] in ("gpu", "cpu"):
            names[d["name"]] = names.get(d["name"], 0) + 1
    return ", ".join(f"{n} x {name}" if n > 1 else name for name, n in names.items())


_CLI_HINT = re.compile(r"(^|\s)(--[a-z]|greendiff [a-z])")


def without_cli_hints(text: str) -> str:
    """``text`` without its sentences and clauses that tell a CLI user what to type (``pass --pue ...``),
    for text pasted elsewhere (a paper, a model card)."""
    sentences = []
    for sentence in re.split(r"(?<=\.)\s+", text):
        kept = [c for c in sentence.split("; ") if not _CLI_HINT.search(c)]
        if kept:
            sentences.append("; ".join(kept))
    return " ".join(sentences).strip()


# -- CodeCarbon ------------------------------------------------------------------------------------

def _by_kind(summary: dict, kind: str, field: str) -> float:
    return sum(d[field] for d in summary["devices"] if d["kind"] == kind)


def codecarbon_time(iso: str | None) -> str:
    """An ISO-8601 time as CodeCarbon writes its ``timestamp``: naive local time, to the second."""
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone().strftime(CODECARBON_TIME_FORMAT)


def codecarbon_row(summary: dict) -> dict[str, object]:
    """A row in CodeCarbon's ``emissions.csv`` schema (kWh, kg, W, s), so existing dashboards read it."""
    duration_s = max(summary["duration_s"], 1e-9)
    location = summary.get("location") or {}
    cloud = (location.get("cloud") or ":").split(":", 1)
    energy = {k: _by_kind(summary, k, "energy_kwh") for k in ("cpu", "gpu", "dram")}
    gpus = [d for d in summary["devices"] if d["kind"] == "gpu"]
    cpus = [d for d in summary["devices"] if d["kind"] == "cpu"]
    host = summary.get("host") or {}
    country, iso = country_of(location)
    return {
        "timestamp": codecarbon_time(summary["ended"] or summary["started"]), "project_name": summary["name"],
        "run_id": summary["run_id"], "experiment_id": "", "duration": duration_s, "emissions": summary["emissions_kg"],
        "emissions_rate": summary["emissions_kg"] / duration_s,
        "cpu_power": kwh_to_joules(energy["cpu"]) / duration_s, "gpu_power": kwh_to_joules(energy["gpu"]) / duration_s,
        "ram_power": kwh_to_joules(energy["dram"]) / duration_s,
        "cpu_energy": energy["cpu"], "gpu_energy": energy["gpu"], "ram_energy": energy["dram"],
        "energy_consumed": summary["energy_kwh"], "water_consumed": "",
        "country_name": country, "country_iso_code": iso,
        "region": location.get("grid") or "", "cloud_provider": cloud[0], "cloud_region": cloud[1],
        "os": host.get("os", ""), "python_version": host.get("python", ""),
        "codecarbon_version": f"greendiff-{__version__}",
        "cpu_count": host.get("cpu_count", ""), "cpu_model": cpus[0]["name"] if cpus else "",
        "gpu_count": len(gpus), "gpu_model": gpus[0]["name"] if gpus else "",
        "longitude": "", "latitude": "", "ram_total_size": host.get("ram_total_gb", ""), "tracking_mode": "process",
        "cpu_utilization_percent": "", "gpu_utilization_percent": "", "ram_utilization_percent": "", "ram_used_gb": "",
        "on_cloud": "Y" if location.get("cloud") else "N", "pue": summary["pue"]["value"], "wue": "",
    }


def codecarbon_csv(summaries: list[dict], header: bool = True, columns: tuple[str, ...] = CODECARBON_COLUMNS) -> str:
    """CodeCarbon ``emissions.csv`` rows of ``summaries``, in the order of ``columns`` (an existing file's)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(codecarbon_row(s) for s in summaries)
    return out.getvalue()


def _header(path: Path) -> list[str] | None:
    """The first row of a CSV file; ``None`` when it cannot be read as text."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error):
        return None


def backup_path(path: Path) -> Path:
    """Where CodeCarbon moves a file it cannot append to: ``NAME.bak``, else ``NAME_0.bak``, ``NAME_1.bak``..."""
    candidate, i = path.with_name(f"{path.name}.bak"), 0
    while candidate.exists():
        candidate, i = path.with_name(f"{path.name}_{i}.bak"), i + 1
    return candidate


def append_codecarbon_csv(path: Path, summaries: list[dict]) -> Path | None:
    """Add ``summaries`` to CodeCarbon file ``path`` as CodeCarbon's own writer does: a new or empty file gets
    the header; a file with CodeCarbon's columns (in any order) gets rows in its order; a file with other
    columns is moved to :func:`backup_path` and a new file started. Returns the backup's path, if one was made.

    Raises:
        OSError: the file cannot be read, moved or written (the caller names it).
    """
    exists = path.is_file() and path.stat().st_size > 0
    header = _header(path) if exists else None
    if header is not None and sorted(header) == sorted(CODECARBON_COLUMNS):
        with path.open("rb") as f:
            f.seek(-1, 2)
            newline = "" if f.read(1) in (b"\n", b"\r") else "\n"
        with path.open("a", encoding="utf-8", newline="") as f:
            f.write(newline + codecarbon_csv(summaries, header=False, columns=tuple(header)))
        return None
    backup = None
    if exists:
        backup = backup_path(path)
        path.rename(backup)
    atomic_write_text(path, codecarbon_csv(summaries))
    return backup


# -- Hugging Face model card -----------------------------------------------------------------------

#: Significant digits that give back any float exactly (IEEE 754 double: 17).
_EXACT_DIGITS = 17


def _fixed_float(dumper, value: float):
    """A float as YAML in fixed-point notation (``0.0000049``, never ``4.9e-06``: the Hub reads that as 4.9),
    exactly (:func:`greendiff.display.plain_number` at 17 digits), with a point so that YAML reads a float."""
    if not math.isfinite(value):
        return dumper.represent_float(value)
    text = plain_number(value, _EXACT_DIGITS)
    return dumper.represent_scalar("tag:yaml.org,2002:float", text if "." in text else f"{text}.0")


@functools.cache
def _card_dumper():
    import yaml

    class FixedPointDumper(yaml.SafeDumper):
        """YAML with every float in fixed-point notation."""

    FixedPointDumper.add_representer(float, _fixed_float)
    return FixedPointDumper


#: Each measurement method (``greendiff.energy.METHOD_UNCERTAINTY``'s keys) in words for people: what measured
#: the energy, or how an estimate is made. Text for people says methods through :func:`methods_text`.
METHOD_WORDS = {
    "counter": "NVML's GPU energy counter",
    "polled-power": "NVML's GPU power readings",
    "rapl": "RAPL energy counters",
    "estimate:tdp-cputime": "CPU time x the CPU's TDP",
    "estimate:ccf-vcpu-cputime": "CPU time x a cloud fleet-average power per vCPU (Cloud Carbon Footprint)",
    "estimate:user-watts-cputime": "CPU time x the CPU power the user gave",
    "estimate:ram-per-gb": "memory size x a power per GB",
}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def methods_text(methods) -> str:
    """How a run's energy was obtained, in words: ``"measured with RAPL energy counters, estimated as memory
    size x a power per GB"``; ``"not metered"`` for none. A method this version does not know is named as stored.

    Example:
        >>> methods_text(["counter", "estimate:tdp-cputime"])
        "measured with NVML's GPU energy counter, estimated as CPU time x the CPU's TDP"
    """
    measured = [METHOD_WORDS.get(m, m) for m in methods if not m.startswith("estimate:")]
    estimated = [METHOD_WORDS.get(m, m) for m in methods if m.startswith("estimate:")]
    parts = ([f"measured with {_and(measured)}"] if measured else []) + (
        [f"estimated as {_and(estimated)}"] if estimated else [])
    return ", ".join(parts) or "not metered"


def intensity_citation(source: str, year: int | None, kind: str = "static") -> str:
    """An intensity's source with its data year, once: ``"Our World in Data / Ember ..., 2023"``. A figure of
    no stated year says so, except a live one (its data are of the run's own hours)."""
    if year is None:
        return source if kind == "live" else f"{source}; year not stated"
    return source if str(year) in source else f"{source}, {year}"


def _source(summary: dict) -> str:
    intensity, pue = summary["intensity"], summary["pue"]
    cited = intensity_citation(intensity["source"], intensity.get("year"), intensity["kind"])
    return (f"greendiff {__version__}, energy {methods_text(summary['methods'])}; grid intensity: {cited}; "
            f"PUE {pue['value']:.2f} ({without_cli_hints(pue['source'])})")


def _six(value: float) -> float:
    """``value`` to 6 significant digits: the precision of a measured figure, not of a float."""
    return float(f"{value:.6g}")


def _greendiff_block(summary: dict) -> dict:
    """What the Hub's block has no field for: the location codes, the bands, the intensity and PUE used, notes."""
    intensity = summary["intensity"]
    location = {k: v for k, v in (summary.get("location") or {}).items() if v}
    figures = {k: _six(summary[k]) for k in ("energy_kwh", "energy_kwh_low", "energy_kwh_high", "emissions_kg",
                                             "emissions_kg_low", "emissions_kg_high")}
    return {
        "run_id": summary["run_id"], "run_name": summary["name"], "location": location, **figures,
        "intensity_g_per_kwh": _six(intensity["mean_g_per_kwh"]), "intensity_source": intensity["source"],
        "intensity_year": intensity.get("year"), "intensity_kind": intensity["kind"],
        "intensity_resolution": intensity.get("resolution"),
        "pue": summary["pue"]["value"], "pue_source": without_cli_hints(summary["pue"]["source"]),
        "notes": [without_cli_hints(n) for n in intensity.get("notes", [])],
        "uncertainty": summary.get("uncertainty") or "", "version": __version__,
    }


def model_card_data(summary: dict, training_type: str = "pre-training"):
    """The run as Hugging Face model-card metadata (a ``huggingface_hub.ModelCardData``): the Hub's
    ``co2_eq_emissions`` (emissions in grams, a place name) and a ``greendiff`` block with the location
    codes, the uncertainty band (kWh, kg), the intensity and PUE used, and their notes (a typical year).

    Raises:
        UserInputError: ``training_type`` is not one of :data:`TRAINING_TYPES`.
    """
    if training_type not in TRAINING_TYPES:
        raise UserInputError(f"training type must be {' or '.join(TRAINING_TYPES)} (the Hub's co2_eq_emissions "
                             f"values), got {training_type!r}")
    from huggingface_hub import ModelCardData  # installed with diffusers; imported only for a card

    co2 = {"emissions": _six(summary["emissions_kg"] * G_PER_KG), "source": _source(summary),
           "training_type": training_type,
           "geographical_location": place_name(summary.get("location")) or "unknown (world-average intensity)",
           "hardware_used": hardware_text(summary["devices"]) or "unknown"}
    return ModelCardData(co2_eq_emissions=co2, greendiff=_greendiff_block(summary))


def model_card_yaml(summary: dict, training_type: str = "pre-training") -> str:
    """:func:`model_card_data` as the YAML block of a model card's metadata (floats in fixed-point)."""
    import yaml

    return yaml.dump(model_card_data(summary, training_type).to_dict(), Dumper=_card_dumper(), sort_keys=False,
                     allow_unicode=True, width=100)


def model_card_markdown(summary: dict, training_type: str = "pre-training", body: str = "") -> str:
    """A model card (``README.md``) that the Hub's tools load (``huggingface_hub.ModelCard.load``,
    ``metadata_load``): :func:`model_card_yaml` between ``---`` fences, then ``body`` (default: a title and one
    line saying where the figures come from)."""
    body = body or (f"# {summary['name']}\n\nThe `co2_eq_emissions` metadata above is this model's training "
                    f"energy and CO2e, measured with greendiff {__version__}.\n")
    return f"---\n{model_card_yaml(summary, training_type)}---\n\n{body}"


# -- flat CSV ---------------------------------------------------------------------------------

def flat_row(summary: dict) -> dict[str, object]:
    """One run as a flat table row: totals with their bands, intensity, PUE and their sources, and the
    energy of each device and phase (columns ``energy_kwh:<device>``, ``phase_kwh:<phase>``)."""
    location = summary.get("location", {}) or {}
    row: dict[str, object] = {
        "run_id": summary["run_id"], "name": summary["name"], "kind": summary["kind"], "status": summary["status"],
        "started": summary["started"], "ended": summary["ended"], "duration_s": summary["duration_s"],
        "energy_kwh": summary["energy_kwh"], "energy_kwh_low": summary["energy_kwh_low"],
        "energy_kwh_high": summary["energy_kwh_high"], "emissions_kg": summary["emissions_kg"],
        "emissions_kg_low": summary["emissions_kg_low"], "emissions_kg_high": summary["emissions_kg_high"],
        "intensity_g_per_kwh": summary["intensity"]["mean_g_per_kwh"], "intensity_source": summary["intensity"]["source"],
        "intensity_year": summary["intensity"].get("year") or "",
        "pue": summary["pue"]["value"], "pue_source": summary["pue"]["source"],
        "country": location.get("country") or "", "cloud": location.get("cloud") or "", "grid": location.get("grid") or "",
        "place": place_name(location), "methods": ";".join(summary["methods"]), "greendiff_version": __version__,
    }
    row.update({f"energy_kwh:{d['key']}": d["energy_kwh"] for d in summary["devices"]})
    row.update({f"phase_kwh:{p['name']}": joules_to_kwh(p["energy_j"]) for p in summary["phases"]})
    return row


def flat_csv(summaries: list[dict]) -> str:
    """A CSV of :func:`flat_row` rows; device and phase columns are the union over the runs."""
    rows = [flat_row(s) for s in summaries]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
