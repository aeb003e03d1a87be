"""Fine-tuning a text-to-image pipeline to a concept it has not seen: energy per step and energy to a
validation-loss target for LoRA vs a full fine-tune, cached vs uncached latents and text embeddings, and early
stopping vs a fixed schedule (``greendiff finetune``'s job, on the CPU).

1. The base (``bench/_finetune_base.py``): a small Stable-Diffusion-layout pipeline greendiff builds itself:
   a nano VAE from ``greendiff vae train``, a word-level CLIP tokenizer and a small random CLIP text encoder,
   a random UNet2DConditionModel, then a full fine-tune on captioned digits 0-8 ("a handwritten digit
   zero" ... "eight") at 16x16. It never sees a nine.
2. Each variant fine-tunes the base on the nines of scikit-learn's digits, captioned "a handwritten digit
   nine", ``finetune.validation_images`` of them held out for the validation loss (fixed timesteps and noise),
   evaluated every ``--eval-every`` steps; each starts from an empty latent/text cache of its own:

   - ``lora``: ``greendiff finetune``'s defaults (LoRA rank 8, lr 1e-4, latents and text embeddings cached,
     early stopping on the validation loss, patience ``--patience``, at most ``--max-steps``);
   - ``lora-fixed``: the same, patience 0: the fixed schedule of ``--max-steps``;
   - ``lora-uncached``: ``--no-latent-cache --no-text-cache``, ``--uncached-steps`` fixed steps (per step);
   - ``full``: ``--full`` with its defaults (lr 1e-5, early stopping);
   - ``full-fixed``: ``--full``, patience 0, ``--max-steps``.
3. Energy per step: (train + encode phases) / steps, except a cached run's ``encode`` (a one-off, shown on
   its own). Target: the lowest validation loss the fixed LoRA schedule reaches, plus 2 %. Energy to the
   target: the run's energy (evaluations, samples and the one-off encode included) at its first evaluation at
   or below it.

Runs go through ``run_finetune`` (``greendiff finetune``'s job) with the benchmark's ledger, priced in France.
Resumable: each step's result is cached in ``bench/results/finetune/<key>-<name>.json`` (the key hashes the
settings; a run whose folder is gone is redone); delete the folder to start again. About 25 min alone on 2
cores (estimate from timed steps; see the section for the measured wall time).

    python bench/finetune.py [--max-steps 500] [--pretrain-steps 1000] [--write-benchmarks]
    python bench/finetune.py --smoke   # a tiny base and 3-step runs, ~1 min; in bench/results/finetune/smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _finetune_base import (  # noqa: E402
    CAPTION, DIGIT_WORDS, NEW_DIGIT, SMOKE_BASE, BaseSettings, build_base, finetune, read_run, save_random_pipeline,
)
from _report import machine, today, write_section  # noqa: E402
from latent import times, wh  # noqa: E402  (the same units and ratios as the latent section)

RESULTS = Path(__file__).resolve().parent / "results" / "finetune"
KEY = "finetune"
TARGET_MARGIN = 1.02  # the target: the fixed LoRA schedule's lowest validation loss + 2 %
LONG_STEPS = 2000  # the schedule "well past the plateau" of the early-stopping pair


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the benchmark runs (the result keys hash it)."""

    base: BaseSettings = BaseSettings()
    max_steps: int = 500
    eval_every: int = 25
    patience: int = 4
    uncached_steps: int = 100
    validation_images: int = 16
    sweep_steps: int = 30

    @property
    def tag(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self)).encode()).hexdigest()[:8]


SMOKE = Settings(base=SMOKE_BASE, max_steps=3, eval_every=1, patience=1, uncached_steps=3, validation_images=16,
                 sweep_steps=3)


def variants(s: Settings) -> dict[str, dict]:
    """Each variant's config keys over ``greendiff finetune``'s defaults (the flags it stands for in comments)."""
    fixed = {"stop.patience": 0}
    return {
        "lora": {},
        "lora-fixed": fixed,  # --patience 0
        "lora-uncached": {**fixed, "run.max_steps": s.uncached_steps,  # --no-latent-cache --no-text-cache
                          "data.latent_cache": False, "finetune.text_cache": False},
        "full": {"finetune.method": "full"},  # --full
        "full-fixed": {"finetune.method": "full", **fixed},
        # LoRA at a 10x learning rate, run well past its plateau (as users set "enough steps"): with and without
        # early stopping (--lr 1e-3 --max-steps 2000 [--patience 0])
        "lora-lr1e-3": {"optim.lr": 1e-3, "run.max_steps": LONG_STEPS},
        "lora-lr1e-3-fixed": {"optim.lr": 1e-3, "run.max_steps": LONG_STEPS, **fixed},
    }


