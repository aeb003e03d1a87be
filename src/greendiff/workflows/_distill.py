"""Knowledge distillation: a smaller student trained to match a teacher run (output and feature matching),
the teacher's forwards metered; quality and size compared (``distill.json``).

Example:
    >>> from greendiff.workflows import DistillJob, run_distill
    >>> outcome = run_distill(DistillJob(teacher=Path("runs/teacher"), student_preset="pico"))  # doctest: +SKIP
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
    STEPS, WEIGHT, CompressionEnergy, CompressOutcome, CompressSession, EvalSettings, ModelStats, check_common,
    check_parent, derived_config, derived_name, model_stats, quality_dict,
)
from greendiff.workflows._fields import checked_float, checked_int, checked_path, set_fields
from greendiff.workflows._conditioning import check_unconditional_teacher
from greendiff.workflows._eval import EvalResult
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress
from greendiff.workflows._rundir import new_run_dir, write_config


@dataclass(frozen=True)
class DistillJob:
    """Distillation of a teacher run into a smaller student: ``student_preset`` or ``student_init`` (one).

    Args:
        teacher: the trained teacher run directory.
        student_preset: the student's model preset (smaller than the teacher).
        student_init: a ``UNet2DModel`` folder to start the student from (e.g. ``PRUNED_RUN/pruned-unet``).
        max_steps: student training steps (None: the teacher's).
        lr: student learning rate (None: its preset's, or the teacher's for ``student_init``).
        output_weight: weight of matching the teacher's prediction.
        feature_weight: weight of matching same-shaped block features.
        data_weight: weight of the ordinary denoising loss.
        eval_samples: images per quality evaluation (0 skips).
        output_dir, name, sets, measurement: as :class:`~greendiff.workflows.PruneJob`.
    """

    teacher: Path
    student_preset: str | None = None
    student_init: Path | None = None
    max_steps: int | None = None
    lr: float | None = None
    output_weight: float = 1.0
    feature_weight: float = 0.1
    data_weight: float = 1.0
    eval_samples: int = 500
    output_dir: str | None = None
    name: str | None = None
    sets: Mapping[str, str] = field(default_factory=dict)
    measurement: MeasurementOptions = MeasurementOptions()

    def __post_init__(self) -> None:
        """Checked as ``greendiff distill`` checks its flags (``TypeError`` naming the field for a wrong type,
        the flag's one-line :class:`UserInputError` out of range); paths may be given as ``str``."""
        if self.student_preset is not None and not isinstance(self.student_preset, str):
            raise TypeError(f"DistillJob.student_preset must be a str or None, got {type(self.student_preset).__name__}")
        check_common(self, "teacher")
        max_steps = self.max_steps
        set_fields(self, student_init=checked_path(self.student_init, "DistillJob.student_init", optional=True),
                   max_steps=None if max_steps is None else checked_int(max_steps, STEPS, "DistillJob.max_steps", "--max-steps"),
                   **{f"{w}_weight": checked_float(getattr(self, f"{w}_weight"), WEIGHT, f"DistillJob.{w}_weight",
                                                   f"--{w}-weight") for w in ("output", "feature", "data")})


@dataclass(frozen=True)
class DistillWeights:
    """The loss weights: ``data`` (denoising), ``output`` (the teacher's prediction), ``feature`` (its block features)."""

    data: float
    output: float
    feature: float


@dataclass(frozen=True)
class DistillReport:
    """What ``distill.json`` holds (:meth:`to_dict`): the student, its training steps and weights, both models'
    sizes and quality (None where skipped), and the energy (set when the job finishes)."""

    teacher: str
    student_preset: str | None
    student_init: str  # "" for a preset student
    steps: int
    weights: DistillWeights
    teacher_model: ModelStats
    student_model: ModelStats
    eval: EvalSettings
    quality_teacher: EvalResult | None
    quality_student: EvalResult | None
    energy: CompressionEnergy | None = None

    @property
    def params_reduction(self) -> float:
        return self.teacher_model.params / self.student_model.params

    @property
    def macs_reduction(self) -> float:
        return self.teacher_model.macs_per_image / self.student_model.macs_per_image

    def to_dict(self) -> dict:
        return {"teacher": self.teacher, "student_preset": self.student_preset, "student_init": self.student_init,
                "steps": self.steps, "weights": dataclasses.asdict(self.weights),
                "teacher_model": self.teacher_model.to_dict(), "student_model": self.student_model.to_dict(),
                "params_reduction": self.params_reduction, "macs_reduction": self.macs_reduction,
                "eval": self.eval.to_dict(),
                "quality": {"teacher": quality_dict(self.quality_teacher), "student": quality_dict(self.quality_student)},
                **({} if self.energy is None else {"energy": self.energy.to_dict()})}


def _student(job: DistillJob) -> tuple[dict, str]:
    """The student's config keys and how messages call it; checked before any work."""
    from greendiff.train import PRESETS

    if (job.student_preset is None) == (job.student_init is None):
        raise UserInputError("give the student as --student-preset P or --student-init DIR (one of them)")
    if job.student_preset is not None and job.student_preset not in PRESETS:
        raise UserInputError(f"unknown --student-preset {job.student_preset!r}; use one of {', '.join(PRESETS)}")
    if job.student_init is None:
        return ({"model.preset": job.student_preset, "model.block_out_channels": (), "model.layers_per_block": -1,
                 "model.attention": "preset", "model.init_from": "", "optim.lr": job.lr if job.lr is not None else 0.0},
                f"student preset {job.student_preset!r}")
    widths, layers = unet_widths(job.student_init)
    return ({"model.block_out_channels": ",".join(map(str, widths)), "model.layers_per_block": layers,
             "model.init_from": str(job.student_init),
             "optim.lr": job.lr},  # a pruned student keeps the teacher's learning rate unless told
            f"student {display_path(job.student_init)}")


def run_distill(job: DistillJob, progress: Progress | None = None) -> CompressOutcome:
    """Train the student against ``job.teacher``, evaluate both; one ledger run (kind ``distill``)."""
    from greendiff.compress import check_teacher
    from greendiff.train import build_unet, count_parameters, load_run_model

    check_parent(job.teacher, "--teacher")
    check_unconditional_teacher(job.teacher, "distill")
    student, label = _student(job)
    settings = resolve_settings(job.measurement, run=job.teacher)
    s = CompressSession(job.teacher, job.eval_samples, progress or NullProgress(), "--teacher")
    name = job.name or derived_name(f"student-{job.student_preset or 'init'}", job.teacher)
    overrides = {**student, "run.max_steps": job.max_steps if job.max_steps is not None else s.config.run.max_steps,
                 "run.name": name, "distill.kind": "output",
                 "distill.teacher": str(job.teacher / "pipeline" / "unet"), "distill.output_weight": job.output_weight,
                 "distill.feature_weight": job.feature_weight, "distill.data_weight": job.data_weight}
    config = derived_config(job.teacher, overrides, job.sets)
    student_params = count_parameters(build_unet(config.model, config.data.resolution, s.unet.config.in_channels,
                                                 config.optim.num_train_timesteps))
    teacher_params = count_parameters(s.unet)
    if student_params >= teacher_params:
        raise UserInputError(f"{label} ({student_params:,} parameters) is not smaller than the "
                             f"teacher ({teacher_params:,}); pick a smaller student")
    check_teacher(s.unet, job.teacher / "pipeline" / "unet", config.data.resolution, s.data.channels)
    run_dir = new_run_dir(job.output_dir or str(job.teacher.parent), name)
    config = derived_config(job.teacher, {**overrides, "run.output_dir": str(run_dir.parent)}, job.sets)
    write_config(run_dir, config)
    student_flag = f"--student-init {job.student_init}" if job.student_init else f"--student-preset {job.student_preset}"
    s.start(run_dir, settings, "distill", f"greendiff distill --teacher {job.teacher} {student_flag}")
    result = s.train(config, run_dir, "distill")
    if result.status != "completed":
        raise UserInputError(f"distillation ended {result.status} at step {result.step}; resume with: greendiff train --resume {display_path(run_dir)}")
    loaded = load_run_model(run_dir)
    trained, sampler = loaded.unet, loaded.sampler
    steps = config.optim.sample_steps
    quality_teacher = s.quality(s.unet, s.sampler, steps)
    quality_student = s.quality(trained, sampler, steps)
    report = DistillReport(str(job.teacher), job.student_preset, str(job.student_init or ""), result.step,
                           DistillWeights(job.data_weight, job.output_weight, job.feature_weight),
                           model_stats(s.unet), model_stats(trained),
                           EvalSettings(job.eval_samples, config.stop.eval_features, steps), quality_teacher, quality_student)
    return s.finish(report, "distill.json")


def unet_widths(folder: Path) -> tuple[tuple[int, ...], int]:
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
