"""Tables and the BENCHMARKS.md section of ``bench/energy_to_quality.py`` (pure: dicts in, text out)."""

from __future__ import annotations

import statistics

from _e2q_plan import Mode
from _e2q_runs import final_fid, reach
from _report import machine, today

TARGETS = {"tuned baseline": 4.0, "diffusers defaults": 10.0}  # the issue's: in every seed


def ratio_vs(ref: dict, green: dict | None, target: float) -> dict:
    """One seed's ratio: the reference's energy before its reaching evaluation (the lower end of its bracket;
    its first evaluation's energy when that one reached it) over green's at its reaching evaluation. A
    reference that missed the target (within its budget, or the tuned baseline within its schedule) gives a
    lower bound from all its training energy."""
    got = reach(green, target) if green and "failed" not in green else None
    if got is None:
        return {"ratio": None, "bound": False, "note": "green v2 missed the target"}
    if "failed" in ref:
        return {"ratio": None, "bound": False, "note": f"reference failed: {ref['failed']}"}
    hit = reach(ref, target)
    if hit is not None:
        return {"ratio": hit[0] / got[1] if hit[0] else hit[1] / got[1], "bound": False, "note": ""}
    return {"ratio": ref["train_kwh"] / got[1], "bound": True, "note": "the reference missed the target"}


def summarize(mode_name: str, mode: Mode, parts: dict, spent_s: float, command: str, threads: str) -> dict:
    """Everything the tables need, JSON-ready (run records included, so ``--render`` needs no rerun)."""
    ctx, target = parts["ctx"], parts["ctx"]["target"]
    green_by_seed = {}
    for run in parts["green"]:
        green_by_seed[run["seed"]] = run  # the last horizon tried: the one that reached, or the widest
    headline = {}
    for label, refs in (("tuned baseline", parts["tuned"]), ("lr-only at batch 16", parts["references"]["lr-only"]),
                        ("diffusers defaults", parts["references"]["defaults"])):
        headline[label] = [ratio_vs(ref, green_by_seed.get(seed), target) for seed, ref in enumerate(refs)]
    return {"date": today(), "machine": machine(), "threads": threads, "mode": mode_name, "settings": mode.__dict__ | {"tag": mode.tag},
            "command": command, "sitting_s": spent_s, "context": ctx, "headline": headline, **parts}


def per_seed(values: list[dict]) -> str:
    return ", ".join("missed" if v["ratio"] is None else f"{'>= ' if v['bound'] else ''}{v['ratio']:.1f}x" for v in values)


def headline_line(label: str, values: list[dict]) -> str:
    """``energy-to-quality vs <label>: N.Nx`` (``>= N.Nx`` when a seed is a bound), per seed after it."""
    if not values or any(v["ratio"] is None for v in values):
        note = next((v["note"] for v in values if v["ratio"] is None), "not yet run")
        return f"energy-to-quality vs {label}: n/a ({note}; per seed: {per_seed(values)})"
    mean = statistics.mean(v["ratio"] for v in values)
    bound = ">= " if any(v["bound"] for v in values) else ""
    goal = TARGETS.get(label)
    verdict = "" if goal is None else (f"; target >= {goal:g}x in every seed: "
                                       f"{'met' if min(v['ratio'] for v in values) >= goal else 'NOT met'}")
    return f"energy-to-quality vs {label}: {bound}{mean:.1f}x (per seed: {per_seed(values)}{verdict})"


def keys(sets: dict) -> str:
    """``{"optim.lr": 0.001}`` as ``lr 0.001``."""
    return ", ".join(f"{key.split('.')[-1]} {str(value).replace('{encoder}', 'the bench encoder')}"
                     for key, value in sets.items())


def wh(kwh: float | None) -> str:
    return "—" if kwh is None else f"{kwh * 1e3:.4f} Wh"


def bracket(run: dict, target: float) -> str:
    if "failed" in run:
        return f"failed: {run['failed']}"
    hit = reach(run, target)
    return f"not reached in {wh(run['train_kwh'])}" if hit is None else f"{wh(hit[0])} – {wh(hit[1])}"


