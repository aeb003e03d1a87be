"""The proof: energy to reach a tuned baseline's converged quality, green v2 against three references.

Same data, model, evaluation and seeds for every run (``bench/_e2q_plan.py`` holds the sizes and tables):

1. **sweep** (one seed): diffusers' defaults (``--recipe baseline --ema``, as its README runs the script
   with ``--use_ema``) plus each :data:`SWEEP` candidate (batch size, LR, warm-up), each on the same number of
   images (equal compute), scored by its final FID. Best overall: the **tuned baseline**; best at batch 16
   with the defaults' 500 warm-up steps: the **lr-only** reference. The sweep's energy is reported beside
   the table and charged to no one.
2. **tuned baseline**, every seed, its full schedule (``schedule_images``), evaluated ``tuned_evals`` times.
   **Target FID** = the mean of its final FIDs + their spread over seeds (the quality it reaches within
   seed noise); the curve's last quarter is checked for flatness (within that spread) and the verdict shown.
3. **references** (run after 4 to 7, so a sitting reaches the comparison with the tuned baseline first):
   the **defaults** (every seed) and **lr-only** (``ablation_seeds``; the tuned runs when it is the tuned
   baseline), each with a budget of ``defaults_budget_ratio`` x the tuned baseline's training energy (their LR horizon fitted to it), stopping
   at the target; one that misses it gives a lower bound ``>= N.Nx``.
4. **lever table** (``ablation_seeds``): each :data:`VARIANTS` row (one lever on the tuned baseline; green
   v1), to the target within the tuned baseline's energy; a failing or unknown lever shows as such.
5. **green v2** (green v1, or the tuned baseline's keys when green v1 was slower than it, plus the levers that
   helped alone; or :data:`GREEN_V2`), every seed, to the target with a
   budget of ``green_horizons`` x the tuned energy, the first horizon that reaches it kept.
6. **the tuned baseline, read finely**: its runs again (same keys and seeds, so the same training: checked at
   the steps both evaluated), evaluated ``fine_evals`` times over the schedule and stopped at the target;
   the headline's tuned side is these (a coarse run charges green with a wide bracket).
7. **per-step calibration**: the VM's speed drifts up to 2x between sittings and every metered energy moves
   with it, so a run's energy depends on when it ran. ``cal_rounds`` rounds of short runs of the tuned
   baseline, green v2 and the defaults side by side give each one's joules per step; the headline is the
   **calibrated estimate** (steps to the target x calibrated joules per step + the run's own metered
   overhead), the metered ratios printed beside it.
8. **early stopping at good quality**: green v2 with ``max_steps`` = ``early_stop_factor`` x the schedule,
   the plateau rule (each of :data:`EARLY_RULES`: patience, min-delta as a share of the seed spread) against
   the same run to the end.

Energy is *training* energy for every run (the ``train`` phase and its overheads): evaluations are the
instrument and previews are left out of every comparison (``run.sample_every`` = the run's length, and the
closing preview's ``sample`` phase subtracted). A reference's energy to reach the target is bracketed by its
evaluations; ratios divide the lower end of the reference's bracket by the upper end of green's (the less
flattering reading). Threads and bf16 capability are recorded (``bench/_report.py`` ``machine()``).

Resumable: each (run, seed) result is cached in ``bench/results/energy_to_quality/<mode>/<mode>-<tag>-<name>.json``
(the tag hashes the mode's sizes; each name hashes what that run depends on: a sweep candidate's keys, the
tuned baseline's keys, and for every later run its own keys plus the tuned context: picks, target FID and the
tuned energy its budget is sized from). Adding a sweep or lever row therefore runs that row only, and a changed
pick or target reruns what depends on it. ``--budget-minutes`` stops cleanly before a run that would start
after it, and the next sitting continues. A run cut off mid-way is redone from its start. A lever the installed
greendiff refused is cached as failed: delete its ``<tag>-lever-*.json`` to retry once the lever lands.

Modes (``_e2q_plan.py``): ``--full`` is the proof on a CPU (nano, 16x16; several hours alone on 2 CPU cores,
so it runs in sittings of ``--budget-minutes``); ``--quick`` a quarter of its schedule with three sweep
candidates and a few lever rows (about 27 min of runs); ``--gpu`` the proof at tiny, 32x32; ``--smoke`` (about 4 min)
checks the plumbing. Once the tuned runs exist the benchmark prints a forecast of the rest.

    python bench/energy_to_quality.py --full --budget-minutes 55 [--align-encoder DIR] [--write-benchmarks]
    python bench/energy_to_quality.py --quick [--write-benchmarks]
    python bench/energy_to_quality.py --smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _e2q_encoder import train_encoder  # noqa: E402
from _e2q_plan import (CAL_STEPS, DEFAULTS, EARLY_RULES, FINE_EVALS, MODES, Mode,  # noqa: E402
                       Variant, compose_green_v2, set_flags, short_hash)
from _e2q_report import calibration, reach_step, render_benchmarks, render_table, summarize  # noqa: E402
from _e2q_runs import Bench, OutOfTime, final_fid, reach  # noqa: E402
from _report import write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "energy_to_quality"


class Proof:
    """The eight steps over one :class:`Bench`; every step's runs are cached, so each call is cheap on a rerun."""

    def __init__(self, bench: Bench, mode: Mode, encoder: str, green_v2_base: str = "auto") -> None:
        self.bench, self.m, self.encoder, self.green_v2_base = bench, mode, encoder, green_v2_base

    def align_encoder(self) -> dict:
        """``--align-encoder``'s folder, else the benchmark's own (trained once, again if its folder is gone)."""
        if self.encoder:
            return {"dir": self.encoder, "architecture": "given by --align-encoder"}
        folder = self.bench.work / "encoder"

        def make() -> dict:
            return train_encoder(folder, self.m.dataset, self.m.resolution, self.m.encoder_steps)

        info = self.bench.cached("encoder", make)
        if "failed" not in info and not (folder / "config.json").is_file():
            self.bench.path("encoder").unlink()
            info = self.bench.cached("encoder", make)
        self.encoder = str(folder)
        return info

    def common(self, max_steps: int) -> list[str]:
        m = self.m
        return ["--dataset", m.dataset, "--preset", m.preset, "--resolution", str(m.resolution),
                "--max-steps", str(max_steps), "--sampler", "ddim", "--sample-steps", str(m.eval_sample_steps),
                "--eval-samples", str(m.eval_samples), "--country", "FRA", "--set", "stop.spread_seeds=1",
                "--set", f"run.sample_every={max_steps}", "--set", "run.num_samples=4",
                "--set", f"run.checkpoint_every={max_steps}", "--set", "run.log_every=50"]

    def baseline(self, sets: dict, seed: int, max_steps: int, extra: list[str]) -> list[str]:
        return ["--recipe", "baseline", *self.common(max_steps), *set_flags({**DEFAULTS, **sets}),
                "--seed", str(seed), *extra]

    def sweep(self) -> list[dict]:
        runs = []
        for i, sets in enumerate(self.m.sweep()):
            steps = max(1, self.m.sweep_images // int(sets["optim.batch_size"]))
            name = f"sweep-{short_hash(sets)}"
            runs.append({"sets": sets, **self.bench.cached(name, lambda s=sets, n=steps, k=name: self.bench.train(
                k, self.baseline(s, 0, n, ["--set", "stop.eval_at_end=true"])))})
        return runs

    def tuned(self, sets: dict) -> list[dict]:
        steps = self.tuned_steps(sets)
        every = max(1, steps // self.m.tuned_evals)
        key = short_hash(sets)
        return [self.bench.cached(f"tuned-{key}-s{seed}", lambda s=seed: self.bench.train(
            f"tuned-{key}-s{s}", self.baseline(sets, s, steps, ["--eval-every", str(every), "--set", "stop.eval_at_end=true"])))
            for seed in range(self.m.seeds)]

    def tuned_steps(self, sets: dict) -> int:
        return max(1, self.m.schedule_images // int(sets["optim.batch_size"]))

    def chase(self, name: str, base: list[str], target: float, budget_kwh: float, every_kwh: float) -> dict:
        """A run told to stop at the target or the budget (evaluations allowed for on top of it)."""
        return self.bench.cached(name, lambda: self.bench.train(name, [
            *base, "--target-fid", f"{target:.6g}", "--budget-kwh", f"{budget_kwh:.6g}",
            "--eval-every-kwh", f"{every_kwh:.6g}", "--set", "stop.eval_at_end=true"]))

    def references(self, ctx: dict, tuned_runs: list[dict], out: dict[str, list[dict]]) -> dict[str, list[dict]]:
        """The defaults and lr-only references, filled into ``out`` seed by seed (a sitting that runs out of time
        keeps the seeds it finished); when the sweep's best is itself at batch 16 with 500 warm-up steps, lr-only
        *is* the tuned baseline and its runs are the tuned ones (nothing is run twice)."""
        m = self.m
        ratio, every = m.defaults_budget_ratio, ctx["tuned_kwh"] / m.reference_evals_per_tuned
        budget = ratio * ctx["tuned_kwh"] + (ratio * m.reference_evals_per_tuned + 2) * ctx["eval_kwh_each"]
        for label, sets in (("defaults", {}), ("lr-only", ctx["lr_only"])):
            if label == "lr-only" and sets == ctx["tuned_sets"]:
                out[label] = tuned_runs
                continue
            steps = int(ratio * m.schedule_images / 16 * 4)  # never binding: the budget ends these runs
            seeds = m.seeds if label == "defaults" else m.ablation_seeds  # lr-only: a table row, not a headline
            out[label] = []
            for seed in range(seeds):
                out[label].append(self.chase(f"{label}-{ctx['tag']}-s{seed}", self.baseline(sets, seed, steps, []),
                                             ctx["target"], budget, every))
        return out

    def variant_flags(self, variant: Variant, sets: dict, seed: int, steps: int, tuned: dict) -> list[str]:
        lever = set_flags(sets, encoder=self.encoder)
        if variant.base == "green":
            return ["--recipe", "green", *self.common(steps), *lever, "--seed", str(seed)]
        return self.baseline(tuned, seed, steps, []) + lever  # the lever last: it wins over the tuned keys

    def ablation(self, ctx: dict) -> list[dict]:
        rows, m = [], self.m
        budget = ctx["tuned_kwh"] + (m.run_evals_per_tuned + 2) * ctx["eval_kwh_each"]
        for variant in m.variants():
            for seed in range(m.ablation_seeds):
                name = f"lever-{variant.name.split(' (')[0]}-{short_hash(variant.sets)}-{ctx['tag']}-s{seed}"
                steps = self.tuned_steps(ctx["tuned_sets"]) * 4
                if variant.post_hoc_ema:
                    result = self.bench.cached(name, lambda v=variant, s=seed: self.post_hoc(v, s, ctx))
                else:
                    flags = self.variant_flags(variant, variant.sets, seed, steps, ctx["tuned_sets"])
                    result = self.chase(name, flags, ctx["target"], budget, ctx["tuned_kwh"] / m.run_evals_per_tuned)
                rows.append({"variant": variant.name, "seed": seed, **result})
        return rows

    def post_hoc(self, variant: Variant, seed: int, ctx: dict) -> dict:
        """The tuned schedule with EMA snapshots, then ``greendiff eval --ema-length auto`` picks the EMA."""
        steps = self.tuned_steps(ctx["tuned_sets"])
        run = self.bench.train(f"lever-post-hoc-{ctx['tag']}-s{seed}", self.variant_flags(variant, variant.sets, seed, steps,
                                                                                ctx["tuned_sets"]))
        scored = self.bench.score(run, self.m.eval_samples, 1, ["--ema-length", "auto",
                                                               "--sample-steps", str(self.m.eval_sample_steps)])
        run["curve"] = [*run["curve"], {"step": run["steps"], "train_kwh": run["train_kwh"], "eval_kwh": run["eval_kwh"],
                                        "fid": scored["fid"]}]
        return run

    def green_v2(self, ctx: dict) -> list[dict]:
        """Green v2 in every seed at growing budgets (``green_horizons`` x the tuned energy; its LR schedule fitted
        to each), the first that reaches the target kept. On the tuned base the warm-up shrinks with the budget
        (the tuned schedule's, compressed), or a 0.2x budget would be mostly warm-up."""
        out, m = [], self.m
        base, keys = ctx["green_v2_base"], ctx["green_v2_sets"]
        for seed in range(m.seeds):
            for horizon in m.green_horizons:
                sets = dict(keys)
                if base == "tuned":
                    sets["optim.warmup_steps"] = max(1, round(int(ctx["tuned_sets"]["optim.warmup_steps"]) * horizon))
                v2 = Variant("green v2", base, sets)
                evals = max(8, round(m.run_evals_per_tuned * horizon))  # >= 8 a run: a short one is read finely too
                budget = horizon * ctx["tuned_kwh"] + (evals + 2) * ctx["eval_kwh_each"]
                flags = self.variant_flags(v2, v2.sets, seed, self.tuned_steps(ctx["tuned_sets"]) * 4, ctx["tuned_sets"])
                run = self.chase(f"green-v2-{short_hash([base, keys])}-{ctx['tag']}-h{horizon:g}-s{seed}", flags,
                                 ctx["target"], budget, horizon * ctx["tuned_kwh"] / evals)
                out.append({"seed": seed, "horizon": horizon, **run})
                if "failed" in run or reach(run, ctx["target"]) is not None:
                    break
        return out

    def tuned_fine(self, ctx: dict) -> list[dict]:
        """The tuned baseline again, every seed, evaluated at ``fine_evals`` points over its schedule and
        stopped at the target: the same keys and seeds, so the same training (its evaluations at the coarse
        runs' steps must give their FIDs: :func:`same_training` checks it), read finely where it crosses the
        target. The headline's tuned side is these runs: the coarse runs' 375-step bracket charged green with
        up to a sixth of the tuned schedule. The target stays the coarse runs' (their full schedules)."""
        steps = self.tuned_steps(ctx["tuned_sets"])
        every = max(1, steps // self.m.fine_evals)
        key = short_hash(ctx["tuned_sets"]) + ("" if self.m.fine_evals == FINE_EVALS else f"-e{self.m.fine_evals}")
        return [self.bench.cached(f"tuned-fine-{key}-{ctx['tag']}-s{seed}", lambda s=seed: self.bench.train(
            f"tuned-fine-s{s}", self.baseline(ctx["tuned_sets"], s, steps, [
                "--eval-every", str(every), "--target-fid", f"{ctx['target']:.6g}", "--set", "stop.eval_at_end=true"])))
            for seed in range(self.m.seeds)]

    def side_by_side(self, group: str, flags: dict[str, list[str]], rounds: int) -> list[dict]:
        """Joules per step of configurations measured side by side: ``rounds`` rounds, each one short run of every
        configuration in a rotated order (no evaluation). The VM's speed drifts by up to 2x between sittings (the
        same tuned step metered 0.44-0.53 J, the defaults' identical step 0.26 J an hour later), and every
        metered energy moves with it; within a round the runs share the machine's state, so their ratios hold.
        Each run's name hashes the whole set, so a changed configuration remeasures the set together."""
        key, labels, out = short_hash(flags), list(flags), []
        for k in range(rounds):
            order = labels[k % len(labels):] + labels[:k % len(labels)]
            row = {}
            for label in order:
                name = f"{group}-{key}-{short_hash(flags[label])}-r{k}"
                row[label] = self.bench.cached(name, lambda n=name, f=flags[label]: self.bench.train(n, f))
            out.append({"order": order, "runs": row})
        return out

    def cost_flags(self, variant: Variant, steps: int, tuned: dict) -> list[str]:
        """A variant's flags for a short cost run: an alignment term on at every step (``align_until`` 1), as in
        its real runs (whose ``max_steps`` put the decay far past where they stop)."""
        sets = {**variant.sets, **({"optim.align_until": 1} if "optim.align" in variant.sets else {})}
        return self.variant_flags(variant, sets, 0, steps, tuned)

    def lever_costs(self, ctx: dict) -> list[dict]:
        """The joules per step of the levers whose step does different work (precision, an extra network or loss,
        an assignment, another batch: :attr:`Variant.step_cost`) beside the tuned baseline's, ``cost_rounds``
        rounds. The other levers change which timesteps or weights a step draws, not its work."""
        steps = min(CAL_STEPS, self.tuned_steps(ctx["tuned_sets"]))
        flags = {"tuned baseline": self.baseline(ctx["tuned_sets"], 0, steps, [])}
        flags |= {v.name: self.cost_flags(v, steps, ctx["tuned_sets"]) for v in self.m.variants() if v.step_cost}
        return self.side_by_side("cost", flags, self.m.cost_rounds) if len(flags) > 1 else []

    def calibrate(self, ctx: dict) -> list[dict]:
        """The headline's joules per step: the tuned baseline, green v2 and the defaults side by side,
        ``cal_rounds`` rounds of ``min(CAL_STEPS, the tuned schedule)`` steps."""
        steps = min(CAL_STEPS, self.tuned_steps(ctx["tuned_sets"]))
        v2 = Variant("green v2", ctx["green_v2_base"], ctx["green_v2_sets"])
        return self.side_by_side("calib", {"tuned baseline": self.baseline(ctx["tuned_sets"], 0, steps, []),
                                           "green v2": self.cost_flags(v2, steps, ctx["tuned_sets"]),
                                           "diffusers defaults": self.baseline({}, 0, steps, [])}, self.m.cal_rounds)

    def early_stopping(self, ctx: dict) -> list[dict]:
        m, rows = self.m, []
        base, keys = ctx["green_v2_base"], ctx["green_v2_sets"]
        v2 = Variant("green v2", base, keys)
        default_batch = 64 if base == "green" else ctx["tuned_sets"]["optim.batch_size"]  # the green recipe's: 64
        batch = int(keys.get("optim.batch_size", default_batch))
        steps = int(m.early_stop_factor * m.schedule_images / batch)
        every = max(1, m.schedule_images // batch // m.tuned_evals)
        for seed in range(m.early_stop_seeds):
            flags = self.variant_flags(v2, v2.sets, seed, steps, ctx["tuned_sets"])
            tag = f"{short_hash([base, keys])}-{ctx['tag']}"
            full = self.bench.cached(f"early-full-{tag}-s{seed}", lambda f=flags, s=seed: self.bench.train(
                f"early-full-s{s}", [*f, "--set", "stop.eval_at_end=true"]))
            for patience, share in EARLY_RULES:
                min_delta = max(share * ctx["spread"], 1e-6)
                rule = "" if (patience, share) == EARLY_RULES[0] else f"-p{patience}-d{share:g}"
                plateau = self.bench.cached(
                    f"early-plateau-{tag}{rule}-s{seed}",
                    lambda f=flags, s=seed, p=patience, d=min_delta, rule=rule: self.bench.train(f"early-plateau{rule}-s{s}", [
                                                *f, "--eval-every", str(every), "--patience", str(p), "--min-delta",
                                                f"{d:.6g}", "--set", "stop.eval_at_end=true"]))
                rows.append({"seed": seed, "max_steps": steps, "patience": patience, "min_delta": min_delta,
                             "plateau": plateau, "full": full})
        return rows


def context(mode: Mode, sweep: list[dict], tuned_runs: list[dict] | None = None) -> dict:
    """The sweep's picks and, once the tuned runs exist, the target and the tuned energy."""
    ok = [r for r in sweep if "failed" not in r]
    if not ok:
        raise SystemExit(f"every sweep candidate failed, e.g.: {sweep[0].get('failed')}")
    best = min(ok, key=final_fid)
    at16 = [r for r in ok if r["sets"]["optim.batch_size"] == 16 and r["sets"].get("optim.warmup_steps") == 500]
    ctx = {"tuned_sets": best["sets"], "lr_only": min(at16, key=final_fid)["sets"] if at16 else {},
           "sweep_kwh": sum(r["total_kwh"] for r in ok)}
    if tuned_runs:
        finals = [final_fid(r) for r in tuned_runs]
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        evals = sum(len(r["curve"]) for r in tuned_runs)
        ctx |= {"finals": finals, "spread": spread, "target": statistics.mean(finals) + spread,
                "tuned_kwh": statistics.mean(r["train_kwh"] for r in tuned_runs),
                "eval_kwh_each": sum(r["eval_kwh"] for r in tuned_runs) / max(1, evals)}
        # every later run's key: what it depends on (the picks, the target, the energy its budget is sized from)
        ctx["tag"] = short_hash([ctx["tuned_sets"], ctx["lr_only"], f"{ctx['target']:.4f}", f"{ctx['tuned_kwh']:.4e}"])
    return ctx


def lever_gains(rows: list[dict], tuned_runs: list[dict], target: float,
                steps: bool = False) -> dict[str, float | None]:
    """Mean gain per variant: the tuned baseline's energy to reach / the variant's (None: failed or missed);
    ``steps``: its steps to reach / the variant's instead (the same batch: the learning apart from the machine's
    speed, which drifts on a shared VM and moves every energy with it)."""
    by_seed = {i: r for i, r in enumerate(tuned_runs)}
    gains: dict[str, list[float]] = {}
    for row in rows:
        tuned = by_seed.get(row["seed"])
        got, ref = (reach_step(row, target), tuned and reach_step(tuned, target)) if steps else \
            ((reach(row, target) or (0, None))[1], tuned and (reach(tuned, target) or (0, None))[1])
        if not got or not ref or "failed" in row:
            gains.setdefault(row["variant"], []).append(math.nan)
            continue
        gains.setdefault(row["variant"], []).append(ref / got)
    return {name: (None if any(math.isnan(v) for v in values) else statistics.mean(values))
            for name, values in gains.items()}


def calibrated_gains(step_gains: dict[str, float | None], step_j: dict[str, float]) -> dict[str, float | None]:
    """Each lever's energy gain on the calibrated estimate: its gain in steps to the target x the tuned baseline's
    joules per step over its own, both measured side by side (a lever not measured there does the tuned step's
    work: the ratio is 1). With no cost measurement at all, the step gains alone."""
    tuned = step_j.get("tuned baseline")
    return {name: None if gain is None else gain * (tuned / step_j[name] if tuned and name in step_j else 1.0)
            for name, gain in step_gains.items()}


def projected_minutes(mode: Mode, tuned_runs: list[dict]) -> float:
    """A rough forecast of the steps after the tuned baseline, in tuned-run wall times: the two references at
    their full budget, every lever at most one tuned energy, green v2 about half, early stopping two long runs."""
    per_run_min = statistics.mean(r["wall_s"] for r in tuned_runs) / 60
    units = (2 * mode.seeds * mode.defaults_budget_ratio + len(mode.variants()) * mode.ablation_seeds + mode.seeds
             + mode.cal_rounds * 3 * 0.2
             + 0.5 * mode.seeds * len(mode.green_horizons) + 2 * mode.early_stop_factor * mode.early_stop_seeds)
    return units * per_run_min


def prepare(bench: Bench, mode: Mode) -> None:
    """The evaluation's reference features, computed once here so no run pays for them."""
    code = ("from greendiff.data import load_dataset; from greendiff.evaluate import reference_features, "
            f"resolve_extractor; e, _ = resolve_extractor('mnist'); reference_features(load_dataset('{mode.dataset}', "
            f"{mode.resolution}).images, e)")
    subprocess.run([sys.executable, "-c", code], check=True, env=bench.env)


def run_all(proof: Proof) -> dict:
    """Every step in order (cached ones are read back); :class:`OutOfTime` ends a sitting between runs."""
    mode, bench = proof.m, proof.bench
    prepare(bench, mode)
    sweep = proof.sweep()
    tuned_runs = proof.tuned(context(mode, sweep)["tuned_sets"])
    ctx = context(mode, sweep, tuned_runs)
    print(f"target FID {ctx['target']:.2f}; the remaining runs: about {projected_minutes(mode, tuned_runs):.0f} min "
          f"(from the tuned runs' pace; cached ones are free)", flush=True)
    # the comparison with the tuned baseline first (the levers, then green v2); the references' 4x budgets next
    ctx["encoder"] = proof.align_encoder()
    ablation = proof.ablation(ctx)
    ctx["metered_gains"] = lever_gains(ablation, tuned_runs, ctx["target"])
    ctx["step_gains"] = lever_gains(ablation, tuned_runs, ctx["target"], steps=True)
    ctx["lever_costs"] = proof.lever_costs(ctx)
    ctx["lever_step_j"] = calibration(ctx["lever_costs"])
    ctx["gains"] = calibrated_gains(ctx["step_gains"], ctx["lever_step_j"])
    ctx["green_v2_base"], ctx["green_v2_sets"] = compose_green_v2(ctx["gains"], ctx["step_gains"], proof.green_v2_base)
    ctx["green_v2_rule"] = compose_green_v2(ctx["gains"], ctx["step_gains"], proof.green_v2_base, fixed=False)[1]
    green = proof.green_v2(ctx)
    # from here a sitting that runs out of time still reports: what is missing is named as pending
    parts = {"tuned_fine": [], "calibration": [], "early_stopping": [],
             "references": {"defaults": [], "lr-only": tuned_runs if ctx["lr_only"] == ctx["tuned_sets"] else []}}
    steps = [("the fine tuned-baseline curves", "tuned_fine", proof.tuned_fine),
             ("the per-step calibration", "calibration", proof.calibrate),
             ("the references", "references", lambda c: proof.references(c, tuned_runs, parts["references"])),
             ("early stopping", "early_stopping", proof.early_stopping)]
    pending: list[str] = []
    for label, key, step in steps:
        if pending:
            pending.append(label)
            continue
        try:
            parts[key] = step(ctx)
        except OutOfTime as stop:
            pending.append(f"{label} (stopped before {stop})")
    return {"ctx": ctx, "sweep": sweep, "tuned": tuned_runs, "ablation": ablation, "green": green, **parts,
            "pending": pending}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    for name in MODES:
        which.add_argument(f"--{name}", action="store_const", dest="mode", const=name)
    parser.add_argument("--budget-minutes", type=float, default=55.0,
                        help="Start no run after this many minutes; rerun to continue (default 55).")
    parser.add_argument("--align-encoder", default="", help="Folder of the REPA encoder (not the FID network).")
    parser.add_argument("--green-v2-base", choices=("auto", "green", "tuned"), default="auto",
                        help="What green v2 builds on: auto (green v1 if it beat the tuned baseline), green, tuned.")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    mode = MODES[args.mode]
    folder = RESULTS / args.mode  # each mode its own runs: run folders are named by run, not by mode
    bench = Bench(folder, f"{args.mode}-{mode.tag}", time.monotonic() + 60 * args.budget_minutes,
                  threads=1 if args.mode == "smoke" else None)
    try:
        parts = run_all(Proof(bench, mode, args.align_encoder, args.green_v2_base))
    except OutOfTime as stop:
        sys.exit(f"stopped before {stop} (--budget-minutes {args.budget_minutes:g}, {bench.spent_s / 60:.0f} min of runs "
                 f"this sitting); rerun the same command to continue from the cache")
    threads = bench.env.get("GREENDIFF_THREADS") or (f"GREENDIFF_THREADS unset: each run takes its share of the "
                                                     f"{os.cpu_count()} cores (all of them when it runs alone)")
    result = summarize(args.mode, mode, parts, bench.spent_s, " ".join(["bench/energy_to_quality.py", *sys.argv[1:]]),
                       threads)
    if parts["pending"]:
        print(f"partial: not yet run: {'; '.join(parts['pending'])} (--budget-minutes {args.budget_minutes:g}); "
              "rerun the same command to continue from the cache", file=sys.stderr)
    (folder / f"{args.mode}.json").write_text(json.dumps(result, indent=2))
    table = render_table(result)
    (folder / f"{args.mode}.md").write_text(table + "\n")
    print(table)
    if args.write_benchmarks and args.mode != "smoke":
        write_section(f"energy_to_quality_{args.mode}", render_benchmarks(result, table))


if __name__ == "__main__":
    main()
