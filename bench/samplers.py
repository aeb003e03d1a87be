"""FID against sampler steps for DDIM, DPM-Solver++ 2M and UniPC on one trained run (issue 23).

The training-free baseline any step distillation must beat: one run's EMA pipeline sampled with each solver
(built from the run's training scheduler by :func:`greendiff.train.make_sampler`) at 5, 10, 20 and 50 steps, the
same noise seed for all, scored with the same MNIST features as ``greendiff eval``. Each (sampler, steps) result
is cached in ``bench/results/samplers/<run name>.json`` as soon as it is done, so a rerun continues where it
stopped. ``--assignment-cost`` instead times Immiscible Diffusion's per-step noise assignment
(:func:`greendiff.train._timesteps.assign_noise`) at a few batch sizes.

    python bench/samplers.py RUN_DIR [--samples 1000] [--steps 5,10,20,50] [--write-benchmarks]
    python bench/samplers.py --assignment-cost [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "samplers"
SAMPLERS = ("ddim", "dpm-solver", "unipc")


def load_cache(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_cache(path: Path, cache: dict) -> None:
    """Written whole to a temporary file, then renamed: an interrupted run keeps the last complete cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    os.replace(tmp, path)


class RunScorer:
    """One run's model and reference features, loaded once; :meth:`score` samples and scores one setting."""

    def __init__(self, run_dir: Path, samples: int, seed: int) -> None:
        from greendiff.evaluate import reference_features, resolve_extractor
        from greendiff.train import load_run_model
        from greendiff.workflows._inputs import load_config_data

        self.model = load_run_model(run_dir)
        if self.model.config.optim.objective == "flow" or self.model.space is not None and self.model.space.latent:
            raise SystemExit("bench/samplers.py compares epsilon/v pixel-space runs (flow samples with Euler only)")
        self.extractor, _ = resolve_extractor("mnist")
        self.real = reference_features(load_config_data(self.model.config).reference_images(), self.extractor)
        self.samples, self.seed = samples, seed

    def score(self, sampler_name: str, steps: int) -> dict:
        from greendiff.train import make_noise_scheduler, make_sampler
        from greendiff.workflows._eval import score

        optim = dataclasses.replace(self.model.config.optim, sampler=sampler_name)
        sampler = make_sampler(optim, make_noise_scheduler(optim))
        start = time.perf_counter()
        result = score(self.model.unet, sampler, self.samples, steps, self.real, self.extractor, self.seed,
                       kid_subset=min(1000, self.samples))
        quality = result.quality.to_dict()
        return {"fid": quality["fid"], "kid": quality.get("kid"), "seconds": time.perf_counter() - start,
                "samples": self.samples, "seed": self.seed}


def sweep(run_dir: Path, samplers: list[str], steps: list[int], samples: int, seed: int,
          results: Path = RESULTS) -> dict:
    """Every (sampler, steps) score of ``run_dir``, from the cache where it is there (same samples and seed)."""
    path = results / f"{run_dir.name}.json"
    cache, scorer = load_cache(path), None
    for name in samplers:
        for n in steps:
            key = f"{name}@{n}"
            done = cache.get(key)
            if done is not None and done["samples"] == samples and done["seed"] == seed:
                continue
            scorer = scorer or RunScorer(run_dir, samples, seed)
            cache[key] = scorer.score(name, n)
            save_cache(path, cache)
            print(f"{key}: FID {cache[key]['fid']:.2f} in {cache[key]['seconds']:.1f} s", flush=True)
    return cache


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def fid_table(run_dir: Path, cache: dict, samplers: list[str], steps: list[int]) -> str:
    """FID per (steps, sampler) as a Markdown table, and the wall time per image beside each."""
    head = "| steps | " + " | ".join(samplers) + " |\n|---:|" + "---:|" * len(samplers)
    rows = []
    for n in steps:
        cells = []
        for name in samplers:
            r = cache.get(f"{name}@{n}")
            cells.append("–" if r is None else f"{r['fid']:.2f} ({1000 * r['seconds'] / r['samples']:.0f} ms/img)")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    some = next(iter(cache.values()), {"samples": 0, "seed": 0})
    return (f"### FID vs sampler steps (issue 23)\n\nRun `{run_dir.name}`; {some['samples']} samples, noise seed "
            f"{some['seed']}, MNIST features; FID (wall time per image incl. scoring). {machine()}; "
            f"{torch_threads()} torch thread(s); {today()}.\n\n"
            + head + "\n" + "\n".join(rows))


def assignment_cost(batches: list[int], shapes: list[tuple[int, int, int]], repeats: int) -> str:
    """Median milliseconds of :func:`assign_noise` per training step, per batch size and image shape."""
    import torch

    from greendiff.train._timesteps import assign_noise

    lines = ["### Immiscible noise assignment: cost per step (issue 23)", "",
             f"Median of {repeats} calls of `assign_noise` (cdist + scipy linear_sum_assignment) on random batches, "
             f"{torch.get_num_threads()} torch thread(s). {machine()}; {today()}.", "",
             "| batch | image | ms per step |", "|---:|---|---:|"]
    g = torch.Generator().manual_seed(0)
    for shape in shapes:
        for b in batches:
            x0, noise = torch.rand((b, *shape), generator=g) * 2 - 1, torch.randn((b, *shape), generator=g)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                assign_noise(x0, noise)
                times.append(1000 * (time.perf_counter() - start))
            lines.append(f"| {b} | {'x'.join(map(str, shape))} | {statistics.median(times):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a trained run directory (epsilon or v, pixel space)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", default="5,10,20,50")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--assignment-cost", action="store_true", help="time the immiscible assignment instead")
    parser.add_argument("--batches", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the per-run caches")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.assignment_cost:
        text = assignment_cost([int(b) for b in args.batches.split(",")], [(1, 16, 16), (3, 32, 32)], args.repeats)
        key = "samplers-immiscible-cost"
    else:
        if args.run is None or not (args.run / "pipeline").is_dir():
            parser.error("give a trained run directory (one with pipeline/)")
        samplers, steps = args.samplers.split(","), [int(s) for s in args.steps.split(",")]
        unknown = sorted(set(samplers) - set(SAMPLERS))
        if unknown:
            parser.error(f"unknown sampler {unknown[0]}; use {', '.join(SAMPLERS)}")
        cache = sweep(args.run, samplers, steps, args.samples, args.seed, args.results)
        text, key = fid_table(args.run, cache, samplers, steps), "samplers-fid-vs-steps"
    print(text)
    if args.write_benchmarks:
        write_section(key, text)


if __name__ == "__main__":
    main()
