"""``greendiff eval --run RUN``: FID/KID/precision/recall of a trained run, offline, energy measured."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from greendiff.cli._options import (
    EVAL_IMAGES, GUIDANCE, KID_SUBSET, SAMPLER_STEPS0, SEEDS, number_option, renamed, run_directory, run_option,
    with_default, with_measurement,
)
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, fmt_mass
from greendiff.workflows import KID_SUBSET_DEFAULT, EvalJob, MeasurementOptions, job_default, run_eval
from greendiff.workflows._eval import EMA_SEARCH_SAMPLES

Opt = typer.Option


@with_measurement
def eval_command(
    run: Annotated[str, run_option("--run", help="Trained run: its directory or ledger id.")],
    samples: Annotated[Optional[int], number_option("--samples", bounds=EVAL_IMAGES, help=with_default("Generated images per evaluation (fixed noise seed).", job_default(EvalJob, "n")))] = None,
    features: Annotated[str, Opt("--features", metavar="NAME", help="mnist (shipped) or inception:PATH (local weights file).")] = job_default(EvalJob, "features"),
    seeds: Annotated[int, number_option("--seeds", bounds=SEEDS, help="Noise seeds to evaluate; more than 1 reports the spread.")] = job_default(EvalJob, "seeds"),
    sample_steps: Annotated[Optional[int], number_option("--sample-steps", bounds=SAMPLER_STEPS0, help="Sampler steps (default: the run's).")] = None,
    kid_subset: Annotated[Optional[int], number_option("--kid-subset", bounds=KID_SUBSET, help=f"KID subset size (default: {KID_SUBSET_DEFAULT}, or --samples if fewer).")] = None,
    guidance_scale: Annotated[Optional[float], number_option("--guidance-scale", bounds=GUIDANCE, help="A class-conditional run's classifier-free guidance (default: the run's).")] = None,
    ema_length: Annotated[Optional[str], Opt("--ema-length", metavar="X|auto", help="Post-hoc EMA (a run trained with --ema-snapshots): score the EMA of length X (sigma_rel, 0-0.3), or auto: the best on a small evaluation.")] = None,
    as_json: Annotated[bool, Opt("--json", metavar="", help="Print JSON for scripts.")] = False,
    n: Annotated[Optional[int], number_option("--n", bounds=EVAL_IMAGES, help="Old name of --samples.", hidden=True)] = None,
    steps: Annotated[Optional[int], number_option("--steps", bounds=SAMPLER_STEPS0, help="Old name of --sample-steps.", hidden=True)] = None,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Score a trained run's samples (EMA weights) with FID, KID and precision/recall; a class-conditional run
    also by class accuracy and per-class FID; no download."""
    samples = renamed(("--samples", samples), ("--n", n), job_default(EvalJob, "n"))
    sample_steps = renamed(("--sample-steps", sample_steps), ("--steps", steps), job_default(EvalJob, "steps"))
    run_dir = run_directory(run, measurement.ledger)
    outcome = run_eval(EvalJob(run=run_dir, n=samples, features=features, seeds=seeds, steps=sample_steps,
                               kid_subset=kid_subset, guidance_scale=guidance_scale, measurement=measurement,
                               ema_length=ema_length),
                       RichProgress(Console(stderr=True)))
    report, summary, results = outcome.report, outcome.summary, outcome.results
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    conditional, accuracy = report.num_classes is not None, report.class_accuracy is not None
    guided = f" · {report.num_classes} classes, balanced, guidance {report.guidance_scale:g}" if conditional else ""
    ema = f" · post-hoc EMA {report.ema_length:g}" if report.ema_length is not None else ""
    table = Table(title=f"{run_dir.name} · {report.features} features · {samples} samples · {report.sampler_steps} {report.sampler} steps"
                        + guided + ema, title_justify="left")
    by_class_columns = (("class acc.",) if accuracy else ()) + (("mean class FID",) if conditional else ())
    for col in ("seed", "FID", "KID", "precision", "recall", *by_class_columns):
        table.add_column(col, justify="right")
    for r in results:
        q = r.quality
        by_class = ((f"{r.classes.class_accuracy:.1%}",) if accuracy else ()) + ((f"{r.classes.mean_class_fid:.3f}",) if conditional else ())
        table.add_row(str(r.seed), f"{q.fid:.3f}", f"{q.kid:.5f} ± {q.kid_std:.5f}", f"{q.precision:.3f}", f"{q.recall:.3f}", *by_class)
    console = Console()
    if report.ema_search:
        tried = ", ".join(f"{s:g}: {fid:.2f}" for s, fid in report.ema_search)
        console.print(f"EMA length (sigma_rel: FID of {min(EMA_SEARCH_SAMPLES, samples)} samples): {tried}; "
                      f"best {report.ema_length:g}", highlight=False)
    console.print(table)
    if report.class_accuracy_note:
        console.print(report.class_accuracy_note, highlight=False, markup=False)
    if conditional:
        per_class = sorted(results[0].classes.per_class_fid.items())
        console.print("per-class FID (seed 0): " + ", ".join(f"{c}: {fid:.2f}" for c, fid in per_class), highlight=False)
    if report.spread is not None:
        s = report.spread
        console.print(f"spread over {seeds} seeds (std): FID {s['fid']:.3f}, KID {s['kid']:.5f}, "
                      f"precision {s['precision']:.3f}, recall {s['recall']:.3f}: differences below this are noise",
                      highlight=False)
    console.print(f"evaluation cost {fmt_energy(summary.energy_kwh)}, {fmt_mass(summary.emissions_kg)} CO2e "
                  f"(ledger run {summary.run_id})", highlight=False)
