"""The training loss a config's ``distill`` section asks for, and its teacher: loaded from a saved
``UNet2DModel`` folder and checked against the data (resolution, channels) before a run starts."""

from __future__ import annotations

from pathlib import Path

from greendiff.compress._distill import DistillationObjective
from greendiff.compress._steps import StepDistillationObjective
from greendiff.errors import UserInputError
from greendiff.train import TrainConfig


def check_teacher(teacher, folder: Path, resolution: int, channels: int) -> None:
    """One-line error if the teacher ``UNet2DModel`` cannot see data of this resolution and channel count."""
    if teacher.config.sample_size != resolution or teacher.config.in_channels != channels:
        raise UserInputError(f"teacher {folder} works on {teacher.config.in_channels}x{teacher.config.sample_size}x"
                             f"{teacher.config.sample_size} images, the data is {channels}x{resolution}x{resolution}; "
                             "use the teacher's dataset and resolution")


def load_teacher(folder: Path, resolution: int, channels: int):
    """The teacher ``UNet2DModel`` in ``folder``; one-line error if it is missing or cannot see this data."""
    from greendiff.train import load_unet

    if not (folder / "config.json").is_file():
        raise UserInputError(f"teacher {folder}: no saved model (expected a UNet2DModel folder with config.json, "
                             "e.g. RUN/pipeline/unet)")
    teacher = load_unet(folder, "teacher")
    check_teacher(teacher, folder, resolution, channels)
    return teacher


def objective_for(config: TrainConfig, channels: int):
    """The training loss ``config.distill`` asks for, or None for the plain denoising loss."""
    distill = config.distill
    if distill.kind == "none":
        return None
    teacher = load_teacher(Path(distill.teacher), config.data.resolution, channels)
    if distill.kind == "output":
        return DistillationObjective(teacher, distill.data_weight, distill.output_weight, distill.feature_weight)
    return StepDistillationObjective(teacher, distill.teacher_steps)
