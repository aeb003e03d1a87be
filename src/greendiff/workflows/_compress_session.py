"""What the compression workflows (prune, distill, distill-steps) share: the parent run, its data, the one
ledger run of the job, its evaluations, and the closing report.

Each makes a cheaper model and trains it with the ordinary trainer (so it is a run directory like any other:
``config.toml``, ``pipeline/``, checkpoints, resumable), and writes a report next to it comparing size,
quality and energy with the parent. Evaluation has its own phase, reported apart from the compression's cost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from greendiff.errors import UserInputError
from greendiff.numbers import Bounds
from greendiff.names import MAX_NAME_CHARS, NAME_PUNCTUATION, check_name, display_path, unprintable
from greendiff.tracking import RunSummary
from greendiff.units import joules_to_kwh
from greendiff.workflows._eval import EvalResult, accuracy_note, class_scoring, reference_labels, score
from greendiff.workflows._fields import (
    check_instance, checked_float, checked_int, checked_overrides, checked_path, set_fields,
)
from greendiff.workflows._inputs import load_config_data
from greendiff.workflows._progress import Progress
from greendiff.workflows._rundir import write_config, write_emissions, write_file, write_location
from greendiff.workflows._segment import train_segment

logger = logging.getLogger(__name__)

#: The ranges of the numbers a compression job takes (``greendiff prune/distill/distill-steps`` read their flags with them).
RATIO = Bounds(lo=0, hi=1, lo_open=True, hi_open=True, phrase="between 0 and 1 (exclusive): the fraction of channels removed")
THRESHOLD = Bounds(lo=0, hi=1, hi_open=True, phrase="in [0, 1)")
ROUNDS = Bounds(integer=True, lo=1, hi=20)
TEACHER_STEPS = Bounds(integer=True, lo=2, hi=100_000)
EVAL_IMAGES0 = Bounds(integer=True, lo=0, hi=1_000_000)  #: 0 skips the evaluation
BATCH = Bounds(integer=True, lo=1, hi=65_536)
WEIGHT = Bounds()  #: a learning rate or loss weight: any finite number (the trainer's config checks its range)
STEPS = Bounds(integer=True)  #: a trainer step count: an integer (the trainer's config checks its range)


@dataclass(frozen=True)
class ModelStats:
    """A ``UNet2DModel``'s size: ``params``, ``macs_per_image`` (multiply-accumulates of one forward) and its
    ``block_out_channels``."""

    params: int
    macs_per_image: int
    block_out_channels: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"params": self.params, "macs_per_image": self.macs_per_image,
                "block_out_channels": list(self.block_out_channels)}


@dataclass(frozen=True)
class EvalSettings:
    """How a compression job's models were scored: ``samples`` per evaluation (0: skipped), ``features``, and
    ``sampler_steps`` (None where each row has its own, as in distill-steps)."""

    samples: int
    features: str
    sampler_steps: int | None = None

    def to_dict(self) -> dict:
        steps = {} if self.sampler_steps is None else {"sampler_steps": self.sampler_steps}
        return {"samples": self.samples, **steps, "features": self.features}


@dataclass(frozen=True)
class CompressionEnergy:
    """A compression job's energy split (kWh): ``total_kwh`` of its ledger run, ``eval_kwh`` of its evaluation
    phases, ``cost_kwh`` (the rest: what the compression cost), ``parent_training_kwh`` (None: unknown), the
    energy of each phase, ``emissions_kg`` and ``ledger_run_id``."""

    total_kwh: float
    eval_kwh: float
    cost_kwh: float
    parent_training_kwh: float | None
    phases_kwh: dict[str, float]
    emissions_kg: float
    ledger_run_id: int

    @property
    def cost_vs_parent(self) -> float | None:
        """The compression's cost as a share of the parent's training energy (None when that is unknown)."""
        return self.cost_kwh / self.parent_training_kwh if self.parent_training_kwh else None

    def to_dict(self) -> dict:
        return {"total_kwh": self.total_kwh, "eval_kwh": self.eval_kwh, "cost_kwh": self.cost_kwh,
                "parent_training_kwh": self.parent_training_kwh, "phases_kwh": dict(self.phases_kwh),
                "emissions_kg": self.emissions_kg, "ledger_run_id": self.ledger_run_id,
                "cost_vs_parent": self.cost_vs_parent}


def quality_dict(result: EvalResult | None) -> dict | None:
    """An evaluation as the reports write it (None: skipped)."""
    return None if result is None else result.to_dict()


class CompressionReport(Protocol):
    """What a compression job writes next to its run (``PruneReport``, ``DistillReport``,
    ``DistillStepsReport``): its :meth:`to_dict` is the JSON file; ``energy`` is set by :meth:`CompressSession.finish`."""

    energy: CompressionEnergy | None

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class CompressOutcome:
    """A compression job's result.

    Attributes:
        run_dir: the new run directory (for distill-steps, the folder of its rounds).
        report: what ``report_path`` holds (its ``to_dict()``): models, quality, ``energy``.
        report_path: the JSON report in ``run_dir``.
        summary: the job's one ledger run's summary.
        duration_s: wall time of the job.
    """

    run_dir: Path
    report: CompressionReport
    report_path: Path
    summary: RunSummary
    duration_s: float


def check_common(job, parent: str) -> None:
    """The fields every compression job has, checked and stored (``parent``: the run field, taken as ``str`` or
    ``Path``; ``lr``, ``eval_samples``, ``output_dir``, ``name``, ``sets``, ``measurement``)."""
    from greendiff.workflows._measurement import MeasurementOptions

    kind = type(job).__name__
    lr, output_dir, name = job.lr, job.output_dir, job.name
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{kind}.name must be a str or None, got {type(name).__name__} {name!r:.60}")
    set_fields(job, **{parent: checked_path(getattr(job, parent), f"{kind}.{parent}")},
               lr=None if lr is None else checked_float(lr, WEIGHT, f"{kind}.lr", "--lr"),
               eval_samples=checked_int(job.eval_samples, EVAL_IMAGES0, f"{kind}.eval_samples", "--eval-samples"),
               output_dir=None if output_dir is None else str(checked_path(output_dir, f"{kind}.output_dir")),
               sets=checked_overrides(job.sets, f"{kind}.sets"))
    check_instance(job.measurement, MeasurementOptions, f"{kind}.measurement")


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


def derived_config(parent: Path, overrides: dict, sets: Mapping[str, str]):
    """The parent's saved config with its stopping, distillation and run bookkeeping reset (seed kept),
    then ``overrides`` and ``sets`` (dotted keys, e.g. from ``--set``) applied, resolved and validated once."""
    from greendiff.train import read_toml, resolve_config

    base = read_toml(parent / "config.toml")
    base.pop("stop", None)
    base.pop("distill", None)
    base["run"] = {"seed": base.get("run", {}).get("seed", 0)}
    return resolve_config(overrides={**overrides, **sets}, base=base)


def check_parent(run: Path, flag: str = "--run") -> None:
    """One-line error unless ``run`` holds a trained model (``pipeline/unet`` and ``config.toml``)."""
    if not (run / "config.toml").is_file() or not (run / "pipeline" / "unet").is_dir():
        raise UserInputError(f"{flag} {display_path(run)}: no trained model (expected {display_path(run / 'pipeline')} "
                             f"and {display_path(run / 'config.toml')} from greendiff train)")


def model_stats(unet) -> ModelStats:
    """Parameters, MACs per image and widths of a ``UNet2DModel``."""
    from greendiff.train import count_macs, count_parameters

    return ModelStats(count_parameters(unet), count_macs(unet, unet.config.sample_size, unet.config.in_channels),
                      tuple(unet.config.block_out_channels))


def check_compressible(model, flag: str, parent: Path) -> None:
    """Pruning and distillation compress pixel-space UNets trained with epsilon or v: a one-line error for a
    latent run (a DiT or a latent UNet) or a flow-matching one."""
    from greendiff.names import display_path

    optim = model.config.optim
    if model.space is not None and model.space.latent:
        raise UserInputError(f"{flag} {display_path(parent)} is a latent run (model.vae); pruning and distillation "
                             "compress pixel-space UNet runs")
    if optim.objective == "flow":
        raise UserInputError(f"{flag} {display_path(parent)} was trained with the flow objective; pruning and "
                             "distillation compress UNets trained with epsilon or v")


class CompressSession:
    """The parent run (config, EMA model, sampler, data), then the job's one ledger run (:meth:`start`)."""

    def __init__(self, parent: Path, eval_samples: int, progress: Progress, flag: str = "--run") -> None:
        from greendiff.train import load_run_model

        if eval_samples and eval_samples < 4:
            raise UserInputError("--eval-samples must be 0 (skip) or >= 4")
        self.parent = parent
        self.parent_kwh = parent_energy_kwh(parent)  # read (and any damage named) before any work
        try:
            model = load_run_model(parent)
        except UserInputError as exc:  # name the option the user gave (--teacher), not train's --run
            message = str(exc)
            raise UserInputError(flag + message[len("--run"):] if message.startswith("--run ") else message) from None
        self.config, self.unet, self.sampler = model.config, model.unet, model.sampler
        check_compressible(model, flag, parent)
        self.num_classes = model.num_classes
        self.data = load_config_data(self.config)
        # a class-conditional parent is scored class-balanced, by class too: its labels checked before any work
        self._labels = (reference_labels(self.data, self.num_classes, eval_samples, "--eval-samples")
                        if self.num_classes and eval_samples else None)
        self.eval_samples = eval_samples
        self.progress = progress
        self._reference = None
        self.t0 = time.perf_counter()

    def start(self, run_dir: Path, settings, kind: str, command: str, keep_location: bool = True) -> None:
        """Everything is checked: create nothing before this. Starts the one ledger run of the job; the new run
        directory keeps where it is priced (``location.toml``, as a trained run does), unless ``keep_location``
        is False: a job that writes the run's ``config.toml`` later writes it then (:meth:`keep_config`)."""
        self.run_dir, self.settings = run_dir, settings
        if keep_location:
            write_location(run_dir, settings.stored)
        for line in (settings.note, self.data.placement):
            if line:
                self.progress.note(line)
        self.tracker = settings.tracker(run_dir.name, kind, command, run_dir=run_dir).start()

    def keep_config(self, config) -> None:
        """The new run directory made: its ``config.toml``, then where it is priced (``location.toml``)."""
        write_config(self.run_dir, config)
        write_location(self.run_dir, self.settings.stored)

    def train(self, config, run_dir: Path, label: str):
        """A training segment in ``run_dir`` under this job's ledger run, holding the run directory's lock
        (a ``train --resume`` of it meanwhile is refused)."""
        from greendiff.train import RunDirLock

        with RunDirLock(run_dir):
            return train_segment(config, self.data, run_dir, self.tracker, self.progress, label=label)

    def quality(self, unet, sampler, steps: int) -> EvalResult | None:
        """Quality on the shipped MNIST features, seed 0, in the ``eval`` phase (None when skipped); a
        class-conditional model's class-balanced, at the parent's ``optim.guidance_scale``, with its class scores."""
        if not self.eval_samples:
            return None
        from greendiff.evaluate import reference_features, resolve_extractor

        with self.tracker.window("eval"):
            if self._reference is None:
                extractor, _ = resolve_extractor(self.config.stop.eval_features)
                real = reference_features(self.data.reference_images(), extractor)
                # class accuracy only where the bundled digit classifier knows the classes, as eval scores it
                by_class = (class_scoring(real, self._labels, self.num_classes, self.config.optim.guidance_scale,
                                          digits=not accuracy_note(self.config, self.data))
                            if self._labels is not None else None)
                self._reference = (real, extractor, by_class)
            real, extractor, by_class = self._reference
            self.progress.on_start("evaluating", self.eval_samples)
            try:
                return score(unet, sampler, self.eval_samples, steps, real, extractor, kid_subset=self.eval_samples,
                             conditioning=by_class, progress=self.progress)
            finally:
                self.progress.on_end()

    def finish(self, report: CompressionReport, name: str) -> CompressOutcome:
        """Stop the tracker; add the energy split (the ``eval`` phase and its ``eval-...`` sub-phases, i.e.
        measurement, apart) to ``report``; write it and ``emissions.json``."""
        summary = self.tracker.stop("completed")
        eval_kwh = summary.phase_energy_kwh("eval")
        energy = CompressionEnergy(summary.energy_kwh, eval_kwh, summary.energy_kwh - eval_kwh, self.parent_kwh,
                                   {p.name: joules_to_kwh(p.energy_j) for p in summary.phases}, summary.emissions_kg,
                                   summary.run_id)
        report = dataclasses.replace(report, energy=energy)
        path = self.run_dir / name
        write_file(path, json.dumps(report.to_dict(), indent=2))
        write_emissions(self.run_dir, summary, 0.0, self.tracker.ledger)
        return CompressOutcome(self.run_dir, report, path, summary, time.perf_counter() - self.t0)
