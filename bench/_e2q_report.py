"""Tables and the BENCHMARKS.md section of ``bench/energy_to_quality.py`` (pure: dicts in, text out)."""

from __future__ import annotations

import statistics

from _e2q_plan import Mode
from _e2q_runs import KWH_PER_J, crossing, final_fid, reach
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


def steps_bracket(run: dict, target: float) -> tuple[int, int] | None:
    """The steps bracketing the first evaluation at or below ``target``: (the evaluation's before it, or its own
    when it is the first; its own). None when the run never reached it."""
    hit = crossing(run, target)
    return None if hit is None else ((hit[0] or hit[1])["step"], hit[1]["step"])


def overhead_j(run: dict) -> float:
    """A run's training energy outside its steps (start-up, checkpoints, logging), as metered."""
    return max(0.0, run["train_kwh"] / KWH_PER_J - run["step_j"] * run["steps"])


def calibration(rounds: list[dict]) -> dict[str, float]:
    """Joules per step per configuration from :meth:`Proof.calibrate`'s rounds: the tuned baseline's median over
    the rounds; each other's, that times the median of its per-round ratio to the tuned step (a ratio within a
    round is what the VM's drift leaves alone). Empty while any round is missing or failed."""
    if not rounds or any("failed" in r or "step_j" not in r for rnd in rounds for r in rnd["runs"].values()):
        return {}
    tuned = statistics.median(rnd["runs"]["tuned baseline"]["step_j"] for rnd in rounds)
    return {label: tuned * statistics.median(rnd["runs"][label]["step_j"] / rnd["runs"]["tuned baseline"]["step_j"]
                                             for rnd in rounds) for label in rounds[0]["runs"]}


def calibrated_vs(ref: dict, green: dict | None, target: float, j_ref: float, j_green: float) -> dict:
    """One seed's ratio on the calibrated estimate: steps x the configuration's calibrated joules per step, plus
    the run's own metered overhead (green's in full; the reference's in proportion to the steps it is charged
    with). The reference is charged to the evaluation before its reaching one, green to its reaching one (as
    :func:`ratio_vs`); a reference that missed gives a bound from all its steps."""
    got = steps_bracket(green, target) if green and "failed" not in green else None
    if got is None:
        return {"ratio": None, "bound": False, "note": "green v2 missed the target"}
    if "failed" in ref:
        return {"ratio": None, "bound": False, "note": f"reference failed: {ref['failed']}"}
    green_j = got[1] * j_green + overhead_j(green)
    hit = steps_bracket(ref, target)
    steps = ref["steps"] if hit is None else hit[0]
    ref_j = steps * j_ref + overhead_j(ref) * steps / ref["steps"]
    return {"ratio": ref_j / green_j, "bound": hit is None, "steps": [steps, got[1]],
            "note": "the reference missed the target" if hit is None else ""}


def same_training(coarse: list[dict], fine: list[dict]) -> str:
    """Whether the fine reruns trained as the coarse runs did: their FIDs at the steps both evaluated."""
    diffs = []
    for a, b in zip(coarse, fine):
        at = {p["step"]: p["fid"] for p in b.get("curve", [])}
        diffs += [abs(p["fid"] - at[p["step"]]) for p in a.get("curve", []) if p["step"] in at]
    if not diffs:
        return "no shared evaluation step"
    return f"{len(diffs)} shared evaluations, largest FID difference {max(diffs):.3g}"