def flatness(tuned: list[dict], spread: float) -> str:
    """The tuned curve's last quarter: mean FID at the evaluation nearest 3/4 of the schedule vs the end."""
    at = []
    for run in tuned:
        quarter = 0.75 * run["curve"][-1]["step"]
        at.append(min(run["curve"], key=lambda p: abs(p["step"] - quarter))["fid"])
    drop = statistics.mean(at) - statistics.mean(final_fid(r) for r in tuned)
    return (f"FID at 3/4 of the schedule {statistics.mean(at):.2f} → end {statistics.mean(final_fid(r) for r in tuned):.2f}: "
            f"{'flat' if drop <= spread else 'NOT flat'} within the seed spread ({spread:.2f})")


def render_table(result: dict) -> str:
    ctx, target = result["context"], result["context"]["target"]
    pending = result.get("pending") or []
    lines = [*([f"**Partial result: not yet run: {'; '.join(pending)}.** The next sitting continues from the cache.", ""]
               if pending else []),
             *(f"{headline_line(label, values)}  " for label, values in result["headline"].items()), "",
             f"Target FID {target:.2f} = tuned baseline's final FID {statistics.mean(ctx['finals']):.2f} + seed spread "
             f"{ctx['spread']:.2f} (seeds: {', '.join(f'{f:.2f}' for f in ctx['finals'])}); {flatness(result['tuned'], ctx['spread'])}.",
             "", "| sweep candidate (defaults + …) | steps | final FID | energy |", "|---|---:|---:|---:|"]
    for r in result["sweep"]:
        lines.append(f"| {keys(r['sets'])} | {r.get('steps', '—')} | "
                     f"{r.get('failed') or f'{final_fid(r):.2f}'} | {wh(r.get('total_kwh'))} |")
    same = " (the same runs: the sweep's best is itself at batch 16 with the defaults' warm-up)" \
        if ctx["lr_only"] == ctx["tuned_sets"] else ""
    lines += ["", f"Tuned baseline: {keys(ctx['tuned_sets'])}; lr-only at batch 16: {keys(ctx['lr_only'])}{same}; the "
              f"sweep's {wh(ctx['sweep_kwh'])} is charged to no one.", "",
              "| seed | tuned baseline | lr-only at batch 16 | diffusers defaults (--ema) | green v2 (budgets tried) | "
              "green v2's evaluations |", "|---:|---|---|---|---|---:|"]
    refs = result["references"]
    for seed, tuned in enumerate(result["tuned"]):
        green = next((g for g in reversed(result["green"]) if g["seed"] == seed), {"failed": "not run"})
        lr_only = refs["lr-only"][seed] if seed < len(refs["lr-only"]) else None
        lines.append(f"| {seed} | {bracket(tuned, target)} | {bracket(lr_only, target) if lr_only else '— (one seed)'} | "
                     f"{bracket(refs['defaults'][seed], target) if seed < len(refs['defaults']) else 'not yet run'} | "
                     f"{bracket(green, target)} "
                     f"({horizons(result['green'], seed, target)}) | {wh(green.get('eval_kwh'))} |")
    tuned_at = ", ".join(str(reach_step(r, target) or "missed") for r in result["tuned"])
    lines += ["", f"| lever | seed | training energy to the target | gain vs tuned baseline | energy per step vs tuned "
              f"| steps to the target (tuned: {tuned_at}) | final FID | stop |", "|---|---:|---|---:|---:|---:|---:|---|"]
    tuned_step = [r["step_j"] for r in result["tuned"] if r.get("step_j")]
    for row in result["ablation"]:
        gain = result["context"]["gains"].get(row["variant"])
        cost = f"{row['step_j'] / statistics.mean(tuned_step):.2f}x" if row.get("step_j") and tuned_step else "—"
        lines.append(f"| {row['variant']} | {row['seed']} | {bracket(row, target)} | "
                     f"{'—' if gain is None else f'{gain:.2f}x'} | {cost} | {reach_step(row, target) or '—'} | "
                     f"{'—' if 'failed' in row else f'{final_fid(row):.2f}'} | {row.get('stop_reason', row.get('failed', ''))} |")
    enc = ctx.get("encoder", {})
    lines.append("\nThe few-step solvers are not lever rows (they change the evaluation, not training): "
                 "`bench/samplers.py` compares them, FID against sampler steps, on the tuned baseline's seed-0 run.")
    base = "green v1" if ctx.get("green_v2_base", "green") == "green" else "the tuned baseline's batch, LR and warm-up " \
        "(the base the levers were measured on; warm-up scaled with the budget)"
    lines += ["", f"Green v2 = {base} + {keys(ctx['green_v2_sets']) or 'nothing (no lever helped alone)'}. REPA's encoder "
              f"(not the FID network): {enc.get('failed') or enc.get('architecture', '?')}"
              + (f", {enc['steps']} steps, {enc['accuracy']:.1%} held-out digit accuracy" if "accuracy" in enc else "") + "."]
    lines += early_lines(result["early_stopping"])
    return "\n".join(lines)


