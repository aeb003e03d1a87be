"""Latent against pixel diffusion on the bundled MNIST: energy to one FID target for a pixel UNet, a latent
UNet and a latent DiT of similar size, epsilon against flow matching, and what the latent cache saves.

Everything runs on the CPU through the ``greendiff`` CLI, class-conditional (a DiT needs labels), green
recipe, seed 0, bundled MNIST at ``--resolution 32``:

1. a VAE: ``greendiff vae train --preset nano --max-steps VAE_STEPS``: energy, scaling factor, MSE, PSNR
   and the FID of its reconstructions (from its ``vae_train.json``);
2. the reference: the pixel UNet (``nano``) for ``--max-steps`` steps, FID evaluated in training every
   ``--eval-every`` steps (``--eval-samples`` images, ``--eval-sample-steps`` DDIM steps, guidance 1 so
   FID measures the conditional model alone). Its final in-training FID is the target;
3. a latent UNet (``nano``) and a latent DiT (``nano``, patch 2), epsilon, same settings with
   ``--target-fid`` = the target (they stop once they reach it). Each starts from an empty latent cache
   of its own, so its energy includes the one-off ``encode`` phase;
4. the better latent backbone (less energy to the target; if neither reached it, the lower final FID)
   again with ``--objective flow``;
5. every run's final quality: ``greendiff eval --samples N --seeds S --sample-steps 20 --guidance-scale 1``
   (FID mean and standard deviation over the seeds; eval energy per 1,000 images, VAE decode included);
6. energy to the target: the run's energy (evaluations included) at its first evaluation at or below the
   target, for latent runs also with the VAE's training energy added (a one-off a user without a
   pretrained VAE pays), and the run's ``encode`` phase (inside its energy) shown on its own;
7. the latent cache: the winning latent backbone for ``--cache-steps`` steps three ways: cache cold (an
   empty ``--latent-cache-dir``: pays the encode), warm (the same folder again: a hit) and
   ``--no-latent-cache`` (encodes every batch); energy per step = (train + encode phases) / steps, and the
   break-even in epochs = one-off encode / ((uncached - warm per step) * steps per epoch);
8. ``--compile``: the winning backbone on the warm cache with ``torch.compile``, against the warm run: the
   steady energy per step (after the first sixth of the steps) and the compilation's one-off;
9. when the DiT did not reach the target: the DiT again with patch 1 (4x the tokens), its first lever.

Parameters and MACs per image are read from each run's start record in ``metrics.jsonl``. Resumable:
each step's result is cached in ``bench/results/latent/<key>.json`` (the key hashes the settings; a run
whose folder is gone is redone); delete the folder to start again. 22 min alone on 2 Xeon cores with
AVX512-BF16 (2026-11-30), 5 of them the VAE's 400 steps and 7 the pixel UNet's 2,000.

    python bench/latent.py [--vae-steps 400] [--max-steps 2000] [--cache-steps 300] [--write-benchmarks]
    python bench/latent.py --smoke   # digits at 16 px, a few steps, 20 eval samples: < 2 min, results in
                                     # bench/results/latent/smoke (delete it after)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
RESULTS = Path(__file__).resolve().parent / "results" / "latent"
KWH_PER_J = 1 / 3.6e6


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the benchmark runs (the result keys hash it)."""

    dataset: str = "mnist"
    resolution: int = 32
    preset: str = "nano"
    vae_steps: int = 400
    vae_eval_images: int = 1000
    max_steps: int = 2000
    eval_every: int = 200
    eval_samples: int = 200
    eval_sample_steps: int = 20
    final_samples: int = 1000
    final_seeds: int = 3
    final_sample_steps: int = 20
    cache_steps: int = 300
    batch_size: int = 64
    patch_size: int = 2

    @property
    def tag(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self)).encode()).hexdigest()[:8]


SMOKE = Settings(dataset="digits", resolution=16, vae_steps=3, vae_eval_images=50, max_steps=10, eval_every=5,
                 eval_samples=20, eval_sample_steps=5, final_samples=20, final_seeds=2, final_sample_steps=5,
                 cache_steps=5)


