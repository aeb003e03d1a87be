"""``greendiff prune``, ``greendiff distill`` and ``greendiff distill-steps``.

Each takes a trained run, makes a cheaper model, trains it with the ordinary trainer (so it is a
run directory like any other: ``config.toml``, ``pipeline/``, checkpoints, resumable), and writes
a report next to it comparing size, quality and energy with the parent. One ledger run covers the
whole command; evaluation has its own phase and is reported apart from the compression's cost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from greendiff.cli._eval import score
from greendiff.cli._options import (
    BATCH, COUNT, COUNT0, EVAL_IMAGES0, FLOAT, INT, RATIO, ROUNDS, SAMPLER_STEPS, TEACHER_STEPS, THRESHOLD,
    name_option, number_option,
    Cloud, Country, CpuWatts, Gpus, Grid, LedgerPath, Live, NoGpu, PueOpt, Zone, load_config_data, resolve_settings,
)
from greendiff.cli._render import fmt_energy, render_summary
from greendiff.cli._train import _new_run_dir, _parse_sets, run_training, write_emissions
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import MAX_NAME_CHARS, NAME_PUNCTUATION, check_name, display_path, unprintable

Opt = typer.Option
logger = logging.getLogger(__name__)
EvalSamples = Annotated[int, number_option("--eval-samples", bounds=EVAL_IMAGES0, help="Images per quality evaluation (fixed noise seed; 0 skips).")]
OutputDir = Annotated[Optional[str], Opt("--output-dir", help="Parent of the new run directory (default: the parent run's).")]
Name = Annotated[Optional[str], name_option("--name", help="Run name.")]
Sets = Annotated[list[str], Opt("--set", help="Any trainer config key for the new run, e.g. --set optim.ema=false.")]


def parent_energy_kwh(run: Path) -> float | None:
    """The parent run's whole training energy (all resumed segments) from its ``emissions.json``; ``None``
    when it has none, or (with a warning naming the file) when the file is damaged: the comparison with
    the parent is then left out, the compression itself goes on."""
    from greendiff.ledger import BadRecordError
    from greendiff.train import read_emissions_json

    path = run / "emissions.json"
    if not path.is_file():
        return None
    try:
        total = read_emissions_json(path).run_total_energy_kwh
    except BadRecordError as exc:
        logger.warning("%s; the parent's training energy is left out of the comparison", exc)
        return None
    return total or None


def derived_name(prefix: str, parent: Path) -> str:
    """``prefix-<parent's folder name>`` as a usable run name, whatever the parent is called: characters a
    name cannot hold become ``_`` and the parent's part is cut to fit :data:`~greendiff.names.MAX_NAME_CHARS`."""
    safe = "".join(c if (c.isalnum() or c in NAME_PUNCTUATION) and unprintable(c) is None else "_"
                   for c in parent.resolve().name)
    part = safe[:MAX_NAME_CHARS - len(prefix) - 1].strip() or "run"
    return check_name(f"{prefix}-{part}", "run name")