def reach_step(run: dict, target: float) -> int | None:
    """The step of the first evaluation at or below ``target`` (steps do not depend on the machine's speed,
    energies do: they read a lever's effect on learning apart from the noise of a shared machine)."""
    return next((p["step"] for p in run.get("curve", []) if p["fid"] <= target), None)


def horizons(green: list[dict], seed: int, target: float) -> str:
    """The budgets green v2 tried in this seed, in tuned-baseline energies: ``0.2x missed, 0.5x reached``."""
    return ", ".join(f"{g['horizon']:g}x {'failed' if 'failed' in g else 'missed' if reach(g, target) is None else 'reached'}"
                     for g in green if g["seed"] == seed)


def early_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["", "Early stopping at good quality: not yet run."]
    out = ["", "| early stopping (plateau rule) | seed | stopped at / max steps | energy (evals incl.) | "
           "full run to max_steps | saving | final FID stopped / full |", "|---|---:|---|---:|---:|---:|---|"]
    for row in rows:
        p, f = row["plateau"], row["full"]
        if "failed" in p or "failed" in f:
            out.append(f"| green v2 | {row['seed']} | failed: {p.get('failed') or f.get('failed')} | | | | |")
            continue
        paid = p["train_kwh"] + p["eval_kwh"]
        out.append(f"| green v2, min-delta {row['min_delta']:.2f} | {row['seed']} | {p['steps']} / {row['max_steps']} | "
                   f"{wh(paid)} | {wh(f['train_kwh'])} | {f['train_kwh'] / paid:.1f}x | "
                   f"{final_fid(p):.2f} / {final_fid(f):.2f} |")
    return out


def green_precision(result: dict) -> str:
    return next((g.get("precision", "?") for g in result["green"] if "failed" not in g), "?")


def render_benchmarks(result: dict, table: str) -> str:
    m = result["settings"]
    return "\n".join([
        f"## Energy to quality at good quality, green v2 vs a tuned baseline (`bench/energy_to_quality.py --{result['mode']}`)",
        "", f"- Command: `python {result['command']}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
        f"- Threads: {result['threads']}; precision: tuned baseline "
        f"{result['tuned'][0].get('precision', '?')}, green v2 {green_precision(result)} (`auto` picks bf16 only where the CPU runs it natively)",
        f"- Data: {m['dataset']} at {m['resolution']}x{m['resolution']}, preset `{m['preset']}` for every run; FID on "
        f"MNIST features, {m['eval_samples']} samples, DDIM {m['eval_sample_steps']} steps, fixed noise seed.",
        "- Energy is training energy: evaluations and previews are left out of every comparison (previews: none "
        "during runs, the closing one's `sample` phase subtracted); ratios take the lower end of the reference's "
        "evaluation bracket over the upper end of green's.", "",
        table, "", "Raw runs and curves: `bench/results/energy_to_quality/`.",
    ])