class Bench:
    """The benchmark's work folder, ledger and per-step result cache."""

    def __init__(self, settings: Settings, results: Path) -> None:
        self.s, self.results, self.work = settings, results, results / "work"
        self.ledger = results / "ledger.sqlite"

    def cached(self, name: str, make, needs_dir: bool = False) -> dict:
        """The result stored under ``name``, else ``make()``'s, stored first (a benchmark spans sessions).
        ``needs_dir``: the result names a folder under the work dir (``dir``); when it is gone it is made again."""
        path = self.results / f"{self.s.tag}-{name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            if not needs_dir or (self.work / result["dir"]).is_dir():
                return result
        started = time.perf_counter()
        result = {**make(), "wall_s": None}
        result["wall_s"] = time.perf_counter() - started
        self.results.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        return result

    def base(self) -> dict:
        s = self.s.base
        return {**build_base(self.work, s, self.ledger, self.work / "base-cache"), "dir": "base"}

    def variant(self, name: str, base: dict, overrides: dict) -> dict:
        """One fine-tune of the base on the nines, from an empty cache of its own."""
        s = self.s
        keys = {"finetune.pipeline": str(self.work / base["pipeline"]),
                "data.dataset": str(self.work / base["data"]["new"]), "run.max_steps": s.max_steps,
                "stop.eval_every": s.eval_every, "stop.patience": s.patience,
                "finetune.validation_images": s.validation_images,
                "data.latent_cache_dir": str(self.work / f"{name}-cache" / "latents"), **overrides}
        shutil.rmtree(self.work / f"{name}-cache", ignore_errors=True)
        run_dir = finetune(self.work / name, keys, self.ledger)
        run = {"name": name, "dir": run_dir.relative_to(self.work).as_posix(), "overrides": overrides,
               **read_run(run_dir)}
        last = run["curve"][-1]["val_loss"] if run["curve"] else float("nan")
        print(f"{name}: {run['steps']} steps ({run['stop_reason'] or 'max steps'}), val loss {last:.4f}, "
              f"{run['energy_kwh'] * 1e3:.3f} Wh", file=sys.stderr)
        return run


#: UNet widths of the random pipelines whose energy per step the size sweep measures (LoRA, full, LoRA with
#: gradient checkpointing), and its steps per run: LoRA's saving per step is the weight gradients and optimizer
#: state it skips, which grow with the network while its own adapters stay small.
SWEEP_WIDTHS = ((32, 64), (64, 128), (128, 256))
SWEEP_VARIANTS = {"lora": {}, "full": {"finetune.method": "full"},
                  "lora+checkpointing": {"finetune.gradient_checkpointing": True}}


def sweep_run(bench: Bench, widths: tuple[int, ...], name: str, overrides: dict, base: dict) -> dict:
    """``sweep_steps`` steps of variant ``name`` on a random pipeline of UNet ``widths`` (the base's VAE and text
    encoder), on the nines with a shared latent cache; its parameters and train-phase energy per step."""
    label = "x".join(map(str, widths))
    pipeline = bench.work / f"sweep-{label}" / "pipeline"
    if not (pipeline / "model_index.json").is_file():
        save_random_pipeline(pipeline, bench.work / "vae", dataclasses.replace(bench.s.base, unet_channels=widths))
    keys = {"finetune.pipeline": str(pipeline), "data.dataset": str(bench.work / base["data"]["new"]),
            "run.max_steps": bench.s.sweep_steps, "stop.eval_every": 0, "stop.patience": 0,
            "run.sample_every": bench.s.sweep_steps, "run.checkpoint_every": bench.s.sweep_steps,
            "data.latent_cache_dir": str(bench.work / "sweep-cache" / "latents"), **overrides}
    run = read_run(finetune(bench.work / f"sweep-{label}" / name, keys, bench.ledger))
    train = run["phases"]["train"]
    return {"widths": list(widths), "variant": name, "params": run["params"], "steps": run["steps"],
            "train_kwh_per_step": train["energy_kwh"] / run["steps"], "train_s_per_step": train["duration_s"] / run["steps"]}


def sweep(bench: Bench, base: dict) -> list[dict]:
    """Every (width, variant) of the size sweep, each cached."""
    return [bench.cached(f"sweep-{'x'.join(map(str, w))}-{name}", lambda w=w, n=name, o=o: sweep_run(bench, w, n, o, base))
            for w in SWEEP_WIDTHS for name, o in SWEEP_VARIANTS.items()]