def _write_text(path: Path, text: str) -> None:
    """A file of the new run directory, written atomically; a failed write is one line."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(path)}: {exc.strerror or exc}") from None


def derived_config(parent: Path, overrides: dict, sets: list[str]):
    """The parent's saved config with its stopping, distillation and run bookkeeping reset (seed kept),
    then ``overrides`` and ``--set`` applied, resolved and validated once."""
    from greendiff.train import read_toml, resolve_config

    base = read_toml(parent / "config.toml")
    base.pop("stop", None)
    base.pop("distill", None)
    base["run"] = {"seed": base.get("run", {}).get("seed", 0)}
    return resolve_config(overrides={**overrides, **_parse_sets(sets)}, base=base)


class Session:
    """What the three commands share: the parent, its data, the tracker, evaluations, the closing report."""

    def __init__(self, parent: Path, eval_samples: int, console: Console, flag: str = "--run") -> None:
        from greendiff.train import load_run_model

        if eval_samples and eval_samples < 4:
            raise UserInputError("--eval-samples must be 0 (skip) or >= 4")
        self.parent = parent
        self.parent_kwh = parent_energy_kwh(parent)  # read (and any damage named) before any work
        try:
            self.config, self.unet, self.sampler = load_run_model(parent)
        except UserInputError as exc:  # name the option the user gave (--teacher), not train's --run
            message = str(exc)
            raise UserInputError(flag + message[len("--run"):] if message.startswith("--run ") else message) from None
        self.data = load_config_data(self.config)
        self.eval_samples = eval_samples
        self.console = console
        self._reference = None
        self.t0 = time.perf_counter()

    def start(self, run_dir: Path, settings, kind: str, command: str) -> None:
        """Everything is checked: create nothing before this. Starts the one ledger run of the command."""
        self.run_dir = run_dir
        self.tracker = settings.tracker(run_dir.name, kind, command, run_dir=run_dir).start()

    def train(self, config, run_dir: Path, label: str):
        """``run_training`` in ``run_dir`` under this command's ledger run, holding the run directory's lock
        (a ``train --resume`` of it meanwhile is refused)."""
        from greendiff.train import RunDirLock

        with RunDirLock(run_dir):
            return run_training(config, self.data, run_dir, self.tracker, self.console, label=label)

    def quality(self, unet, sampler, steps: int) -> dict | None:
        """Quality on the shipped MNIST features, seed 0, in the ``eval`` phase (None when skipped)."""
        if not self.eval_samples:
            return None
        from greendiff.evaluate import reference_features, resolve_extractor

        with self.tracker.window("eval"):
            if self._reference is None:
                extractor, _ = resolve_extractor(self.config.stop.eval_features)
                self._reference = (reference_features(self.data.images, extractor), extractor)
            real, extractor = self._reference
            return score(unet, sampler, self.eval_samples, steps, real, extractor, kid_subset=self.eval_samples)

    def finish(self, report: dict, name: str) -> dict:
        """Stop the tracker; add the energy split (``eval*`` phases, i.e. measurement, apart) to ``report``; write it, emissions.json and the summary."""
        summary = self.tracker.stop("completed")
        eval_j = sum(p["energy_j"] for p in summary["phases"] if p["name"].startswith("eval"))
        report["energy"] = {"total_kwh": summary["energy_kwh"], "eval_kwh": eval_j / 3.6e6,
                            "cost_kwh": summary["energy_kwh"] - eval_j / 3.6e6,
                            "parent_training_kwh": self.parent_kwh,
                            "phases_kwh": {p["name"]: p["energy_j"] / 3.6e6 for p in summary["phases"]},
                            "emissions_kg": summary["emissions_kg"], "ledger_run_id": summary["run_id"]}
        parent_kwh = report["energy"]["parent_training_kwh"]
        report["energy"]["cost_vs_parent"] = report["energy"]["cost_kwh"] / parent_kwh if parent_kwh else None
        _write_text(self.run_dir / name, json.dumps(report, indent=2))
        write_emissions(self.run_dir, summary, 0.0)
        render_summary(summary, self.console)
        return report


def _model_stats(unet) -> dict:
    from greendiff.train import count_macs, count_parameters

    return {"params": count_parameters(unet), "macs_per_image": count_macs(unet, unet.config.sample_size, unet.config.in_channels),
            "block_out_channels": list(unet.config.block_out_channels)}


def _fmt_quality(q: dict | None) -> str:
    return "—" if q is None else f"FID {q['fid']:.2f} · KID {q['kid']:.4f}"


def _print_energy(console: Console, energy: dict, what: str) -> None:
    parent = energy["parent_training_kwh"]
    console.print(f"{what}: {fmt_energy(energy['cost_kwh'])} (evaluations {fmt_energy(energy['eval_kwh'])} apart), "
                  + (f"{energy['cost_vs_parent']:.1%} of the parent's training energy ({fmt_energy(parent)})"
                     if parent else "parent's training energy unknown (no emissions.json in its run directory)"),
                  highlight=False)


def _check_parent(run: Path, flag: str = "--run") -> None:
    if not (run / "config.toml").is_file() or not (run / "pipeline" / "unet").is_dir():
        raise UserInputError(f"{flag} {display_path(run)}: no trained model (expected {display_path(run / 'pipeline')} "
                             f"and {display_path(run / 'config.toml')} from greendiff train)")


def prune_command(
    run: Annotated[Path, Opt("--run", help="Trained run directory (with pipeline/ and config.toml).")],
    ratio: Annotated[float, number_option("--ratio", bounds=RATIO, help="Fraction of channels to remove per layer, in (0, 1); MACs fall ~ (1-R)^2.")],
    importance: Annotated[str, Opt("--importance", help="taylor (Diff-Pruning), magnitude, or random.")] = "taylor",
    finetune_steps: Annotated[int, number_option("--finetune-steps", bounds=COUNT0, help="Trainer steps after pruning (0: none).")] = 500,
    taylor_timesteps: Annotated[int, number_option("--taylor-timesteps", bounds=SAMPLER_STEPS, help="Timesteps whose gradients score the channels.")] = 100,
    thr: Annotated[float, number_option("--thr", bounds=THRESHOLD, help="Stop accumulating at the first timestep whose loss < thr x max (Diff-Pruning: 0.05).")] = 0.05,
    taylor_batch: Annotated[int, number_option("--taylor-batch", bounds=BATCH, help="Images per timestep in the Taylor pass.")] = 64,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Fine-tuning learning rate (default: the parent's).")] = None,
    distill: Annotated[bool, Opt("--distill/--no-distill", help="Fine-tune against the parent's predictions too "
                                 "(output distillation; its forwards are counted).")] = False,
    eval_samples: EvalSamples = 500,
    output_dir: OutputDir = None, name: Name = None, sets: Sets = [],
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    live: Live = "none", zone: Zone = None, cpu_watts: CpuWatts = None, gpus: Gpus = None,
    no_gpu: NoGpu = False, ledger: LedgerPath = None,
) -> None:
    """Prune a trained model's channels (Diff-Pruning), fine-tune it, and compare it with the parent."""
    import torch

    from greendiff.compress import IMPORTANCES, accumulate_taylor_gradients, check_ratio, prune_in_place, rebuild
    from greendiff.train import export_pipeline, load_run_model, make_noise_scheduler, to_toml

    check_ratio(ratio)
    if importance not in IMPORTANCES:
        raise UserInputError(f"unknown --importance {importance!r}; use one of {', '.join(IMPORTANCES)}")
    _check_parent(run)
    settings = resolve_settings(country, cloud, grid, pue, live, zone, cpu_watts, gpus, no_gpu, ledger)
    console = Console(stderr=True)
    s = Session(run, eval_samples, console)
    name = name or derived_name(f"pruned{ratio:g}", run)
    fine_tune = {"run.max_steps": max(finetune_steps, 1), "run.name": name, "optim.lr": lr,
                 **({"distill.kind": "output", "distill.teacher": str(run / "pipeline" / "unet")} if distill else {})}
    derived_config(run, fine_tune, sets)  # --set and the rest checked before anything is created
    s.start(_new_run_dir(output_dir or str(run.parent), name), settings, "prune",
            f"greendiff prune --run {run} --ratio {ratio:g}")
    run_dir = s.run_dir
    config, parent = s.config, s.unet
    parent_stats = _model_stats(parent)
    steps = config.optim.sample_steps
    quality_parent = s.quality(parent, s.sampler, steps)  # before pruning changes it in place
    with s.tracker.window("prune"):
        pass_info = None
        if importance == "taylor":
            order = torch.randperm(s.data.images.shape[0], generator=torch.Generator().manual_seed(config.run.seed))
            x0 = s.data.images[order[:taylor_batch]].float() / 127.5 - 1.0
            with Progress(TextColumn("[bold]taylor[/]"), BarColumn(), TextColumn("timestep {task.fields[t]}"),
                          console=console, transient=True) as bar:
                task = bar.add_task("taylor", total=taylor_timesteps, t=0)
                pass_info = accumulate_taylor_gradients(
                    parent.train(), make_noise_scheduler(config.optim), x0, taylor_timesteps, thr,
                    torch.Generator().manual_seed(config.run.seed), config.optim.prediction_type,
                    on_timestep=lambda t: bar.update(task, advance=1, t=t))
        torch.manual_seed(config.run.seed)  # random importance
        prune_in_place(parent, ratio, importance, torch.zeros(1, parent.config.in_channels, parent.config.sample_size,
                                                               parent.config.sample_size))
        rebuilt = rebuild(parent)
        rebuilt.unet.save_pretrained(str(run_dir / "pruned-unet"))
    pruned_stats = _model_stats(rebuilt.unet)
    console.print(f"pruned {parent_stats['block_out_channels']} → {pruned_stats['block_out_channels']}: "
                  f"{parent_stats['params']:,} → {pruned_stats['params']:,} parameters, "
                  f"{parent_stats['macs_per_image'] / 1e6:.1f} → {pruned_stats['macs_per_image'] / 1e6:.1f} M MACs per image "
                  f"(time-embedding refit residual {rebuilt.time_refit_residual:.1%})", highlight=False)
    quality_pruned = s.quality(rebuilt.unet, s.sampler, steps)
    ft_config = derived_config(run, {**fine_tune, "model.block_out_channels": ",".join(map(str, rebuilt.block_out_channels)),
                                     "model.init_from": str(run_dir / "pruned-unet"), "run.output_dir": str(run_dir.parent)},
                               sets)
    _write_text(run_dir / "config.toml", to_toml(ft_config))
    if finetune_steps:
        result = s.train(ft_config, run_dir, "fine-tune")
        if result.status != "completed":
            raise UserInputError(f"fine-tuning ended {result.status} at step {result.step}; resume with: "
                                 f"greendiff train --resume {display_path(run_dir)}")
    else:
        export_pipeline(rebuilt.unet, None, make_noise_scheduler(config.optim), run_dir / "pipeline")
    _, tuned, sampler = load_run_model(run_dir)
    quality_tuned = s.quality(tuned, sampler, steps) if finetune_steps else quality_pruned
    report = {"parent": str(run), "ratio": ratio, "importance": importance, "finetune_steps": finetune_steps,
              "finetune_distill": distill,
              "taylor": None if pass_info is None else {"timesteps_used": len(pass_info.timesteps),
                                                        "stopped_at": pass_info.stopped_at, "thr": thr},
              "time_refit_residual": rebuilt.time_refit_residual, "parent_model": parent_stats, "pruned_model": pruned_stats,
              "macs_reduction": parent_stats["macs_per_image"] / pruned_stats["macs_per_image"],
              "params_reduction": parent_stats["params"] / pruned_stats["params"],
              "eval": {"samples": eval_samples, "sampler_steps": steps, "features": config.stop.eval_features},
              "quality": {"parent": quality_parent, "pruned": quality_pruned, "finetuned": quality_tuned}}
    report = s.finish(report, "compression.json")
    table = Table(title=f"prune {ratio:g} ({importance}) · {eval_samples} samples, {steps} steps", title_justify="left")
    for col in ("model", "params", "M MACs", "quality"):
        table.add_column(col, justify="right" if col != "model" else "left")
    table.add_row("parent", f"{parent_stats['params']:,}", f"{parent_stats['macs_per_image'] / 1e6:.1f}", _fmt_quality(quality_parent))
    table.add_row("pruned", f"{pruned_stats['params']:,}", f"{pruned_stats['macs_per_image'] / 1e6:.1f}", _fmt_quality(quality_pruned))
    table.add_row(f"+ {finetune_steps} steps", f"{pruned_stats['params']:,}", f"{pruned_stats['macs_per_image'] / 1e6:.1f}",
                  _fmt_quality(quality_tuned))
    Console().print(table)
    _print_energy(console, report["energy"], "pruning + fine-tuning")
    console.print(f"pruned run {display_path(run_dir)} ({time.perf_counter() - s.t0:.0f} s) · report {display_path(run_dir / 'compression.json')}",
                  highlight=False, markup=False)


