"""The proof: energy to reach the diffusers-default baseline's final quality, green recipe vs baseline.

For each seed, in this order (pairs interleaved, so the machine's drift hits every recipe):

1. ``baseline``: diffusers ``train_unconditional.py`` defaults (``--recipe baseline``), ``max_steps``;
2. ``baseline+ema``: the same with ``--use_ema``, as diffusers' README runs it (the strongest honest
   reference); 3. ``green`` and 4. ``green-<small preset>``: the green recipe, told to stop as soon as
   it reaches the better of the two baselines' final FID (``--target-fid``), ``max_steps`` at most.

Then the ablation (``--ablation-seeds`` seeds): the baseline plus one lever at a time (Min-SNR,
schedule/batch/LR, smaller model, mixed precision where the hardware runs it natively; EMA is run 2),
each stopping at the plain baseline's final FID.

Every run is evaluated by the trainer's own evaluation (``--eval-samples`` images, DDIM with
``--eval-sample-steps`` steps, fixed noise seed, MNIST features): the baselines ``evals`` times, every
later run each time it has used 1/``evals_per_baseline`` of the baseline's energy; every later run
also stops once it has used the reference's whole energy (it can no longer win). The sampler plays
no part in training, so all runs use the same one; the baseline's own DDPM-1000 sampler is priced
separately (the "few-step sampler" lever). "Energy to reach" a target is the training energy up to
the first evaluation at or below it, the evaluations' own energy excluded, read the same way for
every run. The green runs' *total* energy, their evaluations included (what a user pays for the run
to find out when to stop on its own), is reported beside it and is what the headline uses.

    python bench/energy_to_quality.py --quick [--write-benchmarks]    # <= 25 min on 2 CPU cores
    python bench/energy_to_quality.py --full  [--write-benchmarks]    # 32x32, for a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
RESULTS = Path(__file__).resolve().parent / "results"

MODES = {
    # preset for both recipes, the smaller preset green also tries, resolution, baseline steps (the
    # same cap for every run), evaluations per baseline run, the energy spacing of every later run's
    # evaluations (the baseline's energy / evals_per_baseline), and the evaluation's size
    "quick": {"preset": "nano", "small": "pico", "resolution": 16, "max_steps": 2000, "evals": 8,
              "evals_per_baseline": 16, "eval_samples": 200, "eval_sample_steps": 20, "seeds": 2, "ablation_seeds": 1},
    "full": {"preset": "tiny", "small": "nano", "resolution": 32, "max_steps": 4000, "evals": 10,
             "evals_per_baseline": 20, "eval_samples": 1000, "eval_sample_steps": 25, "seeds": 2, "ablation_seeds": 1},
}

BASELINE = ["--recipe", "baseline"]


def levers(preset: str, small: str) -> dict[str, list[str]]:
    """The baseline plus one of the green recipe's levers, with the green recipe's own values."""
    from greendiff.train import PRESETS, RecipeConfig

    green = RecipeConfig()
    return {
        "+min-snr": ["--loss-weighting", green.loss_weighting],
        "+schedule/batch/lr": ["--beta-schedule", green.beta_schedule, "--batch-size", str(green.batch_size),
                               "--lr", f"{PRESETS[preset].lr:g}", "--warmup-steps", str(green.warmup_steps)],
        "+smaller model": ["--preset", small],
        "+mixed precision": ["--mixed-precision", green.mixed_precision],
    }


@dataclass
class Run:
    name: str
    seed: int
    run_dir: str = ""
    steps: int = 0
    stop_reason: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    total_kwh: float = 0.0  # everything the run measured, its evaluations included
    eval_kwh: float = 0.0  # the evaluations' own energy
    # (step, training kWh so far without evaluations, total kWh so far, FID, KID) per evaluation
    curve: list[tuple[int, float, float, float, float]] = field(default_factory=list)

    @property
    def final_fid(self) -> float:
        return self.curve[-1][3]

    def training_kwh_to(self, target: float) -> float | None:
        """Training energy (evaluations excluded) up to the first evaluation at or below ``target``."""
        return self._first_reaching(target, column=1)

    def total_kwh_to(self, target: float) -> float | None:
        """The same with the evaluations' energy included."""
        return self._first_reaching(target, column=2)

    def _first_reaching(self, target: float, column: int) -> float | None:
        return next((point[column] for point in self.curve if point[3] <= target), None)


