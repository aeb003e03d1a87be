"""Exports of a run summary: CodeCarbon ``emissions.csv`` row, HF model-card YAML, JSON.

They read a summary in its stored form, the JSON object the ledger keeps (``runs.summary_json``,
checked by :func:`greendiff.ledger.parse_summary`): the ledger sits below ``tracking``, whose typed
``RunSummary.to_dict()`` gives exactly this object.
"""

from __future__ import annotations

import csv
import io
import json

from greendiff import __version__
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


def _by_kind(summary: dict, kind: str, field: str) -> float:
    return sum(d[field] for d in summary["devices"] if d["kind"] == kind)


def codecarbon_row(summary: dict) -> dict[str, object]:
    """A row in CodeCarbon's ``emissions.csv`` schema (kWh, kg, W, s), so existing dashboards read it."""
    duration_s = max(summary["duration_s"], 1e-9)
    location = summary.get("location", {})
    cloud = (location.get("cloud") or ":").split(":", 1)
    energy = {k: _by_kind(summary, k, "energy_kwh") for k in ("cpu", "gpu", "dram")}
    gpus = [d for d in summary["devices"] if d["kind"] == "gpu"]
    cpus = [d for d in summary["devices"] if d["kind"] == "cpu"]
    host = summary.get("host", {})
    return {
        "timestamp": summary["ended"], "project_name": summary["name"], "run_id": summary["run_id"],
        "experiment_id": "", "duration": duration_s, "emissions": summary["emissions_kg"],
        "emissions_rate": summary["emissions_kg"] / duration_s,
        "cpu_power": kwh_to_joules(energy["cpu"]) / duration_s, "gpu_power": kwh_to_joules(energy["gpu"]) / duration_s,
        "ram_power": kwh_to_joules(energy["dram"]) / duration_s,
        "cpu_energy": energy["cpu"], "gpu_energy": energy["gpu"], "ram_energy": energy["dram"],
        "energy_consumed": summary["energy_kwh"], "water_consumed": "",
        "country_name": "", "country_iso_code": location.get("country") or "",
        "region": location.get("grid") or "", "cloud_provider": cloud[0], "cloud_region": cloud[1],
        "os": host.get("os", ""), "python_version": host.get("python", ""),
        "codecarbon_version": f"greendiff-{__version__}",
        "cpu_count": host.get("cpu_count", ""), "cpu_model": cpus[0]["name"] if cpus else "",
        "gpu_count": len(gpus), "gpu_model": gpus[0]["name"] if gpus else "",
        "longitude": "", "latitude": "", "ram_total_size": host.get("ram_total_gb", ""), "tracking_mode": "process",
        "cpu_utilization_percent": "", "gpu_utilization_percent": "", "ram_utilization_percent": "", "ram_used_gb": "",
        "on_cloud": "Y" if location.get("cloud") else "N", "pue": summary["pue"]["value"], "wue": "",
    }


def codecarbon_csv(summary: dict, header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CODECARBON_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerow(codecarbon_row(summary))
    return out.getvalue()


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def model_card_yaml(summary: dict, training_type: str = "pre-training") -> str:
    """The Hugging Face model-card ``co2_eq_emissions`` block (emissions in grams)."""
    location = summary.get("location", {})
    place = location.get("grid") or location.get("cloud") or location.get("country") or "unknown"
    hardware = sorted({f"{d['name']} ({d['kind']})" for d in summary["devices"]})
    source = (f"greendiff {__version__}: {', '.join(summary['methods'])}; intensity {summary['intensity']['source']}; "
              f"PUE {summary['pue']['value']:g} ({summary['pue']['source']})")
    return "\n".join([
        "co2_eq_emissions:",
        f"  emissions: {summary['emissions_kg'] * G_PER_KG:.6g}",
        f"  source: {_yaml_str(source)}",
        f"  training_type: {_yaml_str(training_type)}",
        f"  geographical_location: {_yaml_str(place)}",
        f"  hardware_used: {_yaml_str(', '.join(hardware))}",
        "",
    ])


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
        "pue": summary["pue"]["value"], "pue_source": summary["pue"]["source"],
        "country": location.get("country") or "", "cloud": location.get("cloud") or "", "grid": location.get("grid") or "",
        "methods": ";".join(summary["methods"]), "greendiff_version": __version__,
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


def json_summary(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=True)
