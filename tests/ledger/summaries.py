"""Stored run summaries (the ledger's ``summary_json`` form) with round figures, for the export, statement and
``runs`` tests: a run in a country, one in a cloud region, one on a US grid priced from a typical year."""

from __future__ import annotations

import copy
import json

from greendiff.ledger import Ledger

_DEFAULT_PUE = ("default 1.0: no facility overhead counted (on-premise machine); pass --pue for a data centre "
                "(industry average 1.58, Uptime Institute 2023)")


def _device(key: str, kind: str, name: str, method: str, kwh: float, g: float, frac: float = 0.05) -> dict:
    return {"key": key, "kind": kind, "name": name, "method": method, "scope": "device", "uncertainty_frac": frac,
            "energy_j": kwh * 3.6e6, "energy_kwh": kwh, "emissions_g": g}


COUNTRY = {
    "run_id": 3, "name": "unet-tiny", "kind": "train", "status": "completed", "command": "greendiff train",
    "started": "2026-11-29T02:30:00+00:00", "ended": "2026-11-29T04:00:00+00:00", "duration_s": 5400.0,
    "cpu_time_s": 5000.0, "energy_j": 1.8e6, "energy_kwh": 0.5, "energy_kwh_low": 0.45, "energy_kwh_high": 0.55,
    "emissions_kg": 0.028, "emissions_kg_low": 0.0252, "emissions_kg_high": 0.0308,
    "devices": [_device("gpu:0", "gpu", "NVIDIA H200", "counter", 0.2, 11.2),
                _device("gpu:1", "gpu", "NVIDIA H200", "counter", 0.2, 11.2),
                _device("cpu:process-tree", "cpu", "AMD EPYC 9654", "estimate:tdp-cputime", 0.08, 4.48, 0.3),
                _device("dram:process-tree", "dram", "RAM", "estimate:ram-per-gb", 0.02, 1.12, 0.5)],
    "phases": [{"name": "train", "count": 100, "duration_s": 5000.0, "energy_j": 1.62e6, "emissions_g": 25.2}],
    "location": {"country": "FRA", "cloud": None, "grid": None},
    "host": {"os": "Linux", "python": "3.11.7", "cpu_count": 96, "ram_total_gb": 512.0},
    "intensity": {"source": "Our World in Data / Ember country table: FRA (France), 2023", "kind": "static",
                  "year": 2023, "mean_g_per_kwh": 56.0, "notes": [], "fallback": None},
    "pue": {"value": 1.0, "source": _DEFAULT_PUE},
    "methods": ["counter", "estimate:ram-per-gb", "estimate:tdp-cputime"], "notes": [],
    "uncertainty": "energy band = sum over devices of energy x (1 +/- method uncertainty)",
}

CLOUD = {
    **copy.deepcopy(COUNTRY), "run_id": 4, "name": "finetune", "duration_s": 42.0, "cpu_time_s": 40.0,
    "energy_j": 4.32, "energy_kwh": 1.2e-6, "energy_kwh_low": 1.1e-6, "energy_kwh_high": 1.3e-6,
    "emissions_kg": 1.644e-07, "emissions_kg_low": 1.507e-07, "emissions_kg_high": 1.781e-07,
    "devices": [_device("cpu:process-tree", "cpu", "Intel Xeon", "estimate:tdp-cputime", 1.2e-6, 1.644e-4, 0.3)],
    "phases": [], "location": {"country": None, "cloud": "gcp:europe-west1", "grid": None},
    "intensity": {"source": "Google Cloud region carbon data 2024: gcp:europe-west1 (Belgium)", "kind": "static",
                  "year": 2024, "mean_g_per_kwh": 124.5454, "notes": [], "fallback": None},
    "pue": {"value": 1.1, "source": "Google fleet-average PUE 1.10 (Google 2023 environmental report)"},
    "methods": ["estimate:tdp-cputime"],
}

TYPICAL_YEAR = "2022 trace used as a typical year for 2026: same month, day and time of day"
GRID = {
    **copy.deepcopy(COUNTRY), "run_id": 5, "name": "on-ciso", "location": {"grid": "CISO"},
    "intensity": {"source": "EIA-930 hourly CISO 2022", "kind": "hourly", "year": 2022, "mean_g_per_kwh": 210.0,
                  "notes": [TYPICAL_YEAR], "fallback": None},
}


def ledger_with(path, *summaries: dict) -> Ledger:
    """A ledger holding one closed run per summary (ids 1, 2, ... in order; each summary's run_id set to match)."""
    ledger = Ledger(path)
    for summary in summaries:
        _add_run(ledger, summary)
    return ledger


def _add_run(ledger: Ledger, summary: dict, **assumptions) -> int:
    """One closed run of ``summary``: its devices, two samples (zero, then each device's energy) and the summary."""
    run_id = ledger.start_run(summary["name"], summary["kind"], "x",
                              {"location": summary.get("location") or {}, "pue": summary["pue"], **assumptions},
                              [{k: d[k] for k in ("key", "kind", "name", "method", "scope", "uncertainty_frac")}
                               for d in summary["devices"]], started_unix_s=1.7e9)
    ledger.add_sample(run_id, 1.7e9, 0.0, {d["key"]: 0.0 for d in summary["devices"]})
    ledger.add_sample(run_id, 1.7e9 + summary["duration_s"], 1.0, {d["key"]: d["energy_j"] for d in summary["devices"]})
    ledger.finish_run(run_id, "completed", {**summary, "run_id": run_id})
    return run_id


def resumed_ledger(tmp_path):
    """A ledger with run 1 (``CLOUD``) and a run interrupted and resumed in its run directory: ledger runs 2
    (``intr``, 500 Wh, 1.5 h) and 3 (``intr (resumed)``, 250 Wh, 0.75 h, one more phase and a note), each
    recording the directory, whose ``emissions.json`` lists both. Returns ``(ledger, run_dir)``."""
    run_dir = tmp_path / "runs" / "20261130-intr"
    run_dir.mkdir(parents=True)
    first = {**copy.deepcopy(COUNTRY), "name": "intr", "notes": ["cpu estimated"]}
    second = {**copy.deepcopy(COUNTRY), "name": "intr (resumed)", "duration_s": 2700.0, "cpu_time_s": 2500.0,
              "energy_j": 0.9e6, "energy_kwh": 0.25, "energy_kwh_low": 0.225, "energy_kwh_high": 0.275,
              "emissions_kg": 0.014, "emissions_kg_low": 0.0126, "emissions_kg_high": 0.0154,
              "devices": [{**d, "energy_j": d["energy_j"] / 2, "energy_kwh": d["energy_kwh"] / 2,
                           "emissions_g": d["emissions_g"] / 2} for d in COUNTRY["devices"]],
              "phases": [{"name": "train", "count": 50, "duration_s": 2500.0, "energy_j": 0.81e6, "emissions_g": 12.6},
                         {"name": "eval", "count": 1, "duration_s": 100.0, "energy_j": 0.09e6, "emissions_g": 1.4}],
              "notes": ["cpu estimated", "resumed from step 28"], "prior_energy_kwh": 0.5}
    ledger = ledger_with(tmp_path / "l.sqlite", CLOUD)
    for summary in (first, second):
        _add_run(ledger, summary, run_dir=str(run_dir))
    (run_dir / "emissions.json").write_text(json.dumps({"ledger_run_ids": [2, 3], "run_total_energy_kwh": 0.75}))
    return ledger, run_dir
