"""Runs for ``bench/energy_to_quality.py``: the CLI under the benchmark's own ledger, each (run, seed) cached.

A run's record keeps its curve with the energy split three ways: training (what every comparison uses),
evaluations (the measuring instrument, never charged) and previews (the ``sample`` phase: also never charged,
since diffusers' script previews far less often than greendiff's baseline did; the benchmark also sets
``run.sample_every`` to the run's length, so only the closing preview happens, after the last evaluation).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
KWH_PER_J = 1 / 3.6e6


class Failed(Exception):
    """A run the installed greendiff refused or that crashed: its one-line reason goes in the table."""


class Bench:
    """The benchmark's folder: cached results ``<tag>-<name>.json``, run folders under ``work/``, its own
    ledger and dataset cache; ``deadline`` (``time.monotonic()``) stops it cleanly between runs.

    Example:
        >>> bench = Bench(Path("/tmp/e2q"), "abcd1234", deadline=float("inf"))  # doctest: +SKIP
    """

    def __init__(self, folder: Path, tag: str, deadline: float, threads: int | None = None) -> None:
        self.folder, self.tag, self.deadline, self.work = folder, tag, deadline, folder / "work"
        self.env = {**os.environ, "GREENDIFF_LEDGER": str(folder / "ledger.sqlite"),
                    "GREENDIFF_CACHE_DIR": str(folder / "cache")}
        if threads:
            self.env["GREENDIFF_THREADS"] = str(threads)
        self.spent_s = 0.0  # wall time of the runs made in this sitting

    def cached(self, name: str, make: Callable[[], dict]) -> dict:
        """The result stored under ``name``, else ``make()``'s, stored first. A failure is stored too (as
        ``{"failed": reason}``), so a lever the installed greendiff lacks is not retried every sitting;
        delete its file to retry. Raises :class:`OutOfTime` before starting a new run past the deadline."""
        path = self.path(name)
        if path.is_file():
            return backfill(json.loads(path.read_text()), self.work)
        if time.monotonic() > self.deadline:
            raise OutOfTime(name)
        t0 = time.monotonic()
        try:
            result = make()
        except Failed as exc:
            result = {"failed": str(exc)}
        self.spent_s += time.monotonic() - t0
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)  # a sitting cut off mid-write leaves no half result
        return result

    def path(self, name: str) -> Path:
        return self.folder / f"{self.tag}-{name.replace('/', '-').replace(' ', '_')}.json"

    def cli(self, args: list[str]) -> str:
        done = subprocess.run([EXE, *args], capture_output=True, text=True, env=self.env)
        if done.returncode != 0:
            lines = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()
            raise Failed(lines[-1][:300])
        return done.stdout

    def train(self, name: str, flags: list[str]) -> dict:
        """One ``greendiff train`` in ``work/<name>`` (an earlier, cut-off attempt removed first)."""
        out = self.work / name.replace("/", "-").replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        self.cli(["train", *flags, "--name", "run", "--output-dir", str(out)])
        (run_dir,) = out.iterdir()
        result = {"name": name, "wall_s": time.perf_counter() - t0, **read_run(run_dir, self.work)}
        print(f"  {name}: {result['steps']} steps, {result['wall_s']:.0f} s, training {result['train_kwh'] * 1e3:.4f} Wh, "
              f"final FID {final_fid(result):.2f} ({result['stop_reason']})", flush=True)
        return result

    def score(self, run: dict, samples: int, seeds: int, extra: list[str] = ()) -> dict:
        """``greendiff eval --json`` of a finished run's pipeline: FID per noise seed, mean and spread."""
        report = json.loads(self.cli(["eval", "--run", str(self.work / run["dir"]), "--samples", str(samples),
                                      "--seeds", str(seeds), "--json", "--country", "FRA", *extra]))
        fids = [r["fid"] for r in report["results"]]
        return {"fids": fids, "fid": sum(fids) / len(fids), "energy_kwh": report["energy_kwh"],
                "spread": (report.get("spread") or {}).get("fid", 0.0)}


class OutOfTime(Exception):
    """The sitting's ``--budget-minutes`` are spent: stop between runs; a rerun continues from the cache."""


def read_run(run_dir: Path, work: Path) -> dict:
    """A finished run: steps, stop reason, energy by kind and its curve ``[{step, train_kwh, eval_kwh, fid}]``
    (training energy so far with evaluations excluded; previews come after the last point)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    emissions = json.loads((run_dir / "emissions.json").read_text())
    phases = {p["name"]: p["energy_j"] * KWH_PER_J for p in emissions.get("phases", [])}
    curve, eval_kwh = [], 0.0
    for r in records:
        if r.get("event") == "eval":
            eval_kwh += r["eval_energy_kwh"]
            curve.append({"step": r["step"], "train_kwh": r["energy_kwh"] - eval_kwh, "eval_kwh": eval_kwh,
                          "fid": r["fid"]})
    total = emissions["energy_kwh"]
    start = next((r for r in records if r.get("event") == "start"), {})
    return {"dir": run_dir.relative_to(work).as_posix(), "precision": start.get("precision", ""),
            **step_cost(emissions), "steps": max(r.get("step", 0) for r in records),
            "stop_reason": emissions.get("stop_reason", ""), "total_kwh": total, "eval_kwh": eval_kwh,
            "preview_kwh": phases.get("sample", 0.0),
            "train_kwh": total - eval_kwh - phases.get("sample", 0.0), "curve": curve}


def step_cost(emissions: dict) -> dict:
    """The ``train`` phase alone (the steps, nothing around them): joules per step and steps per second, to
    compare what a lever adds to a step apart from how fast it reaches the target."""
    phase = next((p for p in emissions.get("phases", []) if p["name"] == "train"), None)
    if not phase or not phase["count"]:
        return {}
    return {"step_j": phase["energy_j"] / phase["count"], "steps_per_s": phase["count"] / max(phase["duration_s"], 1e-9)}


def backfill(run: dict, work: Path) -> dict:
    """A result cached before ``step_j`` was recorded gets it from its run folder (when that is still there)."""
    emissions = work / run.get("dir", "-") / "emissions.json"
    if "step_j" not in run and "failed" not in run and emissions.is_file():
        run |= step_cost(json.loads(emissions.read_text()))
    return run


def final_fid(run: dict) -> float:
    return run["curve"][-1]["fid"] if run.get("curve") else float("nan")


def crossing(run: dict, target: float) -> tuple[dict | None, dict] | None:
    """The curve points around the first evaluation at or below ``target``: (the evaluation before it, None when
    it is the first; it). None when the run never reached it."""
    before = None
    for point in run.get("curve", []):
        if point["fid"] <= target:
            return before, point
        before = point
    return None


def reach(run: dict, target: float) -> tuple[float, float] | None:
    """Training energy bracketing the first evaluation at or below ``target``: (energy at the evaluation
    before it, or 0; energy at it). None when the run never reached it."""
    hit = crossing(run, target)
    return None if hit is None else (hit[0]["train_kwh"] if hit[0] else 0.0, hit[1]["train_kwh"])
