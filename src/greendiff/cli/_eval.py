"""``greendiff eval --run DIR``: FID/KID/precision/recall of a trained run, offline, energy measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from greendiff.cli._options import (
    EVAL_IMAGES, KID_SUBSET, SAMPLER_STEPS0, SEEDS, number_option,
    Cloud, Country, CpuWatts, Gpus, Grid, LedgerPath, Live, NoGpu, PueOpt, Zone, load_config_data, resolve_settings,
)
from greendiff.cli._render import fmt_energy, fmt_mass
from greendiff.errors import UserInputError

Opt = typer.Option


def score(unet, sampler, n: int, steps: int, real, extractor, seed: int = 0, kid_subset: int = 1000) -> dict:
    """FID/KID/precision/recall of ``n`` images sampled with ``steps`` sampler steps from a fixed noise seed."""
    import torch

    from greendiff.evaluate import quality
    from greendiff.train import sample_images

    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    device = next(unet.parameters()).device
    fake = sample_images(unet.eval(), sampler, n, steps, shape, torch.Generator().manual_seed(seed), device)
    return quality(fake, real, extractor, kid_subset=kid_subset).to_dict() | {"seed": seed, "sampler_steps": steps}


def eval_command(
    run: Annotated[Path, Opt("--run", help="Run directory (with pipeline/ and config.toml).")],
    n: Annotated[int, number_option("--n", bounds=EVAL_IMAGES, help="Generated images per evaluation (fixed noise seed).")] = 2000,
    features: Annotated[str, Opt("--features", help="mnist (shipped) or inception:PATH (local weights file).")] = "mnist",
    seeds: Annotated[int, number_option("--seeds", bounds=SEEDS, help="Noise seeds to evaluate; more than 1 reports the spread.")] = 1,
    steps: Annotated[int, number_option("--steps", bounds=SAMPLER_STEPS0, help="Sampler steps (default: the run's).")] = 0,
    kid_subset: Annotated[int, number_option("--kid-subset", bounds=KID_SUBSET, help="KID subset size.")] = 1000,
    as_json: Annotated[bool, Opt("--json", help="Print JSON for scripts.")] = False,
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    live: Live = "none", zone: Zone = None, cpu_watts: CpuWatts = None, gpus: Gpus = None,
    no_gpu: NoGpu = False, ledger: LedgerPath = None,
) -> None:
    """Score a trained run's samples (EMA weights) with FID, KID and precision/recall; no download."""
    from greendiff.evaluate import reference_features, resolve_extractor, seed_spread
    from greendiff.train import load_run_model
    from greendiff.train._artifacts import check_run_matches

    if n < 4 or seeds < 1 or steps < 0 or kid_subset < 2:
        raise UserInputError("--n must be >= 4, --seeds >= 1, --steps >= 0, --kid-subset >= 2")
    if kid_subset > n:
        raise UserInputError(f"--kid-subset {kid_subset} exceeds --n {n}: too few samples for KID; raise --n")
    config, unet, sampler = load_run_model(run)
    extractor, extractor_name = resolve_extractor(features)
    settings = resolve_settings(country, cloud, grid, pue, live, zone, cpu_watts, gpus, no_gpu, ledger)
    data = load_config_data(config)
    check_run_matches(run, config, unet, data)  # before the ledger row
    n_steps = steps or config.optim.sample_steps
    with settings.tracker(f"eval {run.name}", "eval", f"greendiff eval --run {run} --n {n}") as tracker:
        with tracker.window("eval"):
            real = reference_features(data.images, extractor)
            results = [score(unet, sampler, n, n_steps, real, extractor, seed, kid_subset) for seed in range(seeds)]
    summary = tracker.summary
    report = {"run": str(run), "features": extractor_name, "n": n, "sampler_steps": n_steps,
              "sampler": config.optim.sampler, "results": results,
              "energy_kwh": summary["energy_kwh"], "emissions_kg": summary["emissions_kg"], "ledger_run_id": summary["run_id"]}
    if seeds > 1:
        report["spread"] = seed_spread(results)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table(title=f"{run.name} · {extractor_name} features · {n} samples · {n_steps} {config.optim.sampler} steps",
                  title_justify="left")
    for col in ("seed", "FID", "KID", "precision", "recall"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(str(r["seed"]), f"{r['fid']:.3f}", f"{r['kid']:.5f} ± {r['kid_std']:.5f}",
                      f"{r['precision']:.3f}", f"{r['recall']:.3f}")
    console = Console()
    console.print(table)
    if seeds > 1:
        s = report["spread"]
        console.print(f"spread over {seeds} seeds (std): FID {s['fid']:.3f}, KID {s['kid']:.5f}, "
                      f"precision {s['precision']:.3f}, recall {s['recall']:.3f}: differences below this are noise",
                      highlight=False)
    console.print(f"evaluation cost {fmt_energy(summary['energy_kwh'])}, {fmt_mass(summary['emissions_kg'])} CO2e "
                  f"(ledger run {summary['run_id']})", highlight=False)