def train(name: str, seed: int, flags: list[str], common: list[str], root: Path, env: dict) -> Run:
    out = root / f"{name.replace('/', '-').replace('+', 'plus-')}-{seed}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([EXE, "train", *common, *flags, "--seed", str(seed), "--name", "run", "--output-dir", str(out)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name} (seed {seed}) failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (run_dir,) = out.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    emissions = json.loads((run_dir / "emissions.json").read_text())
    run = Run(name, seed, str(run_dir), wall_s=wall, cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
              total_kwh=emissions["energy_kwh"], stop_reason=emissions.get("stop_reason", ""))
    eval_kwh = 0.0
    for r in records:
        if r.get("event") == "eval":
            eval_kwh += r["eval_energy_kwh"]
            run.curve.append((r["step"], r["energy_kwh"] - eval_kwh, r["energy_kwh"], r["fid"], r["kid"]))
        run.steps = max(run.steps, r.get("step", 0))
    run.eval_kwh = eval_kwh
    print(f"  {name:<22} seed {seed}: {run.steps} steps, {wall:.0f} s, {run.total_kwh * 1e3:.3f} Wh, "
          f"final FID {run.final_fid:.2f} ({run.stop_reason})", flush=True)
    return run


def sampling_cost(run_dir: Path, n: int, steps: int, sampler: str) -> float:
    """Energy per image (J) of sampling ``n`` images from ``run_dir`` with ``sampler``/``steps``, in this process."""
    import dataclasses

    import torch

    from greendiff.energy import EnergyMonitor
    from greendiff.train import load_run_model, make_noise_scheduler, make_sampler, sample_images

    config, unet, _ = load_run_model(run_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    optim = dataclasses.replace(config.optim, sampler=sampler)
    chosen = make_sampler(optim, make_noise_scheduler(optim))
    monitor = EnergyMonitor.detect()
    try:
        with monitor.window("sample") as result, torch.no_grad():
            sample_images(unet.to(device), chosen, n, steps, (1, config.data.resolution, config.data.resolution),
                          torch.Generator().manual_seed(0), device)
        return result.measurement.total_energy_j
    finally:
        monitor.close()


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}x (1 seed)"
    return f"{statistics.mean(values):.1f}x (seeds: {', '.join(f'{v:.1f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument("--full", action="store_const", dest="mode", const="full")
    parser.add_argument("--seeds", type=int, help="Seeds of the baseline/green pairs (default: the mode's).")
    parser.add_argument("--ablation-seeds", type=int, help="Seeds of the ablation (default: the mode's).")
    parser.add_argument("--max-steps", type=int, help="Step cap of every run (default: the mode's).")
    parser.add_argument("--write-benchmarks", action="store_true")
    parser.add_argument("--render", action="store_true",
                        help="Only rewrite the tables (and BENCHMARKS.md with --write-benchmarks) from the mode's saved results.")
    args = parser.parse_args()
    if args.render:
        result = json.loads((RESULTS / f"energy_to_quality_{args.mode}.json").read_text())
        table = render_table(result)
        (RESULTS / f"energy_to_quality_{args.mode}.md").write_text(table + "\n")
        print(table)
        if args.write_benchmarks:
            write_section(f"energy_to_quality_{args.mode}", render_benchmarks(result, table, result["command"]))
        return
    m = dict(MODES[args.mode])
    for key in ("seeds", "ablation_seeds", "max_steps"):
        if getattr(args, key) is not None:
            m[key] = getattr(args, key)
    eval_every = max(1, m["max_steps"] // m["evals"])
    common = ["--preset", m["preset"], "--resolution", str(m["resolution"]), "--max-steps", str(m["max_steps"]),
              "--sampler", "ddim", "--sample-steps", str(m["eval_sample_steps"]), "--eval-samples", str(m["eval_samples"]),
              "--set", "stop.spread_seeds=1", "--set", f"run.sample_every={m['max_steps']}",
              "--set", f"run.checkpoint_every={m['max_steps']}", "--set", "run.log_every=50", "--country", "FRA"]
    t_start = time.perf_counter()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "GREENDIFF_LEDGER": f"{tmp}/ledger.sqlite", "GREENDIFF_CACHE_DIR": f"{tmp}/cache"}
        # the reference features are computed once here, so no run pays for them
        subprocess.run([sys.executable, "-c", "from greendiff.data import load_dataset; from greendiff.evaluate import "
                        "reference_features, resolve_extractor; e, _ = resolve_extractor('mnist'); "
                        f"reference_features(load_dataset('mnist', {m['resolution']}).images, e)"], check=True, env=env)
        targets = {}
        for seed in range(m["seeds"]):
            print(f"seed {seed}", flush=True)
            base = train("baseline", seed, [*BASELINE, "--eval-every", str(eval_every)], common, root, env)
            base_ema = train("baseline+ema", seed, [*BASELINE, "--ema", "--eval-every", str(eval_every)], common, root, env)
            # every later run: evaluated on the same energy schedule (a fixed fraction of the baseline's
            # energy), stopped at the target, and stopped when it has used as much energy as the
            # reference without reaching it (a ratio below 1: a failure, and no reason to go on)
            every_kwh = base.total_kwh / m["evals_per_baseline"]
            budget_kwh = max(base.total_kwh, base_ema.total_kwh)
            targets[seed] = {"baseline": base.final_fid, "baseline+ema": base_ema.final_fid, "every_kwh": every_kwh,
                             "budget_kwh": budget_kwh}
            stop_at = min(base.final_fid, base_ema.final_fid)
            green_flags = ["--eval-every-kwh", f"{every_kwh:.6g}", "--target-fid", f"{stop_at:.6g}",
                           "--budget-kwh", f"{budget_kwh:.6g}"]
            runs += [base, base_ema, train("green", seed, green_flags, common, root, env),
                     train(f"green-{m['small']}", seed, [*green_flags, "--preset", m["small"]], common, root, env)]
        ablation = []
        precision_native = auto_precision() != "no"
        for seed in range(m["ablation_seeds"]):
            print(f"ablation, seed {seed}", flush=True)
            t = targets[seed]
            for lever, flags in levers(m["preset"], m["small"]).items():
                if lever == "+mixed precision" and not precision_native:
                    continue
                ablation.append(train(lever, seed, [*BASELINE, *flags, "--eval-every-kwh", f"{t['every_kwh']:.6g}",
                                                    "--target-fid", f"{t['baseline']:.6g}",
                                                    "--budget-kwh", f"{t['budget_kwh']:.6g}"], common, root, env))
        base0 = Path(runs[0].run_dir)  # the first baseline: the cost of sampling one image either way
        per_image_j = {"ddpm-1000": sampling_cost(base0, 16, 1000, "ddpm") / 16,
                       f"ddim-{m['eval_sample_steps']}": sampling_cost(base0, 64, m["eval_sample_steps"], "ddim") / 64}
    result = summarize(m, args.mode, runs, ablation, targets, per_image_j, precision_native, time.perf_counter() - t_start)
    result["command"] = " ".join(sys.argv)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"energy_to_quality_{args.mode}.json").write_text(json.dumps(result, indent=2))
    table = render_table(result)
    (RESULTS / f"energy_to_quality_{args.mode}.md").write_text(table + "\n")
    plot(runs + ablation, targets, RESULTS / f"energy_to_quality_{args.mode}.png")
    print(table)
    if args.write_benchmarks:
        write_section(f"energy_to_quality_{args.mode}", render_benchmarks(result, table, result["command"]))