def distill_command(
    teacher: Annotated[Path, Opt("--teacher", help="Trained teacher run directory.")],
    student_preset: Annotated[Optional[str], Opt("--student-preset", help="The student's model preset (smaller than the teacher).")] = None,
    student_init: Annotated[Optional[Path], Opt("--student-init", help="Start the student from this UNet2DModel folder instead, "
                                                "e.g. PRUNED_RUN/pruned-unet from greendiff prune --finetune-steps 0; "
                                                "its widths define the student.")] = None,
    max_steps: Annotated[Optional[int], number_option("--max-steps", bounds=INT, help="Student training steps (default: the teacher's).")] = None,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Student learning rate (default: its preset's).")] = None,
    output_weight: Annotated[float, number_option("--output-weight", bounds=FLOAT, help="Weight of matching the teacher's prediction.")] = 1.0,
    feature_weight: Annotated[float, number_option("--feature-weight", bounds=FLOAT, help="Weight of matching same-shaped block features.")] = 0.1,
    data_weight: Annotated[float, number_option("--data-weight", bounds=FLOAT, help="Weight of the ordinary denoising loss.")] = 1.0,
    eval_samples: EvalSamples = 500,
    output_dir: OutputDir = None, name: Name = None, sets: Sets = [],
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    live: Live = "none", zone: Zone = None, cpu_watts: CpuWatts = None, gpus: Gpus = None,
    no_gpu: NoGpu = False, ledger: LedgerPath = None,
) -> None:
    """Train a smaller student to match a teacher (output and feature distillation); teacher forwards are metered."""
    from greendiff.compress import check_teacher
    from greendiff.train import PRESETS, build_unet, count_parameters, load_run_model, to_toml

    _check_parent(teacher, "--teacher")
    if (student_preset is None) == (student_init is None):
        raise UserInputError("give the student as --student-preset P or --student-init DIR (one of them)")
    if student_preset is not None and student_preset not in PRESETS:
        raise UserInputError(f"unknown --student-preset {student_preset!r}; use one of {', '.join(PRESETS)}")
    init = _unet_config(student_init) if student_init is not None else None  # read and checked before any work
    settings = resolve_settings(country, cloud, grid, pue, live, zone, cpu_watts, gpus, no_gpu, ledger)
    console = Console(stderr=True)
    s = Session(teacher, eval_samples, console, "--teacher")  # the teacher's config, EMA model and data; creates nothing
    if init is not None:
        widths, layers = init
        student = {"model.block_out_channels": ",".join(map(str, widths)), "model.layers_per_block": layers,
                   "model.init_from": str(student_init),
                   "optim.lr": lr}  # a pruned student keeps the teacher's learning rate unless told
        label = f"student {display_path(student_init)}"
    else:
        student = {"model.preset": student_preset, "model.block_out_channels": (), "model.layers_per_block": -1,
                   "model.attention": "preset", "model.init_from": "", "optim.lr": lr if lr is not None else 0.0}
        label = f"student preset {student_preset!r}"
    name = name or derived_name(f"student-{student_preset or 'init'}", teacher)
    overrides = {**student, "run.max_steps": max_steps if max_steps is not None else s.config.run.max_steps,
                 "run.name": name, "distill.kind": "output",
                 "distill.teacher": str(teacher / "pipeline" / "unet"), "distill.output_weight": output_weight,
                 "distill.feature_weight": feature_weight, "distill.data_weight": data_weight}
    config = derived_config(teacher, overrides, sets)
    student_params = count_parameters(build_unet(config.model, config.data.resolution, s.unet.config.in_channels,
                                                 config.optim.num_train_timesteps))
    teacher_params = count_parameters(s.unet)
    if student_params >= teacher_params:
        raise UserInputError(f"{label} ({student_params:,} parameters) is not smaller than the "
                             f"teacher ({teacher_params:,}); pick a smaller student")
    check_teacher(s.unet, teacher / "pipeline" / "unet", config.data.resolution, s.data.channels)
    run_dir = _new_run_dir(output_dir or str(teacher.parent), name)
    config = derived_config(teacher, {**overrides, "run.output_dir": str(run_dir.parent)}, sets)
    _write_text(run_dir / "config.toml", to_toml(config))
    student_flag = f"--student-init {student_init}" if student_init else f"--student-preset {student_preset}"
    s.start(run_dir, settings, "distill", f"greendiff distill --teacher {teacher} {student_flag}")
    result = s.train(config, run_dir, "distill")
    if result.status != "completed":
        raise UserInputError(f"distillation ended {result.status} at step {result.step}; resume with: greendiff train --resume {display_path(run_dir)}")
    _, student, sampler = load_run_model(run_dir)
    steps = config.optim.sample_steps
    quality_teacher = s.quality(s.unet, s.sampler, steps)
    quality_student = s.quality(student, sampler, steps)
    teacher_stats, student_stats = _model_stats(s.unet), _model_stats(student)
    report = {"teacher": str(teacher), "student_preset": student_preset, "student_init": str(student_init or ""),
              "steps": result.step,
              "weights": {"data": data_weight, "output": output_weight, "feature": feature_weight},
              "teacher_model": teacher_stats, "student_model": student_stats,
              "params_reduction": teacher_stats["params"] / student_stats["params"],
              "macs_reduction": teacher_stats["macs_per_image"] / student_stats["macs_per_image"],
              "eval": {"samples": eval_samples, "sampler_steps": steps, "features": config.stop.eval_features},
              "quality": {"teacher": quality_teacher, "student": quality_student}}
    report = s.finish(report, "distill.json")
    console.print(f"teacher {teacher_stats['params']:,} parameters: {_fmt_quality(quality_teacher)}\n"
                  f"student {student_stats['params']:,} parameters ({report['params_reduction']:.1f}x fewer): "
                  f"{_fmt_quality(quality_student)}", highlight=False)
    _print_energy(console, report["energy"], "student training (teacher forwards included)")
    console.print(f"student run {display_path(run_dir)} · report {display_path(run_dir / 'distill.json')}", highlight=False, markup=False)


def _unet_config(folder: Path) -> tuple[tuple[int, ...], int]:
    """The widths and layers per block of the ``UNet2DModel`` saved in ``folder`` (its ``config.json``);
    a one-line error naming the file when it is missing, damaged or lacks them."""
    from greendiff.ledger import BadRecordError, load_json_file

    path = folder / "config.json"
    if not path.is_file():
        raise UserInputError(f"--student-init {display_path(folder)}: not a saved UNet2DModel (no config.json)")
    try:
        config = load_json_file(path)
    except BadRecordError as exc:
        raise UserInputError(f"--student-init: {exc}") from None
    widths = config.get("block_out_channels") if isinstance(config, dict) else None
    layers = config.get("layers_per_block") if isinstance(config, dict) else None
    if not (isinstance(widths, list) and widths and all(type(w) is int and 1 <= w <= 8192 for w in widths)):
        raise UserInputError(f"--student-init: {display_path(path)}: block_out_channels should be a list of widths "
                             "(whole numbers from 1 to 8192)")
    if not (type(layers) is int and 1 <= layers <= 16):
        raise UserInputError(f"--student-init: {display_path(path)}: layers_per_block should be a whole number from 1 to 16")
    return tuple(widths), layers


def distill_steps_command(
    teacher: Annotated[Path, Opt("--teacher", help="Trained teacher run directory.")],
    rounds: Annotated[int, number_option("--rounds", bounds=ROUNDS, help="Halvings of the sampling steps (3: 8x fewer).")] = 3,
    teacher_steps: Annotated[int, number_option("--teacher-steps", bounds=TEACHER_STEPS, help="The teacher's DDIM steps (T must be divisible by each halving).")] = 40,
    steps_per_round: Annotated[int, number_option("--steps-per-round", bounds=COUNT, help="Training steps of each round.")] = 500,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Learning rate of each round (default: the teacher's / 4).")] = None,
    eval_samples: EvalSamples = 500,
    output_dir: OutputDir = None, name: Name = None, sets: Sets = [],
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    live: Live = "none", zone: Zone = None, cpu_watts: CpuWatts = None, gpus: Gpus = None,
    no_gpu: NoGpu = False, ledger: LedgerPath = None,
) -> None:
    """Progressive distillation: each round halves the DDIM steps; quality and sampling energy per image at each."""
    import torch

    from greendiff.compress import check_rounds
    from greendiff.train import load_run_model, make_noise_scheduler, make_sampler, sample_images, to_toml

    _check_parent(teacher, "--teacher")
    settings = resolve_settings(country, cloud, grid, pue, live, zone, cpu_watts, gpus, no_gpu, ledger)
    console = Console(stderr=True)
    s = Session(teacher, eval_samples, console, "--teacher")
    teacher_config = s.config
    check_rounds(teacher_config.optim.num_train_timesteps, teacher_steps, rounds)

    def round_config(k: int, source: Path, round_dir: Path):
        n = teacher_steps >> (k - 1)
        return derived_config(teacher, {
            "model.init_from": str(source), "distill.kind": "steps", "distill.teacher": str(source),
            "distill.teacher_steps": n, "optim.sampler": "ddim", "optim.sample_steps": n // 2,
            "optim.lr": lr if lr is not None else teacher_config.optim.lr / 4, "run.max_steps": steps_per_round,
            "run.name": round_dir.name, "run.output_dir": str(round_dir.parent)}, sets)

    round_config(1, teacher / "pipeline" / "unet", Path("round-1"))  # --set and the rest checked before anything is created
    run_dir = _new_run_dir(output_dir or str(teacher.parent), name or derived_name("fewstep", teacher))
    s.start(run_dir, settings, "distill-steps", f"greendiff distill-steps --teacher {teacher} --rounds {rounds}")
    ddim = make_sampler(dataclasses.replace(teacher_config.optim, sampler="ddim"), make_noise_scheduler(teacher_config.optim))
    shape = (s.unet.config.in_channels, s.unet.config.sample_size, s.unet.config.sample_size)

    def per_image_kwh(unet, steps: int) -> float:
        """Sampling energy per image at ``steps`` steps: a fixed batch of images in its own (evaluation) phase."""
        n, phase = 256, f"eval-sampling-{steps}"
        s.tracker.begin_window(phase)
        sample_images(unet.eval(), ddim, n, steps, shape, torch.Generator().manual_seed(1))
        return sum(s.tracker.end_window(phase).energy_j.values()) / 3.6e6 / n

    final_steps = teacher_steps >> rounds
    rows = [{"model": "teacher", "steps": teacher_steps, "quality": s.quality(s.unet, ddim, teacher_steps),
             "sample_kwh_per_image": per_image_kwh(s.unet, teacher_steps)},
            {"model": "teacher (plain DDIM)", "steps": final_steps, "quality": s.quality(s.unet, ddim, final_steps),
             "sample_kwh_per_image": per_image_kwh(s.unet, final_steps)}]
    source = teacher / "pipeline" / "unet"
    for k in range(1, rounds + 1):
        n = teacher_steps >> (k - 1)
        round_dir = run_dir / f"round-{k}"
        round_dir.mkdir()
        config = round_config(k, source, round_dir)
        _write_text(round_dir / "config.toml", to_toml(config))
        result = s.train(config, round_dir, f"round {k}: {n}→{n // 2} steps")
        if result.status != "completed":
            raise UserInputError(f"round {k} ended {result.status}; resume with: greendiff train --resume {display_path(round_dir)}, "
                                 f"then rerun the later rounds")
        _, student, _ = load_run_model(round_dir)
        rows.append({"model": f"round {k}", "steps": n // 2, "quality": s.quality(student, ddim, n // 2),
                     "sample_kwh_per_image": per_image_kwh(student, n // 2), "run": str(round_dir)})
        source = round_dir / "pipeline" / "unet"
    report = {"teacher": str(teacher), "rounds": rounds, "teacher_steps": teacher_steps, "final_steps": final_steps,
              "steps_per_round": steps_per_round, "student": str(source.parent.parent),
              "eval": {"samples": eval_samples, "features": teacher_config.stop.eval_features}, "rows": rows}
    report = s.finish(report, "distill_steps.json")
    table = Table(title=f"progressive distillation · {eval_samples} samples per row", title_justify="left")
    for col in ("model", "DDIM steps", "quality", "sampling energy / image"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in rows:
        table.add_row(row["model"], str(row["steps"]), _fmt_quality(row["quality"]), fmt_energy(row["sample_kwh_per_image"]))
    Console().print(table)
    _print_energy(console, report["energy"], f"{rounds} rounds of distillation")
    console.print(f"final student {display_path(source.parent.parent)} samples with {final_steps} DDIM steps "
                  f"(greendiff sample --run {display_path(source.parent.parent)}) · report {display_path(run_dir / 'distill_steps.json')}",
                  highlight=False, markup=False)