def sweep_report(rows: list[dict], steps: int) -> list[str]:
    """The size sweep as a table: energy per step of LoRA and full, and what checkpointing costs."""
    by = {(tuple(r["widths"]), r["variant"]): r for r in rows}
    lines = [f"Energy per training step by network size ({steps} steps each, random SD-layout pipelines "
             "around the base's VAE and text encoder, batch 8, cached latents and text; train phase only):", "",
             "| UNet widths | full UNet parameters | LoRA parameters | full | LoRA | LoRA saves | LoRA + gradient "
             "checkpointing | checkpointing costs |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for widths in SWEEP_WIDTHS:
        lora, full, gc = (by[(widths, v)] for v in SWEEP_VARIANTS)
        lines.append(f"| {'x'.join(map(str, widths))} | {full['params']:,} | {lora['params']:,} | "
                     f"{full['train_kwh_per_step'] * 1e6:.3f} mWh | {lora['train_kwh_per_step'] * 1e6:.3f} mWh | "
                     f"{1 - lora['train_kwh_per_step'] / full['train_kwh_per_step']:+.0%} | "
                     f"{gc['train_kwh_per_step'] * 1e6:.3f} mWh | "
                     f"{gc['train_kwh_per_step'] / lora['train_kwh_per_step'] - 1:+.0%} |")
    return lines


def per_step_kwh(run: dict) -> float:
    """(train + encode) / steps; a cached run's encode is its one-off (one window), so it is left out."""
    phases = run["phases"]
    train = phases["train"]["energy_kwh"]
    encode = phases.get("encode", {"energy_kwh": 0.0, "windows": 0})
    cached = run["overrides"].get("data.latent_cache", True)
    return (train + (0.0 if cached else encode["energy_kwh"])) / run["steps"]


def energy_to_reach(curve: list[dict], target: float) -> tuple[int, float] | None:
    """``(step, run energy in kWh)`` at the first evaluation at or below ``target``, or None."""
    return next(((p["step"], p["energy_kwh"]) for p in curve if p["val_loss"] <= target), None)


def measure(bench: Bench) -> dict:
    """The base, every variant (each cached), the target and each run's energy to it."""
    base = bench.cached("base", bench.base, needs_dir=True)
    runs = {name: bench.cached(name, lambda n=name, o=o: bench.variant(n, base, o), needs_dir=True)
            for name, o in variants(bench.s).items()}
    sizes = sweep(bench, base)
    fixed_curve = runs["lora-fixed"]["curve"]
    target = min(p["val_loss"] for p in fixed_curve) * TARGET_MARGIN
    summary = {}
    for name, r in runs.items():
        reached = energy_to_reach(r["curve"], target)
        summary[name] = {"kwh_per_step": per_step_kwh(r),
                         "one_off_encode_kwh": r["phases"].get("encode", {}).get("energy_kwh", 0.0)
                         if r["overrides"].get("data.latent_cache", True) else None,
                         "first_val_loss": r["curve"][0]["val_loss"], "final_val_loss": r["curve"][-1]["val_loss"],
                         "best_val_loss": min(p["val_loss"] for p in r["curve"]),
                         "target_step": reached[0] if reached else None,
                         "to_target_kwh": reached[1] if reached else None}
    return {"date": today(), "machine": machine(), "threads": os.environ.get("GREENDIFF_THREADS", "all cores"),
            "settings": dataclasses.asdict(bench.s), "base": base, "runs": runs, "target_val_loss": target,
            "summary": summary, "sweep": sizes,
            "command": f"python bench/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}".rstrip()}


def base_report(result: dict) -> list[str]:
    b, s = result["base"], result["settings"]["base"]
    pre, vae = b["pretrain"], b["vae"]
    return [f"Base (`bench/_finetune_base.py`): a Stable-Diffusion-layout pipeline built by greendiff: VAE "
            f"`greendiff vae train --preset nano` ({vae['steps']} steps, {wh(vae['energy_kwh'])}, PSNR "
            f"{vae['psnr_db']:.1f} dB, scaling factor {vae['scaling_factor']:.3f}), a word-level CLIP tokenizer and a "
            f"random {s['text_layers']}-layer CLIP text encoder (hidden {s['text_hidden']}, frozen), a "
            "UNet2DConditionModel "
            f"({'/'.join(map(str, s['unet_channels']))} channels, {pre['params']:,} parameters) pre-trained by a full "
            f"fine-tune on {b['seen_images']:,} captioned digits 0-8 at {s['resolution']}x{s['resolution']} "
            f"({pre['steps']} steps, batch {s['pretrain_batch_size']}, lr {s['pretrain_lr']:g}; validation loss "
            f"{pre['curve'][0]['val_loss']:.4f} at step {pre['curve'][0]['step']} -> "
            f"{pre['curve'][-1]['val_loss']:.4f}; {wh(pre['energy_kwh'])}). The new concept: {b['new_images']} nines, "
            f"\"{CAPTION.format(DIGIT_WORDS[NEW_DIGIT])}\"."]


def stopped(run: dict) -> str:
    reason = run["stop_reason"]
    return "max steps" if not reason or reason.startswith("max_steps") else "early stop"


def report(result: dict) -> str:
    s, runs, summary = result["settings"], result["runs"], result["summary"]
    lines = ["## Fine-tuning (greendiff finetune)", "", f"- Command: `{result['command']}`",
             f"- Machine: {result['machine']}; threads: {result['threads']}", f"- Date: {result['date']}", "",
             *base_report(result), "",
             f"Each run fine-tunes the base on the nines ({s['validation_images']} held out: validation loss at fixed "
             f"timesteps and noise every {s['eval_every']} steps), `greendiff finetune`'s defaults otherwise (batch 8, "
             f"constant lr, LoRA rank 8 lr 1e-4, full lr 1e-5, early stopping patience {s['patience']}, at most "
             f"{s['max_steps']} steps), each from an empty latent/text cache. Energy per step: (train + encode) / "
             "steps, a cached run's one-off encode shown on its own. Target: the fixed LoRA schedule's lowest "
             f"validation loss + 2 % = **{result['target_val_loss']:.4f}**; energy to it: the run's energy "
             "(evaluations, samples, checkpoints and the one-off encode included) at its first evaluation at or "
             "below it.", "",
             "| run | trains (parameters) | steps | stopped | energy per step | one-off encode | total energy "
             "| val loss first -> final (best) | energy to target (step) |",
             "|---|---|---:|---|---:|---:|---:|---|---:|"]
    for name, r in runs.items():
        m = summary[name]
        to = f"{wh(m['to_target_kwh'])} ({m['target_step']})" if m["to_target_kwh"] is not None else "not reached"
        encode = wh(m["one_off_encode_kwh"]) if m["one_off_encode_kwh"] is not None else "— (every step)"
        trains = "LoRA" if r["overrides"].get("finetune.method", "lora") == "lora" else "full UNet"
        trains += f" ({r['params']:,})" if r["params"] else ""
        lines.append(f"| {name} | {trains} | {r['steps']} | {stopped(r)} | "
                     f"{m['kwh_per_step'] * 1e6:.3f} mWh | {encode} | {wh(r['energy_kwh'])} | "
                     f"{m['first_val_loss']:.4f} -> {m['final_val_loss']:.4f} ({m['best_val_loss']:.4f}) | {to} |")
    lines += ["", *sweep_report(result["sweep"], s["sweep_steps"]), "", "Reading:", "", *reading(result)]
    return "\n".join(lines)


def reading(result: dict) -> list[str]:
    """Where the defaults save energy, and by how much, computed from the numbers (no winner assumed)."""
    m, runs = result["summary"], result["runs"]
    lora, full = m["lora"], m["full"]
    out = [f"- LoRA vs full fine-tune, per step: LoRA {lora['kwh_per_step'] * 1e6:.3f} mWh, full "
           f"{full['kwh_per_step'] * 1e6:.3f} mWh: LoRA takes {times(full['kwh_per_step'], lora['kwh_per_step'])} "
           "per step."]
    for a, b in (("lora", "full"), ("lora-fixed", "full-fixed")):
        ea, eb = m[a]["to_target_kwh"], m[b]["to_target_kwh"]
        if ea is not None and eb is not None:
            out.append(f"- To the target, {a} {wh(ea)} vs {b} {wh(eb)}: {a} takes {times(eb, ea)} energy.")
        else:
            out.append(f"- To the target: {a} {wh(ea)}, {b} {wh(eb)} (best validation loss {m[a]['best_val_loss']:.4f} "
                       f"vs {m[b]['best_val_loss']:.4f}).")
    by = {(tuple(r["widths"]), r["variant"]): r["train_kwh_per_step"] for r in result["sweep"]}
    saves = [1 - by[(w, "lora")] / by[(w, "full")] for w in SWEEP_WIDTHS]
    costs = [by[(w, "lora+checkpointing")] / by[(w, "lora")] - 1 for w in SWEEP_WIDTHS]
    out.append(f"- By network size (random pipelines): LoRA's saving per step goes {' -> '.join(f'{x:+.0%}' for x in saves)} "
               f"from UNet {'x'.join(map(str, SWEEP_WIDTHS[0]))} to {'x'.join(map(str, SWEEP_WIDTHS[-1]))}; gradient "
               f"checkpointing costs {' / '.join(f'{x:+.0%}' for x in costs)} energy per step (it buys memory).")
    cached, uncached = m["lora-fixed"]["kwh_per_step"], m["lora-uncached"]["kwh_per_step"]
    saving, once = uncached - cached, m["lora-fixed"]["one_off_encode_kwh"] or 0.0
    out.append(f"- Cached latents and text embeddings (LoRA): {cached * 1e6:.3f} mWh per step vs "
               f"{uncached * 1e6:.3f} mWh uncached ({times(uncached, cached)} per step cached); the one-off encode "
               f"({wh(once)}) pays back " + (f"after {once / saving:.0f} steps." if saving > 0
                                            else "never here (uncached steps measured no dearer)."))
    fast, slow = m["lora-lr1e-3-fixed"], m["lora-fixed"]
    if fast["to_target_kwh"] is not None and slow["to_target_kwh"] is not None:
        out.append(f"- LoRA's learning rate: at 1e-3 it reaches the target at step {fast['target_step']} "
                   f"({wh(fast['to_target_kwh'])}) against step {slow['target_step']} ({wh(slow['to_target_kwh'])}) "
                   f"at the default 1e-4: {times(slow['to_target_kwh'], fast['to_target_kwh'])} energy; best validation "
                   f"loss {fast['best_val_loss']:.4f} vs {slow['best_val_loss']:.4f}.")
    tail = [p["val_loss"] for p in runs["lora-lr1e-3-fixed"]["curve"]]
    tail = tail[-max(1, len(tail) // 4):]
    mean = sum(tail) / len(tail)
    spread = (sum((v - mean) ** 2 for v in tail) / len(tail)) ** 0.5
    out.append(f"- The 2000-step LoRA run at 1e-3 plateaus: its last quarter averages {mean:.4f} (sd {spread:.4f} between "
               f"evaluations); the early-stopped run's best, {m['lora-lr1e-3']['best_val_loss']:.4f}, is "
               f"{m['lora-lr1e-3']['best_val_loss'] / mean - 1:+.1%} from that plateau, for "
               f"{times(runs['lora-lr1e-3-fixed']['energy_kwh'], runs['lora-lr1e-3']['energy_kwh'])} energy.")
    for a, b in (("lora", "lora-fixed"), ("full", "full-fixed"), ("lora-lr1e-3", "lora-lr1e-3-fixed")):
        ea, eb = runs[a]["energy_kwh"], runs[b]["energy_kwh"]
        out.append(f"- Early stopping vs the fixed {runs[b]['steps']}-step schedule ({a}): {runs[a]['steps']} steps, "
                   f"{wh(ea)} vs {wh(eb)} ({times(eb, ea)} energy); final validation loss {m[a]['final_val_loss']:.4f} "
                   f"vs {m[b]['final_val_loss']:.4f}, best {m[a]['best_val_loss']:.4f} vs {m[b]['best_val_loss']:.4f}.")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=Settings.max_steps)
    parser.add_argument("--pretrain-steps", type=int, default=BaseSettings.pretrain_steps)
    parser.add_argument("--vae-steps", type=int, default=BaseSettings.vae_steps)
    parser.add_argument("--smoke", action="store_true", help="a tiny base and 3-step runs, in results/finetune/smoke")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    if args.smoke and args.write_benchmarks:
        parser.error("--smoke results are not benchmarks: drop --write-benchmarks (the section is printed)")
    base = BaseSettings(pretrain_steps=args.pretrain_steps, vae_steps=args.vae_steps)
    settings = SMOKE if args.smoke else Settings(base=base, max_steps=args.max_steps)
    if args.smoke:  # a smoke run shares the machine: one thread wastes no time spinning
        os.environ["GREENDIFF_THREADS"] = "1"
    bench = Bench(settings, RESULTS / "smoke" if args.smoke else RESULTS)
    started = time.perf_counter()
    result = measure(bench)
    result["wall_s_this_call"] = time.perf_counter() - started
    summary = bench.results / ("finetune-smoke.json" if args.smoke else "finetune.json")
    summary.write_text(json.dumps(result, indent=2))
    text = report(result)
    print(text)
    if args.write_benchmarks:
        write_section(KEY, text)


if __name__ == "__main__":
    main()
