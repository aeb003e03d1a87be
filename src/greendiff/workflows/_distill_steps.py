"""Progressive distillation (Salimans & Ho 2022): each round trains a student to match two DDIM steps of
its teacher in one, halving the sampling steps; quality and sampling energy per image at each
(``distill_steps.json``).

Example:
    >>> from greendiff.workflows import DistillStepsJob, run_distill_steps
    >>> outcome = run_distill_steps(DistillStepsJob(teacher=Path("runs/teacher"), rounds=2))  # doctest: +SKIP
    >>> [row.steps for row in outcome.report.rows]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.units import joules_to_kwh
from greendiff.workflows._compress_session import (
    ROUNDS, TEACHER_STEPS, CompressionEnergy, CompressOutcome, CompressSession, EvalSettings, check_common,
    check_parent, derived_config, derived_name, quality_dict,
)
from greendiff.numbers import COUNT
from greendiff.workflows._fields import checked_int, set_fields
from greendiff.workflows._conditioning import check_unconditional_teacher
from greendiff.workflows._eval import EvalResult
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress
from greendiff.workflows._rundir import new_run_dir, write_config, write_location

SAMPLING_IMAGES = 256  #: images sampled (in an evaluation phase) to price one image's sampling


@dataclass(frozen=True)
class DistillStepsJob:
    """Progressive distillation of a teacher run.

    Args:
        teacher: the trained teacher run directory.
        rounds: halvings of the sampling steps (3: 8x fewer).
        teacher_steps: the teacher's DDIM steps (the training timesteps divisible by each halving).
        steps_per_round: training steps of each round.
        lr: learning rate of each round (None: the teacher's / 4).
        eval_samples: images per quality evaluation (0 skips).
        output_dir, name, sets, measurement: as :class:`~greendiff.workflows.PruneJob`.
    """

    teacher: Path
    rounds: int = 3
    teacher_steps: int = 40
    steps_per_round: int = 500
    lr: float | None = None
    eval_samples: int = 500
    output_dir: str | None = None
    name: str | None = None
    sets: Mapping[str, str] = field(default_factory=dict)
    measurement: MeasurementOptions = MeasurementOptions()

    def __post_init__(self) -> None:
        """Checked as ``greendiff distill-steps`` checks its flags (``TypeError`` naming the field for a wrong
        type, the flag's one-line :class:`UserInputError` out of range); paths may be given as ``str``."""
        check_common(self, "teacher")
        set_fields(self, rounds=checked_int(self.rounds, ROUNDS, "DistillStepsJob.rounds", "--rounds"),
                   teacher_steps=checked_int(self.teacher_steps, TEACHER_STEPS, "DistillStepsJob.teacher_steps",
                                             "--teacher-steps"),
                   steps_per_round=checked_int(self.steps_per_round, COUNT, "DistillStepsJob.steps_per_round",
                                               "--steps-per-round"))


@dataclass(frozen=True)
class StepsRow:
    """A model at a number of DDIM ``steps``: its ``quality`` (None: skipped), sampling energy per image (kWh)
    and, for a round's student, its ``run`` directory."""

    model: str
    steps: int
    quality: EvalResult | None
    sample_kwh_per_image: float
    run: str | None = None

    def to_dict(self) -> dict:
        return {"model": self.model, "steps": self.steps, "quality": quality_dict(self.quality),
                "sample_kwh_per_image": self.sample_kwh_per_image, **({} if self.run is None else {"run": self.run})}


@dataclass(frozen=True)
class DistillStepsReport:
    """What ``distill_steps.json`` holds (:meth:`to_dict`): the rounds, the final ``student`` run directory, a
    row per model (the teacher at its steps and at the final steps, then each round's student) and the
    energy (set when the job finishes)."""

    teacher: str
    rounds: int
    teacher_steps: int
    final_steps: int
    steps_per_round: int
    student: str
    eval: EvalSettings
    rows: tuple[StepsRow, ...]
    energy: CompressionEnergy | None = None

    def to_dict(self) -> dict:
        return {"teacher": self.teacher, "rounds": self.rounds, "teacher_steps": self.teacher_steps,
                "final_steps": self.final_steps, "steps_per_round": self.steps_per_round, "student": self.student,
                "eval": self.eval.to_dict(), "rows": [row.to_dict() for row in self.rows],
                **({} if self.energy is None else {"energy": self.energy.to_dict()})}


def _round_config(job: DistillStepsJob, teacher_lr: float, k: int, source: Path, round_dir: Path):
    """Round ``k``'s config: from ``source``, ``teacher_steps / 2^(k-1)`` teacher steps into half as many."""
    n = job.teacher_steps >> (k - 1)
    return derived_config(job.teacher, {
        "model.init_from": str(source), "distill.kind": "steps", "distill.teacher": str(source),
        "distill.teacher_steps": n, "optim.sampler": "ddim", "optim.sample_steps": n // 2,
        "optim.lr": job.lr if job.lr is not None else teacher_lr / 4, "run.max_steps": job.steps_per_round,
        "run.name": round_dir.name, "run.output_dir": str(round_dir.parent)}, job.sets)


class _Rows:
    """Quality and sampling energy per image of a model at a number of DDIM steps, as a report row."""

    def __init__(self, s: CompressSession) -> None:
        from greendiff.train import make_noise_scheduler, make_sampler

        optim = s.config.optim
        self.s = s
        self.ddim = make_sampler(dataclasses.replace(optim, sampler="ddim"), make_noise_scheduler(optim))
        self.shape = (s.unet.config.in_channels, s.unet.config.sample_size, s.unet.config.sample_size)

    def row(self, model: str, unet, steps: int, run: str | None = None) -> StepsRow:
        return StepsRow(model, steps, self.s.quality(unet, self.ddim, steps), self.sampling_kwh(unet, steps), run)

    def sampling_kwh(self, unet, steps: int) -> float:
        """Sampling energy per image at ``steps`` steps: a fixed batch of images in its own (evaluation) phase."""
        import torch

        from greendiff.train import sample_images

        phase = f"eval-sampling-{steps}"
        self.s.tracker.begin_window(phase)
        sample_images(unet.eval(), self.ddim, SAMPLING_IMAGES, steps, self.shape, torch.Generator().manual_seed(1))
        return joules_to_kwh(sum(self.s.tracker.end_window(phase).energy_j.values())) / SAMPLING_IMAGES


def run_distill_steps(job: DistillStepsJob, progress: Progress | None = None) -> CompressOutcome:
    """``job.rounds`` rounds in ``run_dir/round-K``, each a resumable run; one ledger run (kind ``distill-steps``).
    The outcome's ``report.student``: the final student's run directory."""
    from greendiff.compress import check_rounds
    from greendiff.train import load_run_model

    check_parent(job.teacher, "--teacher")
    check_unconditional_teacher(job.teacher, "distill-steps")
    settings = resolve_settings(job.measurement, run=job.teacher)
    s = CompressSession(job.teacher, job.eval_samples, progress or NullProgress(), "--teacher")
    teacher_lr = s.config.optim.lr
    check_rounds(s.config.optim.num_train_timesteps, job.teacher_steps, job.rounds)
    source = job.teacher / "pipeline" / "unet"
    _round_config(job, teacher_lr, 1, source, Path("round-1"))  # the sets and the rest checked before anything is created
    run_dir = new_run_dir(job.output_dir or str(job.teacher.parent), job.name or derived_name("fewstep", job.teacher))
    s.start(run_dir, settings, "distill-steps", f"greendiff distill-steps --teacher {job.teacher} --rounds {job.rounds}")
    rows, final_steps = _Rows(s), job.teacher_steps >> job.rounds
    table = [rows.row("teacher", s.unet, job.teacher_steps), rows.row("teacher (plain DDIM)", s.unet, final_steps)]
    for k in range(1, job.rounds + 1):
        n = job.teacher_steps >> (k - 1)
        round_dir = run_dir / f"round-{k}"
        round_dir.mkdir()
        config = _round_config(job, teacher_lr, k, source, round_dir)
        write_config(round_dir, config)
        write_location(round_dir, s.settings.stored)  # a round is resumed on its own: priced where the job is
        result = s.train(config, round_dir, f"round {k}: {n}→{n // 2} steps")
        if result.status != "completed":
            raise UserInputError(f"round {k} ended {result.status}; resume with: greendiff train --resume {display_path(round_dir)}, "
                                 f"then rerun the later rounds")
        student = load_run_model(round_dir).unet
        table.append(rows.row(f"round {k}", student, n // 2, str(round_dir)))
        source = round_dir / "pipeline" / "unet"
    report = DistillStepsReport(str(job.teacher), job.rounds, job.teacher_steps, final_steps, job.steps_per_round,
                                str(source.parent.parent), EvalSettings(job.eval_samples, s.config.stop.eval_features),
                                tuple(table))
    return s.finish(report, "distill_steps.json")