def summarize(mode_name: str, mode: Mode, parts: dict, spent_s: float, command: str, threads: str) -> dict:
    """Everything the tables need, JSON-ready (run records included, so ``--render`` needs no rerun). The tuned
    side of the headline is the fine reruns once they exist. ``headline``: the calibrated estimate once the
    calibration exists (else the metered one); ``metered``: energies as metered run by run."""
    ctx, target = parts["ctx"], parts["ctx"]["target"]
    green_by_seed = {}
    for run in parts["green"]:
        green_by_seed[run["seed"]] = run  # the last horizon tried: the one that reached, or the widest
    tuned = parts.get("tuned_fine") or parts["tuned"]
    lr_only = tuned if ctx["lr_only"] == ctx["tuned_sets"] else parts["references"]["lr-only"]
    refs = {"tuned baseline": ("tuned baseline", tuned), "lr-only at batch 16": ("tuned baseline", lr_only),
            "diffusers defaults": ("diffusers defaults", parts["references"]["defaults"])}
    cal = calibration(parts.get("calibration") or [])
    metered = {label: [ratio_vs(ref, green_by_seed.get(seed), target) for seed, ref in enumerate(runs)]
               for label, (_, runs) in refs.items()}
    calibrated = {label: [calibrated_vs(ref, green_by_seed.get(seed), target, cal[config], cal["green v2"])
                          for seed, ref in enumerate(runs)] for label, (config, runs) in refs.items()} if cal else {}
    return {"date": today(), "machine": machine(), "threads": threads, "mode": mode_name, "settings": mode.__dict__ | {"tag": mode.tag},
            "command": command, "sitting_s": spent_s, "context": ctx, "headline": calibrated or metered,
            "basis": "calibrated" if calibrated else "metered", "metered": metered, "step_j": cal, **parts}


def per_seed(values: list[dict]) -> str:
    return ", ".join("missed" if v["ratio"] is None else f"{'>= ' if v['bound'] else ''}{v['ratio']:.1f}x" for v in values)


def headline_line(label: str, values: list[dict], seeds: int, prefix: str = "energy-to-quality vs") -> str:
    """``energy-to-quality vs <label>: N.Nx`` (``>= N.Nx`` when a seed is a bound), per seed after it; n/a until
    ``seeds`` seeds have run (a headline over fewer seeds would read as the proof's)."""
    if not values or any(v["ratio"] is None for v in values) or len(values) < seeds:
        note = next((v["note"] for v in values if v["ratio"] is None), f"{len(values)} of {seeds} seeds run")
        return f"{prefix} {label}: n/a ({note}; per seed: {per_seed(values) or 'none'})"
    mean = statistics.mean(v["ratio"] for v in values)
    bound = ">= " if any(v["bound"] for v in values) else ""
    goal = TARGETS.get(label)
    verdict = "" if goal is None else (f"; target >= {goal:g}x in every seed: "
                                       f"{'met' if min(v['ratio'] for v in values) >= goal else 'NOT met'}")
    return f"{prefix} {label}: {bound}{mean:.1f}x (per seed: {per_seed(values)}{verdict})"


def headline_lines(result: dict) -> list[str]:
    """The headline (calibrated when the calibration ran) and, beside it, the energies as metered run by run."""
    seeds = {label: len(result["tuned"]) if label != "lr-only at batch 16" or result["context"]["lr_only"] ==
             result["context"]["tuned_sets"] else result["settings"]["ablation_seeds"] for label in result["headline"]}
    lines = [f"{headline_line(label, values, seeds[label])}  " for label, values in result["headline"].items()]
    if result.get("basis") == "calibrated":
        lines += ["", "Metered as run (each run's own metered energy; moved by the VM's speed between runs):  ",
                  *(f"{headline_line(label, values, seeds[label], 'metered as run, vs')}  "
                    for label, values in result["metered"].items())]
    return lines


