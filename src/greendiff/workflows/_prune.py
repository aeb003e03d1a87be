"""Prune → fine-tune → compare: a trained model's channels removed (Diff-Pruning), the smaller model
fine-tuned by the ordinary trainer, size, quality and energy compared with the parent (``compression.json``).

Example:
    >>> from greendiff.workflows import PruneJob, run_prune
    >>> outcome = run_prune(PruneJob(run=Path("runs/parent"), ratio=0.5, finetune_steps=100))  # doctest: +SKIP
    >>> outcome.report.params_reduction  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.workflows._compress_session import (
    BATCH, RATIO, THRESHOLD, CompressionEnergy, CompressOutcome, CompressSession, EvalSettings, ModelStats,
    check_common, check_parent, derived_config, derived_name, model_stats, quality_dict,
)
from greendiff.numbers import COUNT0
from greendiff.workflows._fields import SAMPLER_STEPS, checked_float, checked_int, set_fields
from greendiff.workflows._eval import EvalResult
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress, TimestepDone
from greendiff.workflows._rundir import new_run_dir, removed_unless_made


@dataclass(frozen=True)
class PruneJob:
    """Pruning of a trained run.

    Args:
        run: the trained parent run directory.
        ratio: fraction of channels removed per layer, in (0, 1); MACs fall ~ (1 - ratio)^2.
        importance: ``taylor`` (Diff-Pruning), ``magnitude`` or ``random``.
        finetune_steps: trainer steps after pruning (0: none).
        taylor_timesteps: timesteps whose gradients score the channels.
        thr: stop accumulating at the first timestep whose loss < thr x max (Diff-Pruning: 0.05).
        taylor_batch: images per timestep in the Taylor pass.
        lr: fine-tuning learning rate (None: the parent's).
        distill: fine-tune against the parent's predictions too (its forwards are counted).
        eval_samples: images per quality evaluation (0 skips).
        output_dir: parent of the new run directory (None: the parent run's).
        name: the new run's name (None: ``pruned<ratio>-<parent>``).
        sets: more trainer config keys for the new run (dotted).
        measurement: where and how the job is measured.
    """

    run: Path
    ratio: float
    importance: str = "taylor"
    finetune_steps: int = 500
    taylor_timesteps: int = 100
    thr: float = 0.05
    taylor_batch: int = 64
    lr: float | None = None
    distill: bool = False
    eval_samples: int = 500
    output_dir: str | None = None
    name: str | None = None
    sets: Mapping[str, str] = field(default_factory=dict)
    measurement: MeasurementOptions = MeasurementOptions()

    def __post_init__(self) -> None:
        """Checked as ``greendiff prune`` checks its flags (``TypeError`` naming the field for a wrong type, the
        flag's one-line :class:`UserInputError` out of range); ``run`` and ``output_dir`` may be ``str``."""
        if not isinstance(self.importance, str) or not isinstance(self.distill, bool):
            bad = "importance" if not isinstance(self.importance, str) else "distill"
            raise TypeError(f"PruneJob.{bad} must be a {'str' if bad == 'importance' else 'bool'}, got "
                            f"{type(getattr(self, bad)).__name__}")
        check_common(self, "run")
        set_fields(self, ratio=checked_float(self.ratio, RATIO, "PruneJob.ratio", "--ratio"),
                   finetune_steps=checked_int(self.finetune_steps, COUNT0, "PruneJob.finetune_steps", "--finetune-steps"),
                   taylor_timesteps=checked_int(self.taylor_timesteps, SAMPLER_STEPS, "PruneJob.taylor_timesteps",
                                                "--taylor-timesteps"),
                   thr=checked_float(self.thr, THRESHOLD, "PruneJob.thr", "--thr"),
                   taylor_batch=checked_int(self.taylor_batch, BATCH, "PruneJob.taylor_batch", "--taylor-batch"))


@dataclass(frozen=True)
class TaylorSummary:
    """The Taylor pass: ``timesteps_used`` (scored before it stopped), ``stopped_at`` (the timestep whose loss
    fell below ``thr`` x max; None: it did not stop early) and ``thr``."""

    timesteps_used: int
    stopped_at: int | None
    thr: float


@dataclass(frozen=True)
class PruneReport:
    """What ``compression.json`` holds (:meth:`to_dict`): the job's settings, the models' sizes, their quality
    (parent, pruned, fine-tuned; None where skipped) and the energy (set when the job finishes)."""

    parent: str
    ratio: float
    importance: str
    finetune_steps: int
    finetune_distill: bool
    taylor: TaylorSummary | None
    time_refit_residual: float
    parent_model: ModelStats
    pruned_model: ModelStats
    eval: EvalSettings
    quality_parent: EvalResult | None
    quality_pruned: EvalResult | None
    quality_finetuned: EvalResult | None
    energy: CompressionEnergy | None = None

    @property
    def macs_reduction(self) -> float:
        return self.parent_model.macs_per_image / self.pruned_model.macs_per_image

    @property
    def params_reduction(self) -> float:
        return self.parent_model.params / self.pruned_model.params

    def to_dict(self) -> dict:
        return {"parent": self.parent, "ratio": self.ratio, "importance": self.importance,
                "finetune_steps": self.finetune_steps, "finetune_distill": self.finetune_distill,
                "taylor": None if self.taylor is None else dataclasses.asdict(self.taylor),
                "time_refit_residual": self.time_refit_residual, "parent_model": self.parent_model.to_dict(),
                "pruned_model": self.pruned_model.to_dict(), "macs_reduction": self.macs_reduction,
                "params_reduction": self.params_reduction, "eval": self.eval.to_dict(),
                "quality": {"parent": quality_dict(self.quality_parent), "pruned": quality_dict(self.quality_pruned),
                            "finetuned": quality_dict(self.quality_finetuned)},
                **({} if self.energy is None else {"energy": self.energy.to_dict()})}


def run_prune(job: PruneJob, progress: Progress | None = None) -> CompressOutcome:
    """Prune ``job.run``, fine-tune, evaluate parent, pruned and fine-tuned models; one ledger run (kind ``prune``)."""
    from greendiff.compress import IMPORTANCES, check_ratio
    from greendiff.train import check_data, family_for, load_run_model, make_noise_scheduler

    check_ratio(job.ratio)
    if job.importance not in IMPORTANCES:
        raise UserInputError(f"unknown --importance {job.importance!r}; use one of {', '.join(IMPORTANCES)}")
    check_parent(job.run)
    settings = resolve_settings(job.measurement, run=job.run)
    s = CompressSession(job.run, job.eval_samples, progress or NullProgress())
    class_names = parent_class_names(job.run, s.num_classes)
    if s.num_classes:  # the Taylor pass and the fine-tuning read a class in 0..K-1 for every image, as training did
        check_data(s.config, s.data)
    name = job.name or derived_name(f"pruned{job.ratio:g}", job.run)
    fine_tune = {"run.max_steps": max(job.finetune_steps, 1), "run.name": name, "optim.lr": job.lr,
                 **({"distill.kind": "output", "distill.teacher": str(job.run / "pipeline" / "unet")} if job.distill else {})}
    check_fine_tune(job, s.num_classes, fine_tune)  # before anything is created
    run_dir, steps = new_run_dir(job.output_dir or str(job.run.parent), name), s.config.optim.sample_steps
    with removed_unless_made(run_dir):  # killed before its config.toml (a broken pipe): no half-made run left
        s.start(run_dir, settings, "prune", f"greendiff prune --run {job.run} --ratio {job.ratio:g}", keep_location=False)
        parent_stats = model_stats(s.unet)
        quality_parent = s.quality(s.unet, s.sampler, steps)  # before pruning changes it in place
        rebuilt, pass_info = _prune(s, job, run_dir / "pruned-unet")
        pruned_stats = model_stats(rebuilt.unet)
        quality_pruned = s.quality(rebuilt.unet, s.sampler, steps)
        ft_config = derived_config(job.run, {**fine_tune, "model.block_out_channels": ",".join(map(str, rebuilt.block_out_channels)),
                                             "model.init_from": str(run_dir / "pruned-unet"),
                                             "run.output_dir": str(run_dir.parent)}, job.sets)
        s.keep_config(ft_config)
    if job.finetune_steps:
        result = s.train(ft_config, run_dir, "fine-tune")
        if result.status != "completed":
            raise UserInputError(f"fine-tuning ended {result.status} at step {result.step}; resume with: "
                                 f"greendiff train --resume {display_path(run_dir)}")
    else:  # the parent's kind of pipeline (class-conditional: with its class names)
        family_for(s.config).export(rebuilt.unet, None, make_noise_scheduler(s.config.optim), run_dir / "pipeline",
                                    class_names=class_names)
    loaded = load_run_model(run_dir)
    tuned, sampler = loaded.unet, loaded.sampler
    quality_tuned = s.quality(tuned, sampler, steps) if job.finetune_steps else quality_pruned
    taylor = None if pass_info is None else TaylorSummary(len(pass_info.timesteps), pass_info.stopped_at, job.thr)
    report = PruneReport(str(job.run), job.ratio, job.importance, job.finetune_steps, job.distill, taylor,
                         rebuilt.time_refit_residual, parent_stats, pruned_stats,
                         EvalSettings(job.eval_samples, s.config.stop.eval_features, steps),
                         quality_parent, quality_pruned, quality_tuned)
    return s.finish(report, "compression.json")


def check_fine_tune(job: PruneJob, num_classes: int, fine_tune: dict) -> None:
    """The new run's config resolved (the sets, the rest) before anything is created, the parent's UNet standing in
    for the pruned one as its ``model.init_from``; a class-conditional run (``num_classes`` > 0) fine-tunes like
    any other, but its ``--distill`` is one line in prune's flags (the trainer distils unconditional students only)."""
    start = {"model.init_from": str(job.run / "pipeline" / "unet")}
    plain = {key: value for key, value in fine_tune.items() if not key.startswith("distill.")}
    derived_config(job.run, {**plain, **start}, job.sets)  # an error of the user's own keys, as it is
    try:
        derived_config(job.run, {**fine_tune, **start}, job.sets)
    except UserInputError:
        if not (num_classes and job.distill):
            raise
        raise UserInputError(f"--run {display_path(job.run)} is class-conditional ({num_classes} classes) and --distill "
                             "trains unconditional students only; drop --distill (fine-tuning alone keeps the "
                             "classes)") from None


def parent_class_names(run: Path, num_classes: int) -> tuple[str, ...] | None:
    """The name of each class id 0..K-1 that a class-conditional parent's pipeline keeps (its
    ``model_index.json``), checked before anything is created; None for an unconditional parent or one saved
    without names."""
    if not num_classes:
        return None
    from greendiff.ledger import load_json_file
    from greendiff.pipelines import check_class_names

    path = run / "pipeline" / "model_index.json"
    raw = load_json_file(path) if path.is_file() else {}
    try:
        return check_class_names(raw.get("class_names") if isinstance(raw, dict) else None, num_classes)
    except UserInputError as exc:
        raise UserInputError(f"--run {display_path(run)}: {display_path(path)}: {exc}") from None


def _prune(s: CompressSession, job: PruneJob, folder: Path):
    """The parent's channels scored and removed, in the ``prune`` phase; the rebuilt model saved in ``folder``.
    ``(Rebuilt, TaylorPass or None)``."""
    import torch

    from greendiff.compress import accumulate_taylor_gradients, prune_in_place, rebuild
    from greendiff.train import make_noise_scheduler

    config, parent = s.config, s.unet
    with s.tracker.window("prune"):
        pass_info = None
        if job.importance == "taylor":
            batch = taylor_batch(s.data, job.taylor_batch, config.run.seed)
            x0 = batch.images.float() / 127.5 - 1.0
            labels = batch.labels if s.num_classes else None  # a class-conditional parent scores its own loss
            s.progress.on_start("taylor", job.taylor_timesteps)
            try:
                pass_info = accumulate_taylor_gradients(
                    parent.train(), make_noise_scheduler(config.optim), x0, job.taylor_timesteps, job.thr,
                    torch.Generator().manual_seed(config.run.seed), config.optim.prediction_type,
                    on_timestep=_Timesteps(s.progress), labels=labels,
                    cond_dropout=config.optim.cond_dropout if labels is not None else 0.0)
            finally:
                s.progress.on_end()
        torch.manual_seed(config.run.seed)  # random importance
        prune_in_place(parent, job.ratio, job.importance, example_inputs(parent, s.num_classes))
        rebuilt = rebuild(parent)
        rebuilt.unet.save_pretrained(str(folder))
    return rebuilt, pass_info


def example_inputs(unet, num_classes: int) -> dict:
    """The forward inputs Torch-Pruning traces a run's UNet with: one blank image (1, C, H, W) at timestep 1, and
    for a class-conditional run (``num_classes`` K > 0) class 0, whose embedding joins the time MLP's channels."""
    import torch

    size = unet.config.sample_size
    inputs = {"sample": torch.zeros(1, unet.config.in_channels, size, size), "timestep": torch.ones(1, dtype=torch.long)}
    return inputs | ({"class_labels": torch.zeros(1, dtype=torch.long)} if num_classes else {})


def taylor_batch(data, n: int, seed: int):
    """``n`` real images (a :class:`~greendiff.data.Batch`: ``uint8 (n, C, H, W)`` and their labels when the data
    has them; all of them when there are fewer): the first batch the seed draws, from memory or decoded from
    disk alike."""
    return next(data.batches(0, batch_size=min(n, data.num_images), seed=seed, stop_step=1))


class _Timesteps:
    """The Taylor pass's ``on_timestep``: each timestep to the progress as a :class:`TimestepDone`."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __call__(self, t: int) -> None:
        self.progress.on_log(TimestepDone(t))