class Bench:
    """Runs the CLI with this benchmark's own ledger and caches, and keeps each step's result on disk."""

    def __init__(self, settings: Settings, results: Path) -> None:
        self.s, self.results, self.work = settings, results, results / "work"
        self.env = {**os.environ, "GREENDIFF_LEDGER": str(results / "ledger.sqlite"),
                    "GREENDIFF_CACHE_DIR": str(results / "cache")}
        if settings == SMOKE:  # a smoke run shares the machine: one thread wastes no time spinning
            self.env["GREENDIFF_THREADS"] = "1"

    def cli(self, args: list[str]) -> str:
        done = subprocess.run([EXE, *args], capture_output=True, text=True, env=self.env)
        if done.returncode != 0:
            raise SystemExit(f"greendiff {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def cached(self, name: str, make, needs_dir: bool = False) -> dict:
        """The result stored under ``name``, else ``make()``'s, stored first (a benchmark spans sessions).
        ``needs_dir``: the result names a folder under the work dir (``dir``) that later steps read; when it
        is gone the step is made again."""
        path = self.results / f"{self.s.tag}-{name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            if not needs_dir or (self.work / result["dir"]).is_dir():
                return result
        result = make()
        self.results.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        return result

    def common(self, steps: int) -> list[str]:
        s = self.s
        return ["--dataset", s.dataset, "--resolution", str(s.resolution), "--preset", s.preset,
                "--conditioning", "class", "--guidance-scale", "1", "--batch-size", str(s.batch_size),
                "--max-steps", str(steps), "--country", "FRA", "--sample-steps", str(s.eval_sample_steps),
                "--set", "run.num_samples=16", "--set", f"run.sample_every={steps}",
                "--set", f"run.checkpoint_every={steps}"]


def train_vae(bench: Bench) -> dict:
    """Step 1: the VAE, its cost and its reconstruction scores (from its ``vae_train.json``)."""
    from safetensors import safe_open

    s, out = bench.s, bench.work / "vae"
    shutil.rmtree(out, ignore_errors=True)  # a run cut off by the end of a session starts again
    bench.cli(["vae", "train", "--dataset", s.dataset, "--resolution", str(s.resolution), "--preset", s.preset,
               "--max-steps", str(s.vae_steps), "--eval-images", str(s.vae_eval_images), "--country", "FRA",
               "--output-dir", str(out)])
    info = json.loads((out / "vae_train.json").read_text())
    with safe_open(str(out / "diffusion_pytorch_model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    rec = info["reconstruction"]
    return {"dir": "vae", "steps": info["steps"], "params": params, "energy_kwh": info["energy_kwh"],
            "scaling_factor": info["scaling_factor"], "mse": rec["mse"], "psnr_db": rec["psnr_db"],
            "recon_fid": rec["fid"], "recon_images": rec["images"], "final_loss": info["final_loss"]}


def read_run(bench: Bench, run_dir: Path) -> dict:
    """A finished run: its start record, FID curve, energy, phases and why it stopped (no machine paths)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "start")
    emissions = json.loads((run_dir / "emissions.json").read_text())
    curve = [{k: r.get(k) for k in ("step", "energy_kwh", "fid", "class_accuracy")} for r in records
             if r.get("event") == "eval"]
    phases = {p["name"]: {"windows": p["count"], "energy_kwh": p["energy_j"] * KWH_PER_J, "duration_s": p["duration_s"]}
              for p in emissions["phases"]}
    return {"dir": run_dir.relative_to(bench.work).as_posix(), "model": start.get("model"), "params": start["params"],
            "macs_per_image": start["macs_per_image"], "precision": start.get("precision"),
            "steps": max(r.get("step", 0) for r in records), "curve": curve, "phases": phases,
            "energy_kwh": emissions["energy_kwh"], "duration_s": emissions["duration_s"],
            "stop_reason": emissions.get("stop_reason", "")}


def train(bench: Bench, name: str, extra: list[str], steps: int | None = None) -> dict:
    """One ``greendiff train`` run in ``work/<name>`` (any earlier attempt removed first)."""
    out = bench.work / name
    shutil.rmtree(out, ignore_errors=True)
    bench.cli(["train", *bench.common(steps or bench.s.max_steps), "--name", name, "--output-dir", str(out), *extra])
    (run_dir,) = out.iterdir()
    result = {"name": name, **read_run(bench, run_dir)}
    print(f"{name}: {result['model']}, {result['params']:,} parameters, {result['macs_per_image'] / 1e6:.2f} M MACs "
          f"per image, {result['steps']} steps, {result['energy_kwh'] * 1e3:.3f} Wh", file=sys.stderr)
    return result


def evals(bench: Bench) -> list[str]:
    s = bench.s
    return ["--eval-every", str(s.eval_every), "--eval-samples", str(s.eval_samples),
            "--eval-sample-steps", str(s.eval_sample_steps)]


def latent_run(bench: Bench, name: str, backbone: str, objective: str, target: float,
               patch_size: int | None = None) -> dict:
    """Step 3/4/9: a latent run to the target, from an empty latent cache of its own (it pays its encode)."""
    cache_dir = bench.work / f"{name}-latents"
    shutil.rmtree(cache_dir, ignore_errors=True)
    extra = ["--vae", str(bench.work / "vae"), "--backbone", backbone, "--objective", objective,
             "--target-fid", repr(target), "--latent-cache-dir", str(cache_dir), *evals(bench)]
    if backbone == "dit":
        extra += ["--patch-size", str(patch_size or bench.s.patch_size)]
    return train(bench, name, extra)


def score(bench: Bench, run: dict) -> dict:
    """Step 5: ``greendiff eval --json`` of a run: FID over the seeds and the eval's energy per 1,000 images."""
    s = bench.s
    out = json.loads(bench.cli(["eval", "--run", str(bench.work / run["dir"]), "--samples", str(s.final_samples),
                                "--seeds", str(s.final_seeds), "--sample-steps", str(s.final_sample_steps),
                                "--guidance-scale", "1", "--kid-subset", str(min(s.final_samples, 1000)),
                                "--country", "FRA", "--json"]))
    fids = [r["fid"] for r in out["results"]]
    images = s.final_samples * s.final_seeds
    return {"fid_by_seed": fids, "fid_mean": sum(fids) / len(fids), "fid_std": (out.get("spread") or {}).get("fid"),
            "class_accuracy": out.get("class_accuracy"), "sampler": out.get("sampler"), "images": images,
            "energy_kwh": out["energy_kwh"], "kwh_per_1000_images": out["energy_kwh"] / images * 1000}


def energy_to_reach(curve: list[dict], target_fid: float) -> float | None:
    """Training energy (evaluations included) at the first evaluation at or below ``target_fid``."""
    return next((p["energy_kwh"] for p in curve if p["fid"] is not None and p["fid"] <= target_fid), None)


def better(runs: dict, finals: dict, target: float) -> str:
    """The latent backbone with less energy to the target (either reached it), else the lower final FID."""
    reach = {b: energy_to_reach(runs[f"latent-{b}"]["curve"], target) for b in ("unet", "dit")}
    reached = {b: e for b, e in reach.items() if e is not None}
    if reached:
        return min(reached, key=reached.get)
    return min(("unet", "dit"), key=lambda b: finals[f"latent-{b}"]["fid_mean"])


def cache_runs(bench: Bench, backbone: str) -> dict:
    """Step 7: cold (empty cache dir), warm (same dir) and uncached runs of ``--cache-steps`` steps."""
    s, cache_dir = bench.s, bench.work / "cache-bench-latents"
    shutil.rmtree(cache_dir, ignore_errors=True)
    base = ["--vae", str(bench.work / "vae"), "--backbone", backbone]
    if backbone == "dit":
        base += ["--patch-size", str(s.patch_size)]
    ways = {}
    in_dir = ["--latent-cache-dir", str(cache_dir)]
    for way, extra in (("cold", in_dir), ("warm", in_dir), ("uncached", ["--no-latent-cache"])):
        run = train(bench, f"cache-{way}", [*base, *extra], steps=s.cache_steps)
        phases = run["phases"]
        encode = phases.get("encode", {"windows": 0, "energy_kwh": 0.0})
        ways[way] = {"steps": run["steps"], "train_kwh": phases["train"]["energy_kwh"],
                     "encode_kwh": encode["energy_kwh"], "encode_windows": encode["windows"],
                     "energy_kwh": run["energy_kwh"]}
    if ways["warm"]["encode_windows"] or ways["cold"]["encode_windows"] != 1:
        raise SystemExit(f"the cache runs did not hit/miss as expected: {ways}")
    (meta,) = cache_dir.glob("*/meta.json")
    num_images = json.loads(meta.read_text())["num_images"]
    # the cold run's encode is the one-off, not a per-step cost
    per_step = {w: (v["train_kwh"] + (v["encode_kwh"] if w == "uncached" else 0.0)) / v["steps"]
                for w, v in ways.items()}
    one_off = ways["cold"]["encode_kwh"]
    saving = per_step["uncached"] - per_step["warm"]
    steps_per_epoch = num_images / s.batch_size
    return {"backbone": backbone, "ways": ways, "kwh_per_step": per_step, "one_off_encode_kwh": one_off,
            "num_images": num_images, "steps_per_epoch": steps_per_epoch,
            "break_even_epochs": one_off / (saving * steps_per_epoch) if saving > 0 else None}


def steady_kwh_per_step(run_dir: Path, skip: int) -> tuple[float, float]:
    """``(energy per step after the first ``skip`` steps, energy of the first ``skip``)`` from the run's log
    records (every ``run.log_every`` steps: the run's energy so far)."""
    logs = {r["step"]: r["energy_kwh"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r and "energy_kwh" in r}
    first, last = min((k for k in logs if k >= skip), default=None), max(logs)
    if first is None or last <= first:
        raise SystemExit(f"{run_dir}: too few log records after step {skip} to measure a steady step")
    return (logs[last] - logs[first]) / (last - first), logs[first]


def compile_runs(bench: Bench, backbone: str) -> dict:
    """Step 8: ``--compile`` against the warm cache run (same latents, steps and settings): the steady energy
    per step after the first steps, and the compiled run's one-off (its first steps, compilation included,
    minus what they would cost at its own steady pace)."""
    s, skip = bench.s, max(1, bench.s.cache_steps // 6)
    base = ["--vae", str(bench.work / "vae"), "--backbone", backbone,
            "--latent-cache-dir", str(bench.work / "cache-bench-latents")]
    if backbone == "dit":
        base += ["--patch-size", str(s.patch_size)]
    compiled = train(bench, "compiled", [*base, "--compile"], steps=s.cache_steps)
    out = {"backbone": backbone, "steps": s.cache_steps, "skip": skip}
    for way, run_dir in (("eager", bench.work / "cache-warm"), ("compiled", bench.work / compiled["dir"])):
        (folder,) = run_dir.iterdir() if run_dir.name == "cache-warm" else (run_dir,)
        per_step, first = steady_kwh_per_step(folder, skip)
        out[way] = {"kwh_per_step": per_step, "first_steps_kwh": first,
                    "one_off_kwh": max(0.0, first - skip * per_step)}
    eager, fast = out["eager"]["kwh_per_step"], out["compiled"]["kwh_per_step"]
    saving = eager - fast
    out["break_even_steps"] = out["compiled"]["one_off_kwh"] / saving if saving > 0 else None
    return out


def compile_report(comp: dict) -> list[str]:
    e, c = comp["eager"], comp["compiled"]
    even = comp["break_even_steps"]
    return [f"`--compile` (latent {comp['backbone']}, {comp['steps']} steps on the warm cache; steady pace after step "
            f"{comp['skip']}): eager {e['kwh_per_step'] * 1e6:.4f} mWh per step, compiled "
            f"{c['kwh_per_step'] * 1e6:.4f} mWh per step; the compiled run's first {comp['skip']} steps cost "
            f"{wh(c['first_steps_kwh'])} ({wh(c['one_off_kwh'])} above its steady pace: the compilation). "
            + (f"Break-even after {even:,.0f} steps." if even is not None
               else "Compiled steps are no cheaper here: it never pays back.")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--cache-steps", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="tiny settings (digits, 16 px), in results/latent/smoke")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    if args.smoke and args.write_benchmarks:
        parser.error("--smoke results are not benchmarks: drop --write-benchmarks (the section is printed)")
    settings = SMOKE if args.smoke else Settings(vae_steps=args.vae_steps, max_steps=args.max_steps,
                                                 cache_steps=args.cache_steps)
    bench = Bench(settings, RESULTS / "smoke" if args.smoke else RESULTS)
    result = measure(bench)
    summary = bench.results.parent / ("latent-smoke.json" if args.smoke else "latent.json")
    summary.write_text(json.dumps(result, indent=2))
    text = report(result)
    print(text)
    if args.write_benchmarks:
        write_section("latent", text)


def measure(bench: Bench) -> dict:
    """Steps 1-7, each cached; the result with the target, the energies to it and the cache's numbers."""
    vae = bench.cached("vae", lambda: train_vae(bench), needs_dir=True)
    runs = {"pixel-unet": bench.cached("pixel-unet", lambda: train(bench, "pixel-unet", evals(bench)), needs_dir=True)}
    target = runs["pixel-unet"]["curve"][-1]["fid"]  # the reference's final in-training FID
    for b in ("unet", "dit"):
        runs[f"latent-{b}"] = bench.cached(
            f"latent-{b}", lambda b=b: latent_run(bench, f"latent-{b}", b, "epsilon", target), needs_dir=True)
    finals = {name: bench.cached(f"{name}-eval", lambda r=r: score(bench, r)) for name, r in runs.items()}
    best = better(runs, finals, target)
    flow = f"latent-{best}-flow"
    runs[flow] = bench.cached(flow, lambda: latent_run(bench, flow, best, "flow", target), needs_dir=True)
    finals[flow] = bench.cached(f"{flow}-eval", lambda: score(bench, runs[flow]))
    cache = bench.cached(f"cache-{best}", lambda: cache_runs(bench, best))
    compiled = bench.cached(f"compile-{best}", lambda: compile_runs(bench, best))
    if energy_to_reach(runs["latent-dit"]["curve"], target) is None:  # step 9: the DiT's first lever, patch 1
        runs["latent-dit-patch1"] = bench.cached(
            "latent-dit-patch1", lambda: latent_run(bench, "latent-dit-patch1", "dit", "epsilon", target, 1),
            needs_dir=True)
        finals["latent-dit-patch1"] = bench.cached("latent-dit-patch1-eval", lambda: score(bench, runs["latent-dit-patch1"]))
    reach = {}
    for name, r in runs.items():
        to = energy_to_reach(r["curve"], target)
        latent = name != "pixel-unet"
        encode = r["phases"].get("encode", {}).get("energy_kwh", 0.0) if latent else None
        reach[name] = {"kwh": to, "encode_kwh": encode,
                       "with_vae_kwh": to + vae["energy_kwh"] if latent and to is not None else None}
    return {"date": today(), "machine": machine(), "settings": dataclasses.asdict(bench.s), "vae": vae, "runs": runs,
            "target_fid": target, "best_latent_backbone": best, "energy_to_target": reach, "finals": finals,
            "cache": cache, "compile": compiled, "command": f"python bench/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}".rstrip()}


def wh(kwh: float | None) -> str:
    """Energy in Wh, or mWh below 1 Wh."""
    if kwh is None:
        return "not reached"
    return f"{kwh * 1e3:.3f} Wh" if kwh >= 1e-3 else f"{kwh * 1e6:.2f} mWh"


def report(result: dict) -> str:
    s, vae, runs = result["settings"], result["vae"], result["runs"]
    lines = ["## Latent vs pixel diffusion, DiT vs UNet, epsilon vs flow, latent cache (`bench/latent.py`)", "",
             f"- Command: `{result['command']}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
             f"- Bundled {s['dataset']} at {s['resolution']}x{s['resolution']}, class-conditional, green recipe, "
             f"seed 0, batch {s['batch_size']}, CPU. In-training FID every {s['eval_every']} steps "
             f"({s['eval_samples']} samples, {s['eval_sample_steps']} sampler steps, guidance 1); final scores "
             f"`greendiff eval --samples {s['final_samples']} --seeds {s['final_seeds']} --sample-steps "
             f"{s['final_sample_steps']} --guidance-scale 1`.",
             "", f"VAE (`greendiff vae train --preset {s['preset']}`, {vae['steps']} steps, {vae['params']:,} "
             f"parameters): {wh(vae['energy_kwh'])}, scaling factor {vae['scaling_factor']:.4f}, reconstruction of "
             f"{vae['recon_images']:,} images MSE {vae['mse']:.5f}, PSNR {vae['psnr_db']:.2f} dB, "
             f"FID {vae['recon_fid']:.2f}.",
             "", f"Target: the pixel UNet's final in-training FID, {result['target_fid']:.2f}. Energy to it: the run's "
             "energy (evaluations included) at its first evaluation at or below it; a latent run's includes its "
             "one-off `encode` phase (shown on its own) and, in the last column, the VAE's training.", "",
             "| run | model | parameters | MACs/image | steps | stopped | total energy | encode | energy to target "
             "| to target + VAE |", "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, r in runs.items():
        to = result["energy_to_target"][name]
        lines.append(f"| {name} | {r['model']} | {r['params']:,} | {r['macs_per_image'] / 1e6:.2f} M | {r['steps']} | "
                     f"{r['stop_reason'] or 'max steps'} | {wh(r['energy_kwh'])} | "
                     f"{'—' if to['encode_kwh'] is None else wh(to['encode_kwh'])} | {wh(to['kwh'])} | "
                     f"{'—' if name == 'pixel-unet' else wh(to['with_vae_kwh'])} |")
    lines += ["", "| run | final FID (mean ± sd over seeds) | class accuracy | sampler | eval energy per 1,000 images "
              "(the eval's energy / images made, decode included) |",
              "|---|---:|---:|---|---:|"]
    for name, f in result["finals"].items():
        sd = f"± {f['fid_std']:.2f}" if f["fid_std"] is not None else ""
        acc = f"{f['class_accuracy']:.1%}" if f["class_accuracy"] is not None else "—"
        lines.append(f"| {name} | {f['fid_mean']:.2f} {sd} | {acc} | {f['sampler']} | {wh(f['kwh_per_1000_images'])} |")
    lines += ["", *cache_report(result["cache"]), "", *compile_report(result["compile"]), "", "Reading:", "",
              *reading(result)]
    return "\n".join(lines)


def cache_report(cache: dict) -> list[str]:
    ways, per_step = cache["ways"], cache["kwh_per_step"]
    lines = [f"Latent cache (latent {cache['backbone']}, {ways['cold']['steps']} steps each; energy per step = train + "
             "encode phases / steps):", "", "| way | encode windows | train phase | encode phase | energy per step |",
             "|---|---:|---:|---:|---:|"]
    for way, v in ways.items():
        per = f"{per_step[way] * 1e6:.4f} mWh" + (" (+ one-off encode)" if way == "cold" else "")
        lines.append(f"| {way} | {v['encode_windows']} | {wh(v['train_kwh'])} | {wh(v['encode_kwh'])} | {per} |")
    even = cache["break_even_epochs"]
    lines += ["", f"One-off encode of {cache['num_images']:,} images: {wh(cache['one_off_encode_kwh'])}; "
              f"{cache['steps_per_epoch']:.0f} steps per epoch; break-even: "
              + (f"{even:.2f} epochs." if even is not None
                 else "never (uncached steps measured no dearer than warm ones).")]
    return lines


def times(ref: float, x: float) -> str:
    """``x`` against ``ref``: "2.50x less" or "1.20x more"."""
    return f"{ref / x:.2f}x less" if x < ref else f"{x / ref:.2f}x more"


def reading(result: dict) -> list[str]:
    """The numbers' verdict, computed from them (no winner assumed)."""
    reach, finals, best = result["energy_to_target"], result["finals"], result["best_latent_backbone"]
    pixel = reach["pixel-unet"]["kwh"]
    out = []
    for name, to in reach.items():
        if name == "pixel-unet":
            continue
        if to["kwh"] is None:
            out.append(f"- {name} did not reach the target in {result['runs'][name]['steps']} steps "
                       f"(final FID {finals[name]['fid_mean']:.2f}).")
            continue
        out.append(f"- {name}: {wh(to['kwh'])} to the target, {times(pixel, to['kwh'])} than the pixel UNet's "
                   f"{wh(pixel)}; with the VAE's training added, {wh(to['with_vae_kwh'])}: "
                   f"{times(pixel, to['with_vae_kwh'])}.")
    reached = {n: to["kwh"] for n, to in reach.items() if to["kwh"] is not None}
    if reached:
        out.append(f"- Least energy to the target: {min(reached, key=reached.get)}; counting the VAE's training, "
                   + min(reached, key=lambda n: reach[n]["with_vae_kwh"] or reached[n]) + ".")
    e_eps, e_flow = reach[f"latent-{best}"]["kwh"], reach[f"latent-{best}-flow"]["kwh"]
    if e_eps is not None and e_flow is not None:
        out.append(f"- Objective on the latent {best}: flow took {times(e_eps, e_flow)} energy than epsilon to the "
                   "target.")
    out.append("- Final FID (mean over seeds): " + ", ".join(f"{n} {f['fid_mean']:.2f}" for n, f in finals.items())
               + "; differences under the seed spread are noise.")
    even = result["cache"]["break_even_epochs"]
    out.append("- The latent cache pays for itself after " + (f"{even:.2f} epochs." if even is not None
                                                              else "no number of epochs here."))
    return out


if __name__ == "__main__":
    main()
