"""Early stopping's saving: the green recipe on the bundled MNIST, with and without early stopping.

Both runs use the same config and seed, with a constant LR after warm-up (``--lr-schedule``): the
setting for a run whose ``--max-steps`` is an upper bound rather than a plan. The early-stopping
run evaluates every ``--eval-every`` steps (``--eval-samples`` images of ``--eval-sample-steps`` DDIM
steps; its evaluation energy is counted in its total) and stops after ``--patience`` evaluations
without an FID improvement of more than ``--min-delta``. Each final pipeline is then scored by the
same ``greendiff eval`` (``--eval-n`` samples, MNIST features, 3 seeds), outside the training energy.

    python bench/early_stopping.py [--preset nano] [--max-steps 4000] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.tracking import RunSummary  # noqa: E402
from greendiff.units import joules_to_kwh  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")


def run(args: list[str], env: dict) -> str:
    return subprocess.run([EXE, *args], check=True, capture_output=True, text=True, env=env).stdout


def train_and_score(name: str, extra: list[str], common: list[str], root: Path, env: dict, eval_n: int) -> dict:
    out_dir = root / name
    run(["train", *common, "--name", name, "--output-dir", str(out_dir), *extra], env)
    (run_dir,) = out_dir.iterdir()
    emissions = json.loads((run_dir / "emissions.json").read_text())
    report = json.loads(run(["eval", "--run", str(run_dir), "--samples", str(eval_n), "--seeds", "3", "--json"], env))
    fids = [r["fid"] for r in report["results"]]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{k: r[k] for k in ("step", "energy_kwh", "eval_energy_kwh", "fid", "kid")} for r in records if r.get("event") == "eval"]
    return {"name": name, "steps": max(r.get("step", 0) for r in records), "curve": curve,
            "energy_kwh": emissions["energy_kwh"], "duration_s": emissions["duration_s"],
            "stop_reason": emissions.get("stop_reason", ""), "fid": statistics.mean(fids), "fid_std": statistics.stdev(fids),
            "phases": {p.name: joules_to_kwh(p.energy_j) for p in RunSummary.from_dict(emissions).phases}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--max-steps", type=int, default=4000)
    parser.add_argument("--lr-schedule", default="constant")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--eval-sample-steps", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--min-delta", type=float, default=0.5)
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    common = ["--preset", args.preset, "--max-steps", str(args.max_steps), "--lr-schedule", args.lr_schedule, "--set", f"run.sample_every={args.max_steps}",
              "--set", f"run.checkpoint_every={args.max_steps}", "--country", "FRA"]
    es = ["--eval-every", str(args.eval_every), "--eval-samples", str(args.eval_samples),
          "--eval-sample-steps", str(args.eval_sample_steps), "--patience", str(args.patience),
          "--min-delta", str(args.min_delta)]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GREENDIFF_LEDGER": f"{tmp}/ledger.sqlite", "GREENDIFF_CACHE_DIR": f"{tmp}/cache"}
        full = train_and_score("full", [], common, Path(tmp), env, args.eval_n)
        stopped = train_and_score("early-stopping", es, common, Path(tmp), env, args.eval_n)
    saved = 1 - stopped["energy_kwh"] / full["energy_kwh"]
    fid_change = (stopped["fid"] - full["fid"]) / full["fid"]
    result = {"date": today(), "machine": machine(), "args": vars(args), "full": full, "early_stopping": stopped,
              "energy_saved_frac": saved, "fid_change_frac": fid_change}
    (Path(__file__).resolve().parent / "results" / "early_stopping.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.write_benchmarks:
        met = saved >= 0.30 and fid_change <= 0.05
        lines = ["## Early stopping (`bench/early_stopping.py`)", "",
                 f"- Command: `python {' '.join(sys.argv)}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
                 f"- Green recipe, {args.preset} UNet, MNIST 16x16, LR schedule {args.lr_schedule}, up to {args.max_steps} steps; "
                 f"early stopping: FID on MNIST features every {args.eval_every} steps ({args.eval_samples} samples, "
                 f"{args.eval_sample_steps} DDIM steps), patience {args.patience}, min-delta {args.min_delta}. "
                 f"Final quality: `greendiff eval`, {args.eval_n} samples, 3 seeds.", "",
                 "| run | steps | training energy (incl. its evaluations) | of which evaluations | final FID (mean ± std of 3 seeds) | stop reason |",
                 "|---|---:|---:|---:|---:|---|"]
        for r in (full, stopped):
            lines.append(f"| {r['name']} | {r['steps']} | {r['energy_kwh'] * 1e3:.3f} Wh | {r['phases'].get('eval', 0.0) * 1e3:.3f} Wh "
                         f"| {r['fid']:.2f} ± {r['fid_std']:.2f} | {r['stop_reason']} |")
        lines += ["", f"Energy saved: **{saved:.0%}**; final FID change: **{fid_change:+.1%}**. Target ≥ 30 % saved at "
                      f"final quality within 5 % → **{'met' if met else 'NOT met'}**."]
        write_section("early_stopping", "\n".join(lines))


if __name__ == "__main__":
    main()