def auto_precision() -> str:
    """The precision ``--mixed-precision auto`` picks here ("no" where none runs natively)."""
    import torch

    from greendiff.train import resolve_precision

    return resolve_precision("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))[0]


def summarize(m: dict, mode: str, runs: list[Run], ablation: list[Run], targets: dict, per_image_j: dict,
              precision_native: bool, elapsed_s: float) -> dict:
    rows, ratios = [], {"baseline": [], "baseline+ema": []}
    for seed, t in targets.items():
        for ref in ("baseline", "baseline+ema"):
            ref_run = next(r for r in runs if r.name == ref and r.seed == seed)
            ref_kwh = ref_run.training_kwh_to(t[ref])
            for r in (x for x in runs if x.seed == seed and x.name.startswith("green")):
                total = r.total_kwh_to(t[ref])
                rows.append({"reference": ref, "seed": seed, "run": r.name, "target_fid": t[ref],
                             "reference_kwh": ref_kwh, "training_kwh": r.training_kwh_to(t[ref]), "total_kwh": total,
                             "ratio": ref_kwh / total if total else None})
                if r.name == "green":
                    ratios[ref].append(ref_kwh / total if total else 0.0)  # 0: not reached
    lever_rows = []
    for r in ablation:
        t = targets[r.seed]
        base = next(x for x in runs if x.name == "baseline" and x.seed == r.seed)
        reached = r.training_kwh_to(t["baseline"])
        lever_rows.append({"lever": r.name, "seed": r.seed, "steps": r.steps, "training_kwh": reached,
                           "gain": base.training_kwh_to(t["baseline"]) / reached if reached else None,
                           "final_fid": r.final_fid})
    ema_rows = []  # the EMA lever is the baseline+ema run of the pairs
    for seed in sorted({a.seed for a in ablation}):
        target = targets[seed]["baseline"]
        base_kwh, ema_kwh = (next(x for x in runs if x.name == name and x.seed == seed).training_kwh_to(target)
                             for name in ("baseline", "baseline+ema"))
        ema_rows.append({"lever": "+ema", "seed": seed, "training_kwh": ema_kwh, "gain": base_kwh / ema_kwh if ema_kwh else None})
    stopping_rows = []  # early stopping (--target-fid) inside the green runs: the stop against the full schedule
    for r in (x for x in runs if x.name == "green"):
        per_step = r.curve[-1][1] / r.curve[-1][0]  # measured training energy per step, start-up included
        full_kwh = per_step * m["max_steps"]
        stopping_rows.append({"lever": "early stopping at the target (green run)", "seed": r.seed, "stopped_at": r.curve[-1][0],
                              "total_kwh": r.total_kwh, "full_schedule_kwh": full_kwh, "gain": full_kwh / r.total_kwh})
    return {"date": today(), "machine": machine(), "mode": mode, "settings": m, "elapsed_s": elapsed_s,
            "early_stopping": stopping_rows,
            "runs": [asdict(r) for r in runs], "ablation": [asdict(r) for r in ablation], "targets": targets,
            "comparisons": rows, "ratios": ratios, "levers": lever_rows, "ema": ema_rows,
            "sampling_j_per_image": per_image_j, "mixed_precision_native": precision_native}


def render_table(result: dict) -> str:
    def wh(x: float | None) -> str:
        return "not reached" if x is None else f"{x * 1e3:.3f} Wh"

    lines = ["| run | seed | steps | wall | CPU-s | total energy (evals incl.) | of which evals | final FID | stop |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["runs"] + result["ablation"]:
        lines.append(f"| {r['name']} | {r['seed']} | {r['steps']} | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} | "
                     f"{wh(r['total_kwh'])} | {wh(r['eval_kwh'])} | {r['curve'][-1][3]:.2f} | {r['stop_reason']} |")
    lines += ["", "| reference (target = its final FID) | seed | target FID | reference: training energy to reach | run | "
              "its training energy | its total energy (evals incl.) | ratio (reference / total) |", "|---|---:|---:|---:|---|---:|---:|---:|"]
    for c in result["comparisons"]:
        ratio = "—" if c["ratio"] is None else f"{c['ratio']:.1f}x"
        lines.append(f"| {c['reference']} | {c['seed']} | {c['target_fid']:.2f} | {wh(c['reference_kwh'])} | {c['run']} | "
                     f"{wh(c['training_kwh'])} | {wh(c['total_kwh'])} | {ratio} |")
    lines += ["", "| lever (added to the baseline alone) | seed | training energy to reach the baseline's final FID | "
              "gain over the baseline |", "|---|---:|---:|---:|"]
    for lv in result["ema"] + result["levers"]:
        gain = "not reached" if lv["gain"] is None else f"{lv['gain']:.2f}x"
        lines.append(f"| {lv['lever']} | {lv['seed']} | {wh(lv['training_kwh'])} | {gain} |")
    for e in result.get("early_stopping", []):
        lines.append(f"| {e['lever']} | {e['seed']} | stopped at step {e['stopped_at']} of {result['settings']['max_steps']}: "
                     f"{wh(e['total_kwh'])} (evals incl.) against ~{wh(e['full_schedule_kwh'])} for the full schedule "
                     f"(its measured energy per step × steps) | {e['gain']:.1f}x |")
    if not result["mixed_precision_native"]:
        lines.append("| +mixed precision | — | not run: `auto` picks fp32 on this CPU (no native bf16), so the run would "
                     "be the baseline itself | 1.00x |")
    j = result["sampling_j_per_image"]
    (ddpm, ddpm_j), (ddim, ddim_j) = list(j.items())
    lines.append(f"| few-step sampler (sampling, not training) | 0 | {ddpm}: {ddpm_j:.2f} J/image, {ddim}: {ddim_j:.3f} J/image | "
                 f"{ddpm_j / ddim_j:.0f}x per image sampled |")
    return "\n".join(lines)


def render_benchmarks(result: dict, table: str, command: str) -> str:
    m = result["settings"]
    # the headline is the less flattering of the two references (the mean ratio over seeds)
    by_ref = {ref: values for ref, values in result["ratios"].items() if values}
    ref = min(by_ref, key=lambda k: statistics.mean(by_ref[k])) if by_ref else "baseline"
    worst = by_ref.get(ref, [0.0])
    other = [k for k in by_ref if k != ref]
    headline = f"energy-to-quality: {statistics.mean(worst):.1f}x less energy"
    met = min(worst) >= 4 and all(min(v) >= 4 for v in by_ref.values())
    names = {"baseline": "diffusers' defaults", "baseline+ema": "diffusers' example as its README runs it, `--use_ema`"}
    return "\n".join([
        f"## Energy to quality, green vs the diffusers-default baseline (`bench/energy_to_quality.py --{result['mode']}`)", "",
        f"- Command: `python {command}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
        f"- Bench wall time: {result['elapsed_s'] / 60:.1f} min (quick-mode target ≤ 25 min)",
        f"- Data: bundled MNIST at {m['resolution']}x{m['resolution']}; model preset `{m['preset']}` for both recipes, "
        f"`{m['small']}` for green's smaller variant; at most {m['max_steps']} steps per run; evaluation: FID on MNIST "
        f"features, {m['eval_samples']} samples, DDIM {m['eval_sample_steps']} steps, same noise seed; the baselines "
        f"{m['evals']} times per run, every later run each time it has used 1/{m['evals_per_baseline']} of the "
        f"baseline's energy.", "",
        f"**{headline}** (against {names[ref]}, the less flattering reference here; mean over {len(worst)} seeds, "
        f"per seed {', '.join(f'{r:.1f}x' for r in worst)}; 0 would mean not reached)"
        + "".join(f"; against {names[k]}: {spread(by_ref[k])}" for k in other)
        + f". Target ≥ 4x in every seed against both → **{'met' if met else 'NOT met'}**; stretch 8x in every seed → "
        f"**{'met' if min(worst) >= 8 else 'not met'}**.", "",
        table, "",
        f"Table, plot and raw curves: `bench/results/energy_to_quality_{result['mode']}.{{md,png,json}}`.",
    ])


def plot(runs: list[Run], targets: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in runs:
        ax.plot([c[2] * 1e3 for c in r.curve], [c[3] for c in r.curve], marker="o", markersize=3,
                label=f"{r.name} (seed {r.seed})", linestyle="-" if r.name.startswith(("baseline", "green")) else ":")
    for seed, t in targets.items():
        ax.axhline(t["baseline+ema"], color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlabel="energy used (Wh, evaluations included)", ylabel="FID (MNIST features)", yscale="log",
           title="Quality vs energy; dashed: baseline+EMA final FID per seed")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