def calibration_lines(rounds: list[dict], cal: dict[str, float], what: str = "calibration round") -> list[str]:
    """Side-by-side rounds of joules per step and the calibrated values (each against the tuned baseline's)."""
    if not rounds:
        return ["", f"Per-step {what.split(' round')[0]}: not yet run."]
    labels = list(rounds[0]["runs"])
    out = ["", f"| {what} (order) | " + " | ".join(f"{label} J/step" for label in labels) + " | "
           + " | ".join(f"{label} / tuned" for label in labels[1:]) + " |", "|---|" + "---:|" * (2 * len(labels) - 1)]
    for k, rnd in enumerate(rounds):
        runs = rnd["runs"]
        if any("failed" in r for r in runs.values()):
            out.append(f"| {k} | failed: {next(r['failed'] for r in runs.values() if 'failed' in r)} |")
            continue
        ratios = [runs[lb]["step_j"] / runs["tuned baseline"]["step_j"] for lb in labels[1:]]
        out.append(f"| {k} | " + " | ".join(f"{runs[lb]['step_j']:.3f}" for lb in labels) + " | "
                   + " | ".join(f"{r:.3f}" for r in ratios) + " |")
    if cal:
        out.append("| **calibrated** (tuned: median; others: median ratio x it) | "
                   + " | ".join(f"**{cal[lb]:.3f}**" for lb in labels) + " | "
                   + " | ".join(f"**{cal[lb] / cal['tuned baseline']:.3f}**" for lb in labels[1:]) + " |")
    return out


def keys(sets: dict) -> str:
    """``{"optim.lr": 0.001}`` as ``lr 0.001``."""
    return ", ".join(f"{key.split('.')[-1]} {str(value).replace('{encoder}', 'the bench encoder')}"
                     for key, value in sets.items())


def wh(kwh: float | None) -> str:
    return "—" if kwh is None else f"{kwh * 1e3:.4f} Wh"


