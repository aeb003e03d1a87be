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

    def sweep(self) -> list[dict[str, object]]:
        return [SWEEP[i] for i in self.sweep_pick] if self.sweep_pick else SWEEP

    def variants(self) -> list[Variant]:
        return [VARIANTS[i] for i in self.variant_pick] if self.variant_pick else VARIANTS

    @property
    def tag(self) -> str:
        """A short hash of the settings, the sweep and the lever table: the cache key prefix."""
        blob = json.dumps([dataclasses.asdict(self), SWEEP, VARIANTS, GREEN_V2], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


MODES: dict[str, Mode] = {
    # ~30 min alone on 2 CPU cores is the aim; the lead sizes it from a first sitting (runs are cached)
    "quick": Mode(schedule_images=48_000, sweep_images=24_000, eval_samples=1000, tuned_evals=8,
                  run_evals_per_tuned=16, reference_evals_per_tuned=4, seeds=3, ablation_seeds=1,
                  early_stop_factor=2.0),
    "full": Mode(preset="tiny", resolution=32, schedule_images=256_000, sweep_images=96_000, tuned_evals=12,
                 seeds=3, ablation_seeds=2, encoder_steps=1000),
    # the 2-minute smoke: scikit-learn's digits at 16 px, a handful of steps, 16 evaluation images
    "smoke": Mode(preset="pico", resolution=16, dataset="digits", schedule_images=640, sweep_images=320,
                  eval_samples=16, eval_sample_steps=4, tuned_evals=4, run_evals_per_tuned=4,
                  reference_evals_per_tuned=2, green_horizons=(0.5, 1.0), seeds=1, early_stop_factor=2.0,
                  sweep_pick=(0, 4), variant_pick=(0, 3, 6), encoder_steps=5),
}

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


# each lever alone on the tuned baseline; "green v1" the recipe as it stands. Green v2 (GREEN_V2, or when
# that is None: green v1 plus, per config key, the value that helped most alone, if it gained >= MIN_GAIN)
VARIANTS: list[Variant] = [
    Variant("green v1 (min-snr, cosine, EMA, bf16 where native)", "green"),
    Variant("+min-snr", "tuned", {"optim.loss_weighting": "min-snr"}),
    Variant("+cosine schedule", "tuned", {"optim.beta_schedule": "squaredcos_cap_v2"}),
    Variant("+logit-normal timesteps (SD3)", "tuned", {"optim.timestep_sampling": "logit-normal"}),
    Variant("+SpeeD timesteps", "tuned", {"optim.timestep_sampling": "speed"}),
    Variant("+immiscible noise", "tuned", {"optim.noise_assignment": "immiscible"}),
    Variant("+REPA (bench encoder)", "tuned", {"optim.align": "repa", "optim.align_encoder": "{encoder}"}),
    Variant("+dispersive", "tuned", {"optim.align": "dispersive"}),
    Variant("+v objective", "tuned", {"optim.objective": "v"}),
    Variant("+flow objective", "tuned", {"optim.objective": "flow"}),
    Variant("+post-hoc EMA", "tuned", {"optim.ema_snapshots": 16}, post_hoc_ema=True),
    Variant("+DPM-Solver++ sampler", "tuned", {"optim.sampler": "dpm-solver"}),
    Variant("+UniPC sampler", "tuned", {"optim.sampler": "unipc"}),
]
GREEN_V2: dict[str, object] | None = None
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


def compose_green_v2(gains: dict[str, float | None]) -> dict[str, object]:
    """Green v2's keys: :data:`GREEN_V2` when set, else per config key the lever value with the largest mean
    gain over the tuned baseline (``gains``: variant name -> gain, None: failed or not reached), if it is
    at least :data:`MIN_GAIN`. Levers green v1 already holds (min-snr, cosine) are kept by the base."""
    if GREEN_V2 is not None:
        return dict(GREEN_V2)
    best: dict[str, tuple[float, dict[str, object]]] = {}
    for variant in VARIANTS:
        gain = gains.get(variant.name)
        if variant.base != "tuned" or gain is None or gain < MIN_GAIN or variant.post_hoc_ema:
            continue
        key = next(iter(variant.sets))
        if key not in best or gain > best[key][0]:
            best[key] = (gain, variant.sets)
    chosen: dict[str, object] = {}
    for _, sets in best.values():
        chosen |= sets
    return chosen
