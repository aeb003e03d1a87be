"""Energy-aware tuning: what pruning saves, and what the tuned config is worth against the default.

Four ``greendiff tune`` studies over ``bench/tune_space.toml`` on the bundled MNIST quick setting
(16x16, nano/pico UNets; FID on MNIST features, ``--eval-samples`` samples, 20 DDIM steps), each
trial with the same energy budget and ``--reports`` evaluations: no pruning, Hyperband (the
default), the median pruner and successive halving. Same sampler seed and startup trials. The
studies are grown one trial at a time in turn (``--resume --trials k``), so the searches are
interleaved on the machine.

Then the best configs of the Hyperband and median searches, the best of the no-pruning search, and the
default green config are each trained again under the same budget with ``--final-seeds`` seeds,
interleaved, and scored at the end with ``--final-samples`` samples.

Target (issue 7): pruning cuts the search's energy by >= 50 % while its best config is within 5 % of
the no-pruning search's best.

    python bench/tuning.py [--trials 12] [--budget-wh 0.05] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.tracking import RunSummary  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
HERE = Path(__file__).resolve().parent


def cli(args: list[str], env: dict) -> str:
    proc = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"greendiff {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def base_flags(args) -> list[str]:
    return ["--set", "model.preset=nano", "--set", "data.resolution=16", "--set", f"stop.eval_samples={args.eval_samples}",
            "--set", "stop.eval_sample_steps=20", "--set", f"run.max_steps={args.max_steps}"]


def search(args, work: Path, env: dict) -> dict[str, dict]:
    budget_kwh = args.budget_wh / 1000
    studies = {}
    for k in range(1, args.trials + 1):
        for pruner in args.pruners:
            folder = work / "tune" / pruner
            if k == 1:
                cli(["tune", "--space", HERE / "tune_space.toml", "--trials", 1, "--trial-budget-kwh", budget_kwh,
                     "--reports", args.reports, "--pruner", pruner, "--seed", args.seed, "--startup-trials", args.startup,
                     "--name", pruner, "--output-dir", work / "tune", *base_flags(args)], env)
            else:
                cli(["tune", "--resume", folder, "--trials", k], env)
            print(f"search {pruner}: {k}/{args.trials} trials", flush=True)
    for pruner in args.pruners:
        studies[pruner] = json.loads(cli(["tune", "--report", work / "tune" / pruner, "--json"], env))
    return studies


def final_runs(args, work: Path, studies: dict, env: dict) -> list[dict]:
    budget_kwh = args.budget_wh / 1000
    configs = {"default green": None}
    for pruner in ("hyperband", "median", "none"):
        if pruner in studies and studies[pruner]["exported"]:
            configs[f"tuned ({pruner} search)"] = studies[pruner]["exported"]["path"]
    runs = []
    for seed in args.final_seeds:
        for label, path in configs.items():
            out = work / "final" / f"{label.split()[0]}-{seed}-{len(runs)}"
            source = ["--config", path] if path else ["--preset", "nano", "--resolution", "16"]
            cli(["train", *source, "--budget-kwh", budget_kwh, "--max-steps", args.max_steps, "--seed", seed,
                 "--eval-samples", args.final_samples, "--eval-sample-steps", 20, "--set", "stop.eval_at_end=true",
                 "--set", "stop.spread_seeds=1", "--set", f"run.sample_every={args.max_steps}",
                 "--set", f"run.checkpoint_every={args.max_steps}", "--output-dir", out, "--name", "run"], env)
            (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            final = [r for r in records if r.get("event") == "eval"][-1]
            emissions = json.loads((run_dir / "emissions.json").read_text())
            eval_kwh = RunSummary.from_dict(emissions).phase_energy_kwh("eval")
            runs.append({"config": label, "seed": seed, "steps": final["step"], "fid": final["fid"],
                         "energy_kwh": emissions["energy_kwh"], "eval_kwh": eval_kwh,
                         "train_kwh": emissions["energy_kwh"] - eval_kwh, "wall_s": emissions["duration_s"]})
            print(f"final {label} seed {seed}: FID {final['fid']:.2f} at step {final['step']}", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--budget-wh", type=float, default=0.05, help="Energy per trial (Wh).")
    parser.add_argument("--reports", type=int, default=4)
    parser.add_argument("--startup", type=int, default=4, help="Random trials before TPE.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruners", default="none,hyperband,median,sha")
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=5000, help="Step cap per run (the budget binds first).")
    parser.add_argument("--final-seeds", default="0,1")
    parser.add_argument("--final-samples", type=int, default=500)
    parser.add_argument("--work", type=Path, default=None, help="Keep the studies and runs here (default: a temp dir).")
    parser.add_argument("--tag", default="", help="A variant: results in tuning-TAG.json and its own BENCHMARKS.md section.")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    args.pruners = args.pruners.split(",")
    args.final_seeds = [int(s) for s in args.final_seeds.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="greendiff-tune-bench-"))
    env = {**os.environ, "GREENDIFF_LEDGER": str(work / "ledger.sqlite"), "GREENDIFF_COUNTRY": "FRA"}
    t0 = time.time()
    studies = search(args, work, env)
    finals = final_runs(args, work, studies, env)
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "work"},
              "elapsed_s": time.time() - t0, "machine": machine(), "date": today(),
              "studies": {p: {"summary": s["summary"], "trials": s["trials"], "exported": s["exported"]} for p, s in studies.items()},
              "finals": finals}
    out = HERE / "results" / f"tuning{'-' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(exist_ok=True)
    text = json.dumps(result, indent=2).replace(str(work), "WORK")
    out.write_text(text)
    print(render(json.loads(text)))
    if args.write_benchmarks:
        write_section(f"tuning{'-' + args.tag if args.tag else ''}", "## Energy-aware tuning (`bench/tuning.py`)"
                      + (f" — variant {args.tag}" if args.tag else "") + "\n\n" + render(json.loads(text)))


def render(result: dict) -> str:
    a = result["args"]
    studies = result["studies"]
    flags = f" --pruners {','.join(a['pruners'])}" if a["pruners"] != ["none", "hyperband", "median", "sha"] else ""
    flags += f" --tag {a['tag']}" if a.get("tag") else ""
    lines = [f"- Command: `python bench/tuning.py --trials {a['trials']} --budget-wh {a['budget_wh']} --reports {a['reports']}{flags} --write-benchmarks`",
             f"- Machine: {result['machine']}", f"- Date: {result['date']}",
             f"- Bench wall time: {result['elapsed_s'] / 60:.1f} min",
             f"- Setting: bundled MNIST 16x16, space `bench/tune_space.toml` (lr, batch size, pico/nano, EMA power, Min-SNR γ, "
             f"warm-up, timestep sampling); {a['trials']} trials per search, {a['budget_wh']} Wh per trial, {a['reports']} "
             f"evaluations per trial at equal energy steps plus one at the end; FID on MNIST features, {a['eval_samples']} samples, "
             f"20 DDIM steps; TPE seed {a['seed']}, {a['startup']} random startup trials; the searches grown one trial at a time in turn.",
             "", "| search | trials complete / pruned / failed | search energy | of which evaluations | vs no pruning | best FID (trial) | vs no-pruning best |",
             "|---|---|---:|---:|---:|---:|---:|"]
    ref = studies.get("none")
    for pruner, s in studies.items():
        summary = s["summary"]
        n = {k: v["trials"] for k, v in summary["by_state"].items()}
        energy_frac = summary["energy_kwh"] / ref["summary"]["energy_kwh"] if ref else None
        best_gap = summary["best_value"] / ref["summary"]["best_value"] - 1 if ref and summary["best_value"] else None
        lines.append(f"| {pruner} | {n.get('COMPLETE', 0)} / {n.get('PRUNED', 0)} / {n.get('FAIL', 0)} | "
                     f"{summary['energy_kwh'] * 1000:.3f} Wh | {summary['eval_kwh'] * 1000:.3f} Wh | "
                     + (f"{energy_frac:.0%}" if energy_frac is not None else "—") + " | "
                     + (f"{summary['best_value']:.2f} (#{summary['best_trial']})" if summary["best_value"] else "—") + " | "
                     + (f"{best_gap:+.1%}" if best_gap is not None else "—") + " |")
    verdicts = []
    for pruner, s in studies.items():
        if pruner == "none" or not ref:
            continue
        saved = 1 - s["summary"]["energy_kwh"] / ref["summary"]["energy_kwh"]
        gap = s["summary"]["best_value"] / ref["summary"]["best_value"] - 1
        met = saved >= 0.5 and gap <= 0.05
        verdicts.append(f"**{pruner}: {saved:.0%} of the no-pruning search energy saved, best FID {gap:+.1%} against the no-pruning best → "
                        f"target {'met' if met else 'NOT met'}** (≥ 50 % saved and within 5 %).")
    lines += ["", *verdicts, "",
              f"Best configs trained again under the same {a['budget_wh']} Wh budget (`--budget-kwh`, learning-rate schedule fitted "
              f"to it), scored at the end with {a['final_samples']} samples, seeds {', '.join(map(str, a['final_seeds']))}, interleaved:",
              "", "| config | seed | steps | FID | energy (evals incl.) | training energy |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["finals"]:
        lines.append(f"| {r['config']} | {r['seed']} | {r['steps']} | {r['fid']:.2f} | {r['energy_kwh'] * 1000:.3f} Wh | "
                     f"{r['train_kwh'] * 1000:.3f} Wh |")
    by_config: dict[str, list[dict]] = {}
    for r in result["finals"]:
        by_config.setdefault(r["config"], []).append(r)
    lines += ["", "| config | mean FID | mean training energy |", "|---|---:|---:|"]
    for label, rs in by_config.items():
        lines.append(f"| {label} | {statistics.mean(r['fid'] for r in rs):.2f} | {statistics.mean(r['train_kwh'] for r in rs) * 1000:.3f} Wh |")
    for pruner, s in studies.items():
        if s["exported"]:
            best = next(t for t in s["trials"] if t["number"] == s["exported"]["trial"])
            lines.append(f"\nBest of the {pruner} search (trial {best['number']}): "
                         + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in best["params"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