def bracket(run: dict, target: float) -> str:
    if "failed" in run:
        return f"failed: {run['failed']}"
    hit, steps = reach(run, target), steps_bracket(run, target)
    if hit is None:
        return f"not reached in {wh(run['train_kwh'])} ({run['steps']} steps)"
    return f"{wh(hit[0])} – {wh(hit[1])} (steps {steps[0]}–{steps[1]})"


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
             *headline_lines(result), "",
             f"Target FID {target:.2f} = tuned baseline's final FID {statistics.mean(ctx['finals']):.2f} + seed spread "
             f"{ctx['spread']:.2f} (seeds: {', '.join(f'{f:.2f}' for f in ctx['finals'])}); {flatness(result['tuned'], ctx['spread'])}.",
             "", "| sweep candidate (defaults + …) | steps | final FID | energy |", "|---|---:|---:|---:|"]
    for r in result["sweep"]:
        lines.append(f"| {keys(r['sets'])} | {r.get('steps', '—')} | "
                     f"{r.get('failed') or f'{final_fid(r):.2f}'} | {wh(r.get('total_kwh'))} |")
    refs, fine = result["references"], result.get("tuned_fine") or []
    tuned_head = "tuned baseline" + (f" (rerun: evaluated every 1/{result['settings']['fine_evals']} of its schedule, "
                                     "stopped at the target)" if fine else "")
    same = " (the same runs: the sweep's best is itself at batch 16 with the defaults' warm-up)" \
        if ctx["lr_only"] == ctx["tuned_sets"] else ""
    lines += ["", f"Tuned baseline: {keys(ctx['tuned_sets'])}; lr-only at batch 16: {keys(ctx['lr_only'])}{same}; the "
              f"sweep's {wh(ctx['sweep_kwh'])} is charged to no one.", "",
              f"| seed | {tuned_head} | lr-only at batch 16 | diffusers defaults (--ema) | green v2 (budgets tried) | "
              "green v2's evaluations |", "|---:|---|---|---|---|---:|"]
    for seed, tuned in enumerate(fine or result["tuned"]):
        green = next((g for g in reversed(result["green"]) if g["seed"] == seed), {"failed": "not run"})
        lr_only = refs["lr-only"][seed] if seed < len(refs["lr-only"]) else None
        lines.append(f"| {seed} | {bracket(tuned, target)} | {bracket(lr_only, target) if lr_only else '— (one seed)'} | "
                     f"{bracket(refs['defaults'][seed], target) if seed < len(refs['defaults']) else 'not yet run'} | "
                     f"{bracket(green, target)} "
                     f"({horizons(result['green'], seed, target)}) | {wh(green.get('eval_kwh'))} |")
    if fine:
        lines += ["", f"The tuned baseline's reruns trained as its first runs did ({same_training(result['tuned'], fine)});"
                  f" evaluated {result['settings']['fine_evals'] / result['settings']['tuned_evals']:g}x as often, so the "
                  "bracket the headline"
                  " charges it with is that much narrower."]
    lines += calibration_lines(result.get("calibration") or [], result.get("step_j") or {})
    tuned_at = ", ".join(str(reach_step(r, target) or "missed") for r in result["tuned"])
    lines += ["", f"| lever | seed | training energy to the target (metered) | steps to the target (tuned: {tuned_at}) "
              "| J/step vs tuned (side by side) | gain vs tuned (steps x J/step) | metered gain | final FID | stop |",
              "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    cost, metered = ctx.get("lever_step_j") or {}, ctx.get("metered_gains") or {}
    for row in result["ablation"]:
        name = row["variant"]
        gain, was = ctx["gains"].get(name), metered.get(name)
        per_step = f"{cost[name] / cost['tuned baseline']:.2f}x" if name in cost else "1 (the tuned step's work)"
        lines.append(f"| {name} | {row['seed']} | {bracket(row, target)} | {reach_step(row, target) or '—'} | {per_step} | "
                     f"{'—' if gain is None else f'{gain:.2f}x'} | {'—' if was is None else f'{was:.2f}x'} | "
                     f"{'—' if 'failed' in row else f'{final_fid(row):.2f}'} | {row.get('stop_reason', row.get('failed', ''))} |")
    lines += calibration_lines(ctx.get("lever_costs") or [], ctx.get("lever_step_j") or {}, "lever cost round")
    enc = ctx.get("encoder", {})
    lines.append("\nThe few-step solvers are not lever rows (they change the evaluation, not training): "
                 "`bench/samplers.py` compares them, FID against sampler steps, on the tuned baseline's seed-0 run.")
    base = "green v1" if ctx.get("green_v2_base", "green") == "green" else "the tuned baseline's batch, LR and warm-up " \
        "(the base the levers were measured on; warm-up scaled with the budget)"
    rule = ctx.get("green_v2_rule")
    fixed = "" if rule is None or rule == ctx["green_v2_sets"] else \
        (f" (fixed in `GREEN_V2`, `bench/_e2q_plan.py`, which says why; the rule on the lever rows' calibrated gains "
         f"alone would take {keys(rule) or 'nothing'})")
    lines += ["", f"Green v2 = {base} + {keys(ctx['green_v2_sets']) or 'nothing (no lever helped alone)'}{fixed}. REPA's encoder "
              f"(not the FID network): {enc.get('failed') or enc.get('architecture', '?')}"
              + (f", {enc['steps']} steps, {enc['accuracy']:.1%} held-out digit accuracy" if "accuracy" in enc else "") + "."]
    lines += early_lines(result["early_stopping"])
    return "\n".join(lines)


def reach_step(run: dict, target: float) -> int | None:
    """The step of the first evaluation at or below ``target`` (steps do not depend on the machine's speed,
    energies do: they read a lever's effect on learning apart from the noise of a shared machine)."""
    hit = crossing(run, target)
    return None if hit is None else hit[1]["step"]


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
        out.append(f"| green v2, patience {row.get('patience', 2)}, min-delta {row['min_delta']:.2f} | {row['seed']} | "
                   f"{p['steps']} / {row['max_steps']} | "
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
        "evaluation bracket over the upper end of green's.",
        *(["- Headline basis: the **calibrated estimate**: each run's steps (to those evaluations) x its "
           "configuration's joules per step measured side by side (the calibration table), plus the run's own "
           "metered overhead outside its steps; the VM's speed drifts up to 2x between sittings, which moves every "
           "metered energy. The metered ratios follow it."] if result.get("basis") == "calibrated" else []), "",
        table, "", "Raw runs and curves: `bench/results/energy_to_quality/`.",
    ])
