"""``greendiff prune``, ``greendiff distill`` and ``greendiff distill-steps``: parse, call the compression
workflows (:mod:`greendiff.workflows`), render their reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from greendiff.cli._options import (
    BATCH, COUNT, COUNT0, EVAL_IMAGES0, FLOAT, INT, RATIO, ROUNDS, SAMPLER_STEPS, TEACHER_STEPS, THRESHOLD,
    name_option, number_option, parse_sets, run_directory, run_option, with_measurement,
)
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, render_summary
from greendiff.display import plain_number
from greendiff.names import display_path
from greendiff.workflows._compress_session import CompressionEnergy
from greendiff.workflows._eval import EvalResult
from greendiff.workflows import (
    CompressOutcome, DistillJob, DistillStepsJob, MeasurementOptions, PruneJob, run_distill, run_distill_steps, run_prune,
)

Opt = typer.Option
EvalSamples = Annotated[int, number_option("--eval-samples", bounds=EVAL_IMAGES0, help="Images per quality evaluation (fixed noise seed; 0 skips).")]
OutputDir = Annotated[Optional[str], Opt("--output-dir", metavar="DIR", help="Parent of the new run directory (default: the parent run's).")]
Name = Annotated[Optional[str], name_option("--name", help="Run name.")]
Sets = Annotated[list[str], Opt("--set", metavar="KEY=VAL", help="Any trainer config key for the new run, e.g. --set optim.ema=false.")]


def _fmt_quality(result: EvalResult | None) -> str:
    return "—" if result is None else f"FID {result.quality.fid:.2f} · KID {result.quality.kid:.4f}"


def _print_energy(console: Console, energy: CompressionEnergy, what: str) -> None:
    parent = energy.parent_training_kwh
    console.print(f"{what}: {fmt_energy(energy.cost_kwh)} (evaluations {fmt_energy(energy.eval_kwh)} apart), "
                  + (f"{energy.cost_vs_parent:.1%} of the parent's training energy ({fmt_energy(parent)})"
                     if parent else "parent's training energy unknown (no emissions.json in its run directory)"),
                  highlight=False)


@with_measurement
def prune_command(
    run: Annotated[str, run_option("--run", help="Trained run: its directory or ledger id.")],
    ratio: Annotated[float, number_option("--ratio", bounds=RATIO, help="Fraction of channels to remove per layer, in (0, 1); MACs fall ~ (1-R)^2.")],
    importance: Annotated[str, Opt("--importance", metavar="KIND", help="taylor (Diff-Pruning), magnitude, or random.")] = "taylor",
    finetune_steps: Annotated[int, number_option("--finetune-steps", bounds=COUNT0, help="Trainer steps after pruning (0: none).")] = 500,
    taylor_timesteps: Annotated[int, number_option("--taylor-timesteps", bounds=SAMPLER_STEPS, help="Timesteps whose gradients score the channels.")] = 100,
    thr: Annotated[float, number_option("--thr", bounds=THRESHOLD, help="Stop accumulating at the first timestep whose loss < thr x max (Diff-Pruning: 0.05).")] = 0.05,
    taylor_batch: Annotated[int, number_option("--taylor-batch", bounds=BATCH, help="Images per timestep in the Taylor pass.")] = 64,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Fine-tuning learning rate (default: the parent's).")] = None,
    distill: Annotated[bool, Opt("--distill/--no-distill", metavar="", help="Fine-tune against the parent's predictions too "
                                 "(output distillation; its forwards are counted).")] = False,
    eval_samples: EvalSamples = 500,
    output_dir: OutputDir = None, name: Name = None, sets: Sets = [],
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Prune a trained model's channels (Diff-Pruning), fine-tune it, and compare it with the parent."""
    console = Console(stderr=True)
    outcome = run_prune(PruneJob(run=run_directory(run, measurement.ledger), ratio=ratio, importance=importance, finetune_steps=finetune_steps,
                                 taylor_timesteps=taylor_timesteps, thr=thr, taylor_batch=taylor_batch, lr=lr, distill=distill,
                                 eval_samples=eval_samples, output_dir=output_dir, name=name, sets=parse_sets(sets),
                                 measurement=measurement), RichProgress(console))
    render_prune(outcome, console)


