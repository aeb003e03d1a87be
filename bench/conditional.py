"""Class-conditional against unconditional training on the bundled MNIST: quality by guidance scale,
and the energy each needs to reach the unconditional run's quality.

Both runs: the green recipe, the same preset, data, seed and step budget, FID evaluated during
training every ``--eval-every`` steps (``--eval-samples`` images, ``--eval-sample-steps`` DDIM
steps; the conditional run samples a class-balanced set at the recipe's guidance scale). Each final
pipeline is then scored by ``greendiff eval`` (``--eval-n`` images, MNIST features): the
unconditional one once, the conditional one at every ``--guidance`` scale, with class accuracy (the
share of images the bundled MNIST classifier assigns to the class asked for) and per-class FID.

Resumable: each run's result is cached in ``bench/results/conditional/`` and reused by the next
invocation with the same arguments (delete the folder to start again).

    python bench/conditional.py [--preset nano] [--max-steps 2000] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
RESULTS = Path(__file__).resolve().parent / "results" / "conditional"


def run(args: list[str], env: dict) -> str:
    done = subprocess.run([EXE, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"greendiff {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def cached(key: str, make) -> dict:
    """The result stored under ``key``, else ``make()``'s, stored first (a benchmark spans sessions)."""
    path = RESULTS / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = make()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def train(name: str, extra: list[str], common: list[str], work: Path, env: dict) -> dict:
    out_dir = work / name.replace(", evaluated at w=1", "-w1")
    shutil.rmtree(out_dir, ignore_errors=True)  # a run cut off by the end of a session starts again
    run(["train", *common, "--name", name.split(",")[0] + ("-w1" if "w=1" in name else ""), "--output-dir", str(out_dir), *extra], env)
    (run_dir,) = out_dir.iterdir()
    emissions = json.loads((run_dir / "emissions.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{k: r.get(k) for k in ("step", "energy_kwh", "fid", "class_accuracy")} for r in records
             if r.get("event") == "eval"]
    return {"name": name, "run_dir": os.path.relpath(run_dir), "steps": max(r.get("step", 0) for r in records), "curve": curve,
            "energy_kwh": emissions["energy_kwh"], "duration_s": emissions["duration_s"]}


def score(run_dir: str, n: int, guidance: float | None, env: dict) -> dict:
    args = ["eval", "--run", run_dir, "--samples", str(n), "--kid-subset", str(min(n, 1000)), "--json"]
    if guidance is not None:
        args += ["--guidance-scale", f"{guidance:g}"]
    (result,) = json.loads(run(args, env))["results"]
    return result


def energy_to_reach(curve: list[dict], target_fid: float) -> float | None:
    """Training energy (evaluations included) at the first evaluation at or below ``target_fid``."""
    return next((p["energy_kwh"] for p in curve if p["fid"] is not None and p["fid"] <= target_fid), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--eval-sample-steps", type=int, default=20)
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--work", type=Path, default=RESULTS / "work")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    tag = hashlib.sha256(json.dumps([args.preset, args.max_steps, args.eval_every, args.eval_samples,
                                     args.eval_sample_steps]).encode()).hexdigest()[:8]
    env = {**os.environ, "GREENDIFF_LEDGER": str(RESULTS / "ledger.sqlite"), "GREENDIFF_CACHE_DIR": str(RESULTS / "cache")}
    common = ["--preset", args.preset, "--max-steps", str(args.max_steps), "--dataset", "mnist", "--country", "FRA",
              "--eval-every", str(args.eval_every), "--eval-samples", str(args.eval_samples),
              "--eval-sample-steps", str(args.eval_sample_steps), "--set", f"run.sample_every={args.max_steps}",
              "--set", f"run.checkpoint_every={args.max_steps}"]
    runs = {kind: cached(f"{tag}-{kind.replace(', evaluated at w=1', '-w1')}-train", lambda kind=kind, extra=extra: train(kind, extra, common, args.work, env))
            for kind, extra in (("unconditional", []), ("conditional", ["--conditioning", "class"]),
                                ("conditional, evaluated at w=1", ["--conditioning", "class", "--guidance-scale", "1"]))}
    finals = {"unconditional": [cached(f"{tag}-unconditional-eval-{args.eval_n}",
                                       lambda: score(runs["unconditional"]["run_dir"], args.eval_n, None, env))]}
    finals["conditional"] = [cached(f"{tag}-conditional-eval-{args.eval_n}-w{w:g}",
                                    lambda w=w: {**score(runs["conditional"]["run_dir"], args.eval_n, w, env), "guidance_scale": w})
                             for w in args.guidance]
    target = runs["unconditional"]["curve"][-1]["fid"]  # the unconditional run's final in-training FID
    reach = {kind: energy_to_reach(r["curve"], target) for kind, r in runs.items()}
    result = {"date": today(), "machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
              "finals": finals, "target_fid": target, "energy_to_reach_kwh": reach}
    (RESULTS.parent / "conditional.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({"finals": finals, "energy_to_reach_kwh": reach}, indent=2))
    if args.write_benchmarks:
        write_section("conditional", report(args, result))


def report(args, result: dict) -> str:
    runs, finals, reach = result["runs"], result["finals"], result["energy_to_reach_kwh"]
    lines = ["## Class-conditional vs unconditional (`bench/conditional.py`)", "",
             f"- Command: `python {' '.join(sys.argv)}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
             f"- Green recipe, {args.preset} UNet, bundled MNIST 16x16, {args.max_steps} steps each, seed 0; in-training FID "
             f"every {args.eval_every} steps ({args.eval_samples} samples, {args.eval_sample_steps} DDIM steps; conditional: "
             f"class-balanced at the recipe's guidance scale 2, or at 1 in the run so named: the same training, only its "
             f"evaluations differ). Final scores: `greendiff eval --samples {args.eval_n}`.", "",
             "| run | guidance | FID | class accuracy | worst per-class FID | best per-class FID |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, rows in finals.items():
        for r in rows:
            per_class = r.get("per_class_fid") or {}
            lines.append(f"| {kind} | {r.get('guidance_scale', '—')} | {r['fid']:.2f} | "
                         + (f"{r['class_accuracy']:.1%}" if r.get("class_accuracy") is not None else "—") + " | "
                         + (f"{max(per_class.values()):.1f} | {min(per_class.values()):.1f} |" if per_class else "— | — |"))
    lines += ["", f"Energy (training, evaluations included) to reach the unconditional run's final in-training FID "
                  f"({result['target_fid']:.2f}):", "", "| run | steps | total energy | energy to reach |", "|---|---:|---:|---:|"]
    for kind, r in runs.items():
        to = reach[kind]
        lines.append(f"| {kind} | {r['steps']} | {r['energy_kwh'] * 1e3:.3f} Wh | "
                     + (f"{to * 1e3:.3f} Wh" if to is not None else "not reached") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
