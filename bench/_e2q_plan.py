"""What ``bench/energy_to_quality.py`` runs: the modes, the baseline sweep and the lever table (data, no I/O).

Edit :data:`SWEEP` and :data:`VARIANTS` here; every entry is a dict of config keys (``--set key=value``), so a
lever added to ``RecipeConfig`` needs one row, not code. A row whose key or value the installed greendiff does
not know fails on its own (its one-line error goes in the table) and the benchmark goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field


FINE_EVALS = 24  # the default of Mode.fine_evals (a run name says its count only when it is another)


@dataclass(frozen=True)
class Mode:
    """The sizes of one benchmark mode (the cached results' keys hash it, so a change starts afresh).

    Attributes:
        preset, resolution, dataset: the model and data every run shares.
        schedule_images: images the tuned baseline's full schedule sees (its steps = this / its batch).
        sweep_images: images each sweep candidate sees (equal compute for every batch size).
        eval_samples, eval_sample_steps: every in-training evaluation (FID on MNIST features, DDIM,
            fixed noise seed); the target is measured with the same evaluation.
        tuned_evals: evaluations over the tuned baseline's schedule (its last quarter holds >= 3 of them).
        run_evals_per_tuned: the candidates (green, levers) are evaluated each time they have used
            1/this of the tuned baseline's training energy.
        reference_evals_per_tuned: the same for the lr-only and defaults references (coarser: they run
            4x longer; their energy to reach is bracketed and the headline takes the lower end).
        defaults_budget_ratio: the references' budget in tuned-baseline energies (the issue: >= 4).
        green_horizons: the green runs' energy budgets (its LR horizon, ``stop.fit_schedule``) in tuned
            energies, tried in order until one reaches the target.
        sweep_pick, variant_pick: a subset of the tables (the smoke's).
        fine_evals: evaluations of the tuned baseline's rerun that the headline reads (stopped at the target).
        cal_rounds, cost_rounds: rounds of the side-by-side per-step measurements (headline, levers).
        seeds, ablation_seeds: seeds of the headline runs (>= 3) and of the lever table.
        early_stop_factor, early_stop_seeds: the plateau-rule rerun: max_steps = factor x the schedule.
    """

    preset: str = "nano"
    resolution: int = 16
    dataset: str = "mnist"
    schedule_images: int = 128_000
    sweep_images: int = 64_000
    eval_samples: int = 1000
    eval_sample_steps: int = 20
    tuned_evals: int = 12
    run_evals_per_tuned: int = 24
    reference_evals_per_tuned: int = 4
    defaults_budget_ratio: float = 4.0
    green_horizons: tuple[float, ...] = (0.2, 0.5, 1.0)
    seeds: int = 3
    ablation_seeds: int = 1
    early_stop_factor: float = 3.0
    early_stop_seeds: int = 1
    encoder_steps: int = 300  # the REPA encoder's training (bench/_e2q_encoder.py), unless --align-encoder
    sweep_pick: tuple[int, ...] = ()  # indices into SWEEP to run (empty: all); the smoke runs two
    variant_pick: tuple[int, ...] = ()  # indices into VARIANTS (empty: all)
    fine_evals: int = FINE_EVALS  # the tuned baseline's rerun for the headline: evaluations over its schedule
    cal_rounds: int = 5  # the headline's per-step calibration: rounds of tuned / green v2 / defaults side by side
    cost_rounds: int = 3  # the levers' own per-step costs (Variant.step_cost) beside the tuned baseline's

    def sweep(self) -> list[dict[str, object]]:
        return [SWEEP[i] for i in self.sweep_pick] if self.sweep_pick else SWEEP

    def variants(self) -> list[Variant]:
        return [VARIANTS[i] for i in self.variant_pick] if self.variant_pick else VARIANTS

    @property
    def tag(self) -> str:
        """A short hash of the mode's sizes: the cache key prefix. What only selects runs is not in it (seed
        counts, picks, green's horizons: each run's name holds its seed and horizon), nor are the tables: each
        run's own key hashes what it depends on (a sweep candidate its keys; a lever its keys and the tuned
        baseline's context), so adding a row, a seed or a horizon runs that alone."""
        sizes = {k: v for k, v in dataclasses.asdict(self).items() if k not in _SELECTING}
        return short_hash(sizes, 8)


_SELECTING = ("seeds", "ablation_seeds", "early_stop_seeds", "sweep_pick", "variant_pick", "green_horizons",
              "cal_rounds", "cost_rounds", "fine_evals")


def short_hash(value: object, n: int = 6) -> str:
    """A stable short hash of JSON-able ``value`` (cache keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:n]


MODES: dict[str, Mode] = {
    # the proof on a CPU: nano at 16x16; about 3-4 h alone on 2 CPU cores, so it runs in sittings (cached runs)
    "full": Mode(schedule_images=48_000, sweep_images=24_000, eval_samples=1000, tuned_evals=8,
                 run_evals_per_tuned=16, reference_evals_per_tuned=4, seeds=3, ablation_seeds=1,
                 early_stop_factor=2.0, green_horizons=(0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)),
    # about 27 min of runs on 2 CPU cores (measured 2026-12-01): a quarter of the full schedule, the sweep's three
    # telling candidates (the defaults, the full sweep's best, green's batch and LR) and a few lever rows
    "quick": Mode(schedule_images=12_000, sweep_images=6_000, eval_samples=1000, tuned_evals=4,
                  run_evals_per_tuned=8, reference_evals_per_tuned=2, seeds=3, ablation_seeds=1,
                  early_stop_factor=2.0, sweep_pick=(0, 9, 5), variant_pick=(0, 1, 2), encoder_steps=100,
                  green_horizons=(0.2, 0.5, 1.0), fine_evals=8, cal_rounds=3, cost_rounds=2),
    # the same proof at tiny, 32x32, 256,000 images: for a GPU
    "gpu": Mode(preset="tiny", resolution=32, schedule_images=256_000, sweep_images=96_000, tuned_evals=12,
                seeds=3, ablation_seeds=2, encoder_steps=1000),
    # the 2-minute smoke: scikit-learn's digits at 16 px, a handful of steps, 16 evaluation images
    "smoke": Mode(preset="pico", resolution=16, dataset="digits", schedule_images=640, sweep_images=320,
                  eval_samples=16, eval_sample_steps=4, tuned_evals=4, run_evals_per_tuned=4,
                  reference_evals_per_tuned=2, green_horizons=(0.5, 1.0), seeds=1, early_stop_factor=2.0,
                  sweep_pick=(0, 4), variant_pick=(0, 4, 7), encoder_steps=5),
}

CAL_STEPS = 400  # the per-step calibrations' runs (or the tuned schedule, when shorter)
# the plateau rules early stopping is tried with: (patience, min-delta as a share of the tuned seed spread); the
# first sitting's (2, the spread) stopped at FID 13 where the run went on to 6: an absolute delta sized at the
# target is coarse once FID is far below it
EARLY_RULES: tuple[tuple[int, float], ...] = ((2, 1.0), (3, 0.25))

# the diffusers defaults as its README runs them (`--use_ema`); greendiff's own baseline keeps EMA off
DEFAULTS: dict[str, object] = {"optim.ema": True}

# the baseline sweep: each candidate is the defaults plus these keys, trained on `sweep_images` images, one
# seed, its final FID compared. The lr-only reference is the best candidate at batch 16 with the defaults'
# 500 warm-up steps; the tuned baseline is the best of all.
SWEEP: list[dict[str, object]] = [
    *({"optim.batch_size": 16, "optim.lr": lr, "optim.warmup_steps": 500} for lr in (1e-4, 3e-4, 1e-3)),
    *({"optim.batch_size": 64, "optim.lr": lr, "optim.warmup_steps": 25} for lr in (3e-4, 1e-3, 2e-3)),
    {"optim.batch_size": 64, "optim.lr": 1e-3, "optim.warmup_steps": 100},
    {"optim.batch_size": 128, "optim.lr": 2e-3, "optim.warmup_steps": 25},
    # added after the first quick sitting found the best LR of batch 16 and of batch 64 at the grid's edge: a
    # sweep whose best value is its largest has not found the optimum
    *({"optim.batch_size": 16, "optim.lr": lr, "optim.warmup_steps": 500} for lr in (2e-3, 4e-3, 8e-3)),
    *({"optim.batch_size": 32, "optim.lr": lr, "optim.warmup_steps": 100} for lr in (1e-3, 2e-3, 4e-3)),
    {"optim.batch_size": 64, "optim.lr": 4e-3, "optim.warmup_steps": 25},
    # and batch 16 at its best LR with shorter warm-ups (500 steps is a third of a sweep run)
    *({"optim.batch_size": 16, "optim.lr": 4e-3, "optim.warmup_steps": w} for w in (25, 100)),
]


@dataclass(frozen=True)
class Variant:
    """One row of the lever table: ``base`` ("tuned": the tuned baseline's settings, or "green": the green
    recipe) plus ``sets``. ``post_hoc_ema``: scored after training by ``greendiff eval --ema-length auto``
    (the reconstructed EMA is chosen after the run, so its energy to reach is the whole run's)."""

    name: str
    base: str
    sets: dict[str, object] = field(default_factory=dict)
    post_hoc_ema: bool = False
    step_cost: bool = False  # its step does other work than the tuned one: its joules per step are measured


# each lever alone on the tuned baseline; "green v1" the recipe as it stands. Green v2 (GREEN_V2, or when
# that is None: green v1 plus, per config key, the value that helped most alone, if it gained >= MIN_GAIN)
VARIANTS: list[Variant] = [
    Variant("green v1 (min-snr, cosine, EMA, bf16 where native)", "green", step_cost=True),
    Variant("+min-snr", "tuned", {"optim.loss_weighting": "min-snr"}),
    Variant("+bf16 autocast (auto: where native)", "tuned", {"optim.mixed_precision": "auto"}, step_cost=True),
    Variant("+cosine schedule", "tuned", {"optim.beta_schedule": "squaredcos_cap_v2"}),
    Variant("+logit-normal timesteps (SD3)", "tuned", {"optim.timestep_sampling": "logit-normal"}),
    Variant("+SpeeD timesteps", "tuned", {"optim.timestep_sampling": "speed"}),
    Variant("+immiscible noise", "tuned", {"optim.noise_assignment": "immiscible"}, step_cost=True),
    Variant("+REPA (bench encoder)", "tuned", {"optim.align": "repa", "optim.align_encoder": "{encoder}"},
            step_cost=True),
    Variant("+dispersive", "tuned", {"optim.align": "dispersive"}, step_cost=True),
    Variant("+v objective", "tuned", {"optim.objective": "v"}),
    Variant("+flow objective", "tuned", {"optim.objective": "flow"}),
    Variant("+post-hoc EMA", "tuned", {"optim.ema_snapshots": 16}, post_hoc_ema=True),
    # added once the calibration showed the green runs stop within a few hundred steps: the defaults' EMA
    # (power 3/4) still averages over the last ~300 steps at step 2,000, green's (2/3) over fewer
    Variant("+green's EMA warm-up (power 2/3)", "tuned", {"optim.ema_power": 2 / 3}),
    Variant("+no EMA", "tuned", {"optim.ema": False}),
    # the flow row trained at the LR swept for epsilon prediction; its own optimum may differ
    *(Variant(f"+flow objective, LR {lr:g}", "tuned", {"optim.objective": "flow", "optim.lr": lr}) for lr in (2e-3, 8e-3)),
]
# The few-step solvers (DPM-Solver++ 2M, UniPC) are not rows: they change the evaluation, not training, so a row
# would score a different instrument against a target measured with DDIM. bench/samplers.py compares them (FID
# against sampler steps) on this benchmark's tuned-baseline run.
# Fixed after the full mode's sittings: the composition rule on calibrated gains (compose_green_v2) keeps flow,
# cosine and uniform weights and drops REPA and bf16 (REPA's encoder makes its step 1.19x the tuned one, which
# eats its 1.21x fewer steps alone; bf16's step costs 0.98x and saves no step). Measured together it is the other
# way round: with flow, REPA cuts the steps to the target from > 1,060 (FID 27.1 at the 0.1x budget, seed 0) to
# 664, so the combination keeps it. None: compose from the lever rows instead.
GREEN_V2: dict[str, object] | None = {
    "optim.objective": "flow", "optim.loss_weighting": "uniform", "optim.beta_schedule": "squaredcos_cap_v2",
    "optim.align": "repa", "optim.align_encoder": "{encoder}", "optim.mixed_precision": "auto"}
GREEN_V2_BASE = "tuned"  # with GREEN_V2: "green" (the green recipe) or "tuned" (the tuned baseline's keys)
MIN_GAIN = 1.1  # a lever joins green v2 only if it saved >= 10% alone (below: seed noise here)


def set_flags(sets: dict[str, object], **fill: str) -> list[str]:
    """``--set key=value`` flags for ``sets``; string values may name ``{encoder}`` etc. from ``fill``."""
    flags = []
    for key, value in sets.items():
        text = value.format(**fill) if isinstance(value, str) else ("true" if value is True else
                                                                     "false" if value is False else f"{value:g}"
                                                                     if isinstance(value, float) else str(value))
        flags += ["--set", f"{key}={text}"]
    return flags


def compose_green_v2(gains: dict[str, float | None], step_gains: dict[str, float | None] | None = None,
                     base: str = "auto", fixed: bool = True) -> tuple[str, dict[str, object]]:
    """Green v2's base and keys: (:data:`GREEN_V2_BASE`, :data:`GREEN_V2`) when set, else data-driven. The base
    (``auto``) is the green recipe (green v1) if it reached the target no later than the tuned baseline, else the
    tuned baseline's batch, LR and warm-up (then green v1's own levers join only as their rows earned it);
    ``green`` or ``tuned`` force it (the levers were measured on the tuned base and may not transfer). The keys:
    per config key, the lever value with the largest mean gain over the tuned baseline (``gains``: variant
    name -> gain, None: failed or not reached), if it is at least :data:`MIN_GAIN` and, with ``step_gains``, the
    lever also reached the target in no more steps than the tuned baseline (the first sittings found levers that
    needed *more* steps joining on energy gains that were the VM's speed drifting, not the lever). ``fixed``
    False: the data-driven pick even where GREEN_V2 is set (the table shows both)."""
    if fixed and GREEN_V2 is not None:
        return GREEN_V2_BASE, dict(GREEN_V2)
    if base == "auto":
        green_v1 = next(v.name for v in VARIANTS if v.base == "green")
        base = "green" if (gains.get(green_v1) or 0.0) >= 1.0 else "tuned"
    best: dict[str, tuple[float, dict[str, object]]] = {}
    for variant in VARIANTS:
        gain = gains.get(variant.name)
        if variant.base != "tuned" or gain is None or gain < MIN_GAIN or variant.post_hoc_ema:
            continue
        if step_gains is not None and (step_gains.get(variant.name) or 0.0) < 1.0:
            continue
        key = next(iter(variant.sets))
        if key not in best or gain > best[key][0]:
            best[key] = (gain, variant.sets)
    if best.get("optim.objective", (0, {}))[1].get("optim.objective") == "flow" and "optim.timestep_sampling" in best:
        # flow matching draws its own logit-normal times (greendiff refuses a timestep_sampling with it): the
        # larger gain of the two stays
        drop = "optim.timestep_sampling" if best["optim.objective"][0] >= best["optim.timestep_sampling"][0] \
            else "optim.objective"
        del best[drop]
    chosen: dict[str, object] = {}
    for _, sets in best.values():
        chosen |= sets
    if chosen.get("optim.objective") == "flow":
        # the flow row was measured with the tuned baseline's uniform loss weights (SD3's: its logit-normal times
        # already weigh the mid-range); Min-SNR's gain was measured for epsilon, so flow keeps the weights it won with
        chosen["optim.loss_weighting"] = "uniform"
    return base, chosen