def render_prune(outcome: CompressOutcome, console: Console) -> None:
    """The summary, the models' sizes and quality side by side, the energy against the parent's."""
    report = outcome.report
    parent, pruned = report.parent_model, report.pruned_model
    render_summary(outcome.summary, console)
    console.print(f"pruned {list(parent.block_out_channels)} → {list(pruned.block_out_channels)}: "
                  f"{parent.params:,} → {pruned.params:,} parameters, "
                  f"{parent.macs_per_image / 1e6:.1f} → {pruned.macs_per_image / 1e6:.1f} M MACs per image "
                  f"(time-embedding refit residual {report.time_refit_residual:.1%})", highlight=False)
    table = Table(title=f"prune {plain_number(report.ratio)} ({report.importance}) · {report.eval.samples} samples, "
                        f"{report.eval.sampler_steps} steps", title_justify="left")
    for col in ("model", "params", "M MACs", "quality"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for label, stats, result in (("parent", parent, report.quality_parent), ("pruned", pruned, report.quality_pruned),
                                 (f"+ {report.finetune_steps} steps", pruned, report.quality_finetuned)):
        table.add_row(label, f"{stats.params:,}", f"{stats.macs_per_image / 1e6:.1f}", _fmt_quality(result))
    Console().print(table)
    _print_energy(console, report.energy, "pruning + fine-tuning")
    console.print(f"pruned run {display_path(outcome.run_dir)} ({outcome.duration_s:.0f} s) · report "
                  f"{display_path(outcome.report_path)}", highlight=False, markup=False)


@with_measurement
def distill_command(
    teacher: Annotated[str, run_option("--teacher", help="Trained teacher run: its directory or ledger id.")],
    student_preset: Annotated[Optional[str], Opt("--student-preset", metavar="NAME", help="The student's model preset (smaller than the teacher).")] = None,
    student_init: Annotated[Optional[Path], Opt("--student-init", metavar="DIR", help="Start the student from this UNet2DModel folder instead, "
                                                "e.g. PRUNED_RUN/pruned-unet from greendiff prune --finetune-steps 0; "
                                                "its widths define the student.")] = None,
    max_steps: Annotated[Optional[int], number_option("--max-steps", bounds=INT, help="Student training steps (default: the teacher's).")] = None,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Student learning rate (default: its preset's).")] = None,
    output_weight: Annotated[float, number_option("--output-weight", bounds=FLOAT, help="Weight of matching the teacher's prediction.")] = 1.0,
    feature_weight: Annotated[float, number_option("--feature-weight", bounds=FLOAT, help="Weight of matching same-shaped block features.")] = 0.1,
    data_weight: Annotated[float, number_option("--data-weight", bounds=FLOAT, help="Weight of the ordinary denoising loss.")] = 1.0,
    eval_samples: EvalSamples = 500,
    output_dir: OutputDir = None, name: Name = None, sets: Sets = [],
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Train a smaller student to match a teacher (output and feature distillation); teacher forwards are metered."""
    console = Console(stderr=True)
    outcome = run_distill(DistillJob(teacher=run_directory(teacher, measurement.ledger), student_preset=student_preset, student_init=student_init,
                                     max_steps=max_steps, lr=lr, output_weight=output_weight, feature_weight=feature_weight,
                                     data_weight=data_weight, eval_samples=eval_samples, output_dir=output_dir, name=name,
                                     sets=parse_sets(sets), measurement=measurement), RichProgress(console))
    report = outcome.report
    render_summary(outcome.summary, console)
    console.print(f"teacher {report.teacher_model.params:,} parameters: {_fmt_quality(report.quality_teacher)}\n"
                  f"student {report.student_model.params:,} parameters ({report.params_reduction:.1f}x fewer): "
                  f"{_fmt_quality(report.quality_student)}", highlight=False)
    _print_energy(console, report.energy, "student training (teacher forwards included)")
    console.print(f"student run {display_path(outcome.run_dir)} · report {display_path(outcome.report_path)}",
                  highlight=False, markup=False)


@with_measurement
def distill_steps_command(
    teacher: Annotated[str, run_option("--teacher", help="Trained teacher run: its directory or ledger id.")],
    rounds: Annotated[int, number_option("--rounds", bounds=ROUNDS, help="Halvings of the sampling steps (3: 8x fewer).")] = 3,
    teacher_steps: Annotated[int, number_option("--teacher-steps", bounds=TEACHER_STEPS, help="The teacher's DDIM steps (T must be divisible by each halving).")] = 40,
    steps_per_round: Annotated[int, number_option("--steps-per-round", bounds=COUNT, help="Training steps of each round.")] = 500,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Learning rate of each round (default: the teacher's / 4).")] = None,
    eval_samples: EvalSamples = 500,
    output_dir: OutputDir = None, name: Name = None, sets: Sets = [],
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Progressive distillation: each round halves the DDIM steps; quality and sampling energy per image at each."""
    console = Console(stderr=True)
    outcome = run_distill_steps(DistillStepsJob(teacher=run_directory(teacher, measurement.ledger), rounds=rounds, teacher_steps=teacher_steps,
                                                steps_per_round=steps_per_round, lr=lr, eval_samples=eval_samples,
                                                output_dir=output_dir, name=name, sets=parse_sets(sets),
                                                measurement=measurement), RichProgress(console))
    report = outcome.report
    render_summary(outcome.summary, console)
    table = Table(title=f"progressive distillation · {eval_samples} samples per row", title_justify="left")
    for col in ("model", "DDIM steps", "quality", "sampling energy / image"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in report.rows:
        table.add_row(row.model, str(row.steps), _fmt_quality(row.quality), fmt_energy(row.sample_kwh_per_image))
    Console().print(table)
    _print_energy(console, report.energy, f"{rounds} rounds of distillation")
    student = display_path(Path(report.student))
    console.print(f"final student {student} samples with {report.final_steps} DDIM steps "
                  f"(greendiff sample --run {student}) · report {display_path(outcome.report_path)}",
                  highlight=False, markup=False)
