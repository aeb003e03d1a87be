"""The trainer: a state (:func:`~greendiff.train._step.setup`), one step (:func:`train_step`), and events out.

:class:`Trainer` runs the steps and raises events to one list of callbacks (metrics writer, divergence
guard, stopping rules, carbon-aware controller, progress bars, loggers, pruners): they answer with a
:class:`Stop` to end the run. Its collaborators are passed in: the model family (network, loss,
sampling, export), the objective (the loss; distillation passes its own) and the evaluator.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from greendiff.data import BUILTIN, Batch, Data
from greendiff.display import fixed_point
from greendiff.errors import UserInputError
from greendiff.train._align import aligned_objective
from greendiff.train._callbacks import CallbackList, LogSchedule, MetricsWriter, Stop
from greendiff.train._checkpoint import fingerprint, load_latest, save_checkpoint
from greendiff.train._config import TrainConfig
from greendiff.train._divergence import Diverged, DivergenceGuard, weights_finite
from greendiff.data import DIGIT_CLASSES
from greendiff.train._evaluation import QualityEvaluator
from greendiff.train._events import (
    EndEvent, LogEvent, PauseEvent, PauseStartEvent, PhaseProgress, RanksInSyncEvent, StartEvent, StoppedEvent, Waited,
)
from greendiff.train._images import save_grid
from greendiff.train._pace import StepEnergy
from greendiff.train._space import latent_generator
from greendiff.train._step import (
    BatchStream, DataFailed, StepBatch, TrainState, data_failure, setup, step_generator, train_step, trainable,
    update_marker,
)
from greendiff.train._stopping import StopCallback, StoppingRules
from greendiff.units import joules_to_kwh

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    status: str  # completed | stopped (a stopping rule fired) | interrupted | diverged | failed (the data failed)
    step: int
    last_loss: float
    run_dir: Path
    prior_energy_j: float = 0.0  # energy of earlier segments of a resumed run, from its checkpoint
    stop_reason: str = ""


class RunTotals:
    """The run's energy and CO2e so far: earlier segments (from the checkpoint) plus this one's meters.

    Emissions are the tracker's ledger accounting (:meth:`Tracker.emissions_so_far_kg`, each hour at its
    own intensity, PUE included), summed over a job's processes. Its state (key ``emissions``) carries
    the emissions so far into the checkpoint, as ``energy_j`` carries the energy.
    """

    state_key = "emissions"

    def __init__(self, tracker, dist) -> None:
        self.tracker, self.dist = tracker, dist
        self.prior_energy_j = 0.0
        self.prior_emissions_kg = 0.0

    def energy_j(self) -> float:
        """Energy of the run so far, this process or (a collective in a job) the whole job."""
        return self.prior_energy_j + self.tracker.total_energy_j()

    def emissions_kg(self) -> float:
        """kgCO2e of the run so far (a collective in a job)."""
        mine = self.tracker.emissions_so_far_kg()
        return self.prior_emissions_kg + (float(sum(self.dist.all_gather(mine))) if self.dist.distributed else mine)

    def state_dict(self) -> dict:
        return {"emissions_kg": self.emissions_kg()}

    def load_state_dict(self, state: dict) -> None:
        """``ValueError`` unless the saved emissions are a finite, non-negative number."""
        value = state["emissions_kg"]
        if type(value) not in (int, float) or not (math.isfinite(value) and 0 <= value < 1e15):
            raise ValueError(f"emissions_kg {value!r:.30} is not an amount of CO2e")
        self.prior_emissions_kg = float(value)

    def __deepcopy__(self, memo) -> RunTotals:  # a checkpoint's state is tried on a copy: share the meters
        twin = RunTotals(self.tracker, self.dist)
        twin.prior_energy_j, twin.prior_emissions_kg = self.prior_energy_j, self.prior_emissions_kg
        return twin


class Weights:
    """The trainer's view of its weights: the EMA swapped in for sampling, and whether they may be saved."""

    def __init__(self, state: TrainState, dist) -> None:
        self.state, self.dist = state, dist

    @contextlib.contextmanager
    def ema(self):
        """The model in eval mode with the EMA weights swapped in, restored afterwards."""
        model, ema = self.state.objects.model, self.state.objects.ema
        if ema is not None:
            ema.store(trainable(model))
            ema.copy_to(trainable(model))
        model.eval()
        try:
            yield model
        finally:
            model.train()
            if ema is not None:
                ema.restore(trainable(model))

    def problem(self, step: int) -> str | None:
        """Why the weights must not be saved (some value is not finite, on any process), or ``None``."""
        ema = self.state.objects.ema
        tensors = [*trainable(self.state.objects.model), *(ema.shadow_params if ema is not None else ())]
        if self.dist.all_true(weights_finite(tensors)):
            return None
        return f"the weights are not finite after step {step} (an update too large for them)"

    def checksums(self) -> RanksInSyncEvent:
        """Every process's parameter checksum (data parallelism keeps the replicas identical)."""
        digest = hashlib.sha256()
        for p in trainable(self.state.objects.model):
            digest.update(p.detach().float().cpu().numpy().tobytes())
        sums = self.dist.all_gather(digest.hexdigest())
        return RanksInSyncEvent(self.dist.world_size, sums, len(set(sums)) == 1)


def check_data(config: TrainConfig, data: Data, processes: int = 1) -> None:
    """The data can fill a batch on every process and, for a class-conditional run, has a class in
    0..K-1 for every image (checked before a run directory is created)."""
    n, need = data.num_images, config.optim.batch_size * processes
    if n < need:
        raise UserInputError(f"the dataset has {n} images, fewer than one batch of {config.optim.batch_size}"
                             + (f" on each of {processes} processes" if processes > 1 else "") + "; lower --batch-size")
    if config.model.conditioning == "class":
        check_class_labels(data.labels, config.model.num_classes)


def check_class_labels(labels: torch.Tensor | None, num_classes: int) -> None:
    """Every image of a class-conditional run has a class id in 0..K-1 (``model.num_classes`` K, resolved
    from the data before the run: ``greendiff.workflows`` does it)."""
    if num_classes < 1:
        raise UserInputError("model.conditioning = class needs model.num_classes, the dataset's number of classes "
                             "(0 is not resolved yet)")
    if labels is None:
        raise UserInputError("model.conditioning = class needs class labels; this dataset has none")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise UserInputError(f"{bad.numel():,} images have a class id outside 0..{num_classes - 1} (e.g. {int(bad[0])}); "
                             "every image of a class-conditional run needs a class")


def run_class_names(config: TrainConfig, data: Data) -> tuple[str, ...]:
    """The name of each class id 0..K-1: the data's (``()`` for bare ids), the digits for a bundled set."""
    names = tuple(getattr(data, "class_names", ()) or ())
    return DIGIT_CLASSES if not names and config.data.dataset.lower() in BUILTIN else names


def stopping_callback(config: TrainConfig, tracker, pace: StepEnergy | None = None) -> StopCallback:
    """The stopping rules ``config.stop`` asks for, as the trainer's last callback; ``pace``: the trainer's
    measure of the energy per step (the budgets forecast the next step from it)."""
    stop, run = config.stop, config.run
    rules = StoppingRules(stop.patience, stop.min_delta, stop.min_gain_per_kwh, stop.gain_window, stop.target,
                          stop.budget_kwh, stop.budget_kgco2e, stop.budget_warmup_steps,
                          max((d.uncertainty_frac for d in tracker.monitor.devices), default=0.0), pace)
    return StopCallback(rules, run.max_steps, stop.metric, stop.eval_every, stop.eval_every_kwh, stop.spread_seeds,
                        stop.fit_schedule, stop.eval_at_end)


class Trainer:
    """Train ``config`` on ``data``, writing metrics, samples, checkpoints and the pipeline to ``run_dir``.

    Callbacks are asked in this order: the metrics writer, the divergence guard, the log schedule, the
    caller's ``callbacks``, then the stopping rules (``config.stop``).

    Args:
        tracker: A started :class:`~greendiff.tracking.Tracker`; phases ``train``, ``sample``, ``eval``,
            ``checkpoint`` (and ``wait`` for pauses) are its windows.
        family: The model family (default: the config's, :func:`~greendiff.train.family_for`).
        objective: The loss, called like :func:`diffusion_loss` (default: ``family.loss``, with the alignment
            term of ``optim.align`` added: :mod:`greendiff.train._align`).
        evaluator: Scores samples for evaluations (default: a :class:`QualityEvaluator` from ``config.stop``).
        callbacks: :class:`TrainerCallback` objects (progress bars, loggers, pruners, a carbon-aware controller).
        resume: Continue from the newest checkpoint in ``run_dir``.

    Example::

        result = Trainer(config, run_dir, data, tracker, callbacks=[PrintLoss()]).run()
    """

    def __init__(self, config: TrainConfig, run_dir: Path, data: Data, tracker, *, family=None,
                 objective: Callable | None = None, evaluator=None, callbacks: Iterable = (), resume: bool = False) -> None:
        from greendiff.parallel import Dist
        from greendiff.train._family import family_for

        self.config, self.run_dir, self.data, self.tracker, self.resume = config, run_dir, data, tracker, resume
        self.dist: Dist = getattr(tracker, "dist", Dist())
        self.is_main = self.dist.is_main
        check_data(config, data, self.dist.world_size)
        self.family = family or family_for(config)
        run, stop = config.run, config.stop
        self.evaluating = bool(stop.eval_every or stop.eval_every_kwh or stop.eval_at_end)
        self.class_names = run_class_names(config, data)
        self.evaluator = evaluator or self.family.evaluator(self)
        self.stream = self._stream(data)
        self.totals = RunTotals(tracker, self.dist)
        self.pace = StepEnergy()  # the segment's energy per step, from its own steps (begun before the first)
        self.writer = MetricsWriter(run_dir / "metrics.jsonl")
        self.callbacks = CallbackList([self.writer, DivergenceGuard(run.max_bad_steps, run.max_steps),
                                       LogSchedule(run.log_every, run.max_steps), *callbacks,
                                       stopping_callback(config, tracker, self.pace)])
        parts = {**self.callbacks.stateful(), RunTotals.state_key: self.totals}
        self.state = setup(config, self.family, data.channels, self.dist.world_size, parts)
        if self.family.space.latent:
            self.family.space.to(self.state.device)
        # the family's loss, plus representation alignment (optim.align) on it; a caller's objective is used as given
        self.objective = objective or aligned_objective(self.family.loss, self.state.align, self.state)
        self.weights = Weights(self.state, self.dist)
        self.shapes = fingerprint(config, data.channels)
        self.last_loss = math.nan
        self.cut_short = False  # a loader worker's death interrupted an update: the weights are half-updated

    # -- what callbacks may ask --------------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """Steps done so far (resumed ones included)."""
        return self.state.step

    def energy_so_far_j(self) -> float:
        return self.totals.energy_j()

    def emissions_so_far_kg(self) -> float:
        return self.totals.emissions_kg()

    def emit(self, event) -> Stop | None:
        """Raise ``event`` to every callback; the first :class:`Stop` answered."""
        return self.callbacks.emit(self, event)

    def interrupt_requested(self) -> bool:
        return self.callbacks.interrupt_requested()

    def set_lr_horizon(self, steps: int) -> None:
        """End the learning-rate schedule at ``steps`` (a budget forecast to run out there)."""
        self.state.schedule.horizon_steps = steps

    def report_progress(self, phase: str, done: float, total: float, info: str = "") -> None:
        """Raise a :class:`PhaseProgress` (main process only): long work inside the loop moved on."""
        if self.is_main:
            self.emit(PhaseProgress(phase, done, total, info))

    def evaluate(self, seeds: int = 1) -> dict:
        """Scores of the EMA weights (metered in an ``eval`` window), the same on every process; the images
        sampled so far raised as :class:`PhaseProgress` (``eval``) after every sampler step."""
        stop, optim = self.config.stop, self.config.optim
        steps = stop.eval_sample_steps or optim.sample_steps
        sampled = SamplingProgress(self, seeds)
        with self.tracker.window("eval"), self.weights.ema() as model:
            return self.evaluator.evaluate(
                lambda n, seed, labels=None: self._sample(model, n, steps, seed, labels, sampled), seeds)

    def _sample(self, model, n: int, steps: int, seed: int, labels=None,
                sampled: SamplingProgress | None = None) -> torch.Tensor:
        res = self.config.data.resolution
        on_step = sampled.draw(n) if sampled is not None else None
        with self.state.accelerator.autocast():
            return self.family.sample(model, self.state.sampler, n, steps, (self.data.channels, res, res),
                                      torch.Generator().manual_seed(seed), self.state.device, labels=labels,
                                      on_step=on_step)

    def write_samples(self, step: int) -> Path | None:
        """A preview grid of the EMA weights in ``samples/step-N.png`` (main process), laid out by the family
        (a class-conditional one: a row per class)."""
        if not self.is_main:
            return None
        run, res = self.config.run, self.config.data.resolution
        with self.tracker.window("sample"), self.weights.ema() as model, self.state.accelerator.autocast():
            grid, columns = self.family.preview(model, self.state.sampler, run.num_samples, self.config.optim.sample_steps,
                                                (self.data.channels, res, res),
                                                torch.Generator().manual_seed(run.seed + 12_345), self.state.device)
            return save_grid(grid, self.run_dir / "samples" / f"step-{step}.png", columns=columns)

    def save_checkpoint(self, step: int, name: str | None = None) -> Path:
        """Save a checkpoint (``name``: outside the rotation, e.g. ``best``), unless the weights are not
        finite: then the run has diverged (:class:`Diverged`)."""
        if (problem := self.weights.problem(step)) is not None:
            raise Diverged(problem)
        books = {"energy_j": self.totals.energy_j(), "fingerprint": self.shapes}
        # a ledger sample with every checkpoint, written before the checkpoint exists: the energy a checkpoint
        # carries into a resume is always in the ledger already, wherever a kill falls (after the checkpoint and
        # before its sample, the ledger would miss the steps since the previous sample)
        self.tracker.sync()
        with self.tracker.window("checkpoint"):
            path = save_checkpoint(self.state.accelerator, self.state.objects, self.run_dir, step, books,
                                   self.config.run.keep_checkpoints, name)
        self.callbacks.call("on_checkpoint", self, step, path)
        return path

    def pause(self, until: datetime, wait: Callable[[], Waited], reason: str = "", now: datetime | None = None) -> Waited:
        """Checkpoint, say why (:class:`PauseStartEvent`, planned from ``now`` to ``until`` for ``reason``), then
        ``wait()`` in a metered ``wait`` window and raise a :class:`PauseEvent`, interrupted or not. Returns what
        ``wait()`` waited (a :class:`Waited`; ``interrupted``: a stop request or a Ctrl-C it caught cut it short:
        the caller, which books the wait, ends the run)."""
        self.save_checkpoint(self.step)
        self.emit(PauseStartEvent(self.step, now or datetime.now(timezone.utc), until, reason))
        with self.tracker.window("wait"):
            waited = wait()
        self.emit(PauseEvent(self.step, waited.began, until, waited.ended, waited.interrupted))
        return waited

    def _stream(self, data) -> BatchStream:
        run = self.config.run
        return BatchStream(data, self.config.optim.batch_size, self.dist.world_size, self.dist.rank, run.seed,
                           run.max_steps)

    def _encode_progress(self, done: float, total: float) -> None:
        self.report_progress("encode", done, total, "encoding the dataset into latents, once")

    def draw_batch(self, step: int) -> StepBatch:
        """The batch of ``step`` on the device: the model's clean input (B, C, H, W) (images in [-1, 1], or their
        latents: :mod:`greendiff.train._space`) and what the family's loss takes from it (labels). Each process
        takes its slice of the global batch; rank 0 of a job and a single process draw alike, from memory or
        streamed from disk (:class:`~greendiff.train._step.BatchStream`). Encoding a batch of images into latents
        (no latent cache) is metered as the ``encode`` phase."""
        state, space = self.state, self.family.space
        batch = self.stream.batch(step)
        if space.latent:  # the posterior's noise; pixels draw nothing here
            generator = latent_generator(self.config.run.seed + 1_000_003 * self.dist.rank, step)
            with self.tracker.window("encode") if isinstance(batch, Batch) else contextlib.nullcontext():
                x0 = space.x0(batch, generator).to(state.device)
        else:
            x0 = space.x0(batch, None).to(state.device)
        x0 = x0.contiguous(memory_format=torch.channels_last) if state.channels_last else x0
        return StepBatch(x0, self.family.loss_inputs(batch, state.device))

    def log_event(self, step: int, samples_per_s: float, warmup: bool = False) -> LogEvent:
        """The progress record of ``step``: energy (kWh) and CO2e (kg) so far as the ledger accounts them, and the
        energy projected at ``max_steps`` from the segment's energy per step (:class:`StepEnergy`: from its first
        step alone, warm-up included, until a second is measured); ``warmup``: the throughput's interval holds
        the segment's first step."""
        ema, used_kwh = self.state.objects.ema, joules_to_kwh(self.energy_so_far_j())
        projected, with_warmup = self.pace.projected_kwh(step, used_kwh, self.config.run.max_steps) or (None, False)
        return LogEvent(step, self.last_loss, self.state.objects.lr_scheduler.get_last_lr()[0], samples_per_s,
                        used_kwh, self.emissions_so_far_kg(), ema.cur_decay_value if ema is not None else None, warmup,
                        projected, with_warmup)

    def _measure_pace(self) -> None:
        """Before the segment's first step (after its ``on_step_begin``: setup and a pause before it are no
        step's) and after it: the two readings :attr:`pace` measures the energy per step from."""
        if not self.pace.begun:
            self.pace.begin(self.step, joules_to_kwh(self.energy_so_far_j()))
        elif self.pace.wants_record and self.step > self.pace.start[0]:
            self.pace.record(self.step, joules_to_kwh(self.energy_so_far_j()))

    # -- the run -----------------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        try:
            self._start()
            status, reason = self._steps()
            return self._finish(status, reason)
        finally:
            self.stream.close()
            self.writer.close()

    def _start(self) -> None:
        state = self.state
        if self.resume:
            saved = load_latest(state.accelerator, state.objects, self.run_dir, self.shapes)
            state.step, self.totals.prior_energy_j = saved["step"], float(saved["energy_j"])
        logger.info("%s: %s parameters, %s GMACs per image; precision %s (%s) on %s", self.family.name,
                    f"{state.params:,}", fixed_point(state.macs_per_image / 1e9), state.precision, state.precision_reason,
                    state.device)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.emit(self._start_event())
        if self.family.space.latent:
            self._use_latent_cache()
        self.family.prepare(self)  # what the family computes once before the first step (a fine-tune's text table)
        if self.evaluating and self.is_main:
            with self.tracker.window("eval"):
                self.evaluator.prepare(self.data.reference_images())

    def _use_latent_cache(self) -> None:
        """Stream the cached latents: a hit, or the dataset encoded now, once (in a job, by the main process
        while the others wait, then a hit for them)."""
        space, source = self.family.space, None
        if self.is_main:
            source = space.training_data(self.data, lambda: self.tracker.window("encode"), self._encode_progress)
        if self.dist.distributed:
            self.dist.all_true(True)  # a barrier: the main process has stored the entry
        if not self.is_main:
            source = space.training_data(self.data)
        self.stream.close()
        self.stream = self._stream(source)

    def _start_event(self) -> StartEvent:
        s, optim, processes = self.state, self.config.optim, self.dist.world_size
        scaling = f"x{s.lr_scale} (optim.scale_lr, {processes} processes)" if s.lr_scale > 1 else "none"
        return StartEvent(s.step, s.params, s.macs_per_image, s.precision, s.precision_reason, str(s.device),
                          self.data.source, self.data.skipped, processes, optim.batch_size * processes,
                          optim.lr * s.lr_scale, scaling, self.data.placement, self.family.sampling_forwards,
                          self.family.describe(self.config, self.data.channels))

    def _steps(self) -> tuple[str, str]:
        """Steps until ``max_steps`` or a callback's :class:`Stop`; the status and reason. A failure of the data
        (:func:`~greendiff.train._step.data_failure`) ends the run ``failed``: drawing a batch fails before its
        step, and a loader worker's death may also be raised mid-step by torch's SIGCHLD handler (then
        :attr:`cut_short` says whether it interrupted the update itself)."""
        state, run = self.state, self.config.run
        state.unet.train()
        begun, marker = state.step, None
        try:
            while state.step < run.max_steps:
                self.callbacks.call("on_step_begin", self)
                if self.interrupt_requested():
                    return "interrupted", ""
                begun, marker = state.step, update_marker(state.objects.optimizer)
                self._measure_pace()
                generator = step_generator(run.seed + 1_000_003 * self.dist.rank, state.step)
                outcome = train_step(state, self.draw_batch(state.step), self.objective, generator, self.config,
                                     self.dist, self.tracker)
                self._measure_pace()
                if outcome.updated:
                    self.last_loss = outcome.loss
                if (stop := self.callbacks.first_stop("on_step_end", self, outcome)) is not None:
                    return stop.status, stop.reason
                if outcome.updated and outcome.step < run.max_steps:
                    if outcome.step % run.sample_every == 0:
                        self.write_samples(outcome.step)
                    if outcome.step % run.checkpoint_every == 0:
                        self.save_checkpoint(outcome.step)
        except KeyboardInterrupt:
            return "interrupted", ""
        except Diverged as exc:  # a checkpoint found the weights non-finite
            return "diverged", str(exc)
        except DataFailed as exc:  # before its step: the weights are those of the last completed step
            return "failed", str(exc)
        except RuntimeError as exc:
            if (reason := data_failure(exc, state.step + 1)) is None:
                raise
            self.cut_short = state.step == begun and not _same(marker, update_marker(state.objects.optimizer))
            return "failed", reason
        finally:  # a streamed set's loader workers end with the steps, before the final samples and export
            self.stream.close()
        return "completed", ""

    def _finish(self, status: str, reason: str) -> TrainResult:
        """Judge the run, then save what it earned: nothing more of a diverged run (its earlier checkpoints
        stay), a checkpoint of an interrupted or failed one (of its last completed step; none when the failure
        cut an update short), and also samples and the pipeline of a finished one."""
        step = self.step
        if status != "diverged":
            veto = self.callbacks.first_stop("judge_end", self, status)
            problem = veto.reason if veto is not None else self.weights.problem(step)
            if problem is not None:
                status, reason = "diverged", problem
        if status == "diverged":
            return self._end(status, reason)
        if self.cut_short:
            return self._end(status, f"{reason}; it cut the update short, so the newest checkpoint stands")
        finished = status in ("completed", "stopped")
        if finished:
            self.callbacks.call("on_final", self, status)
        self.save_checkpoint(step)
        if status == "stopped":
            self.emit(StoppedEvent(step, reason))
        if finished:
            self.write_samples(step)
            if self.dist.distributed:
                self.emit(self.weights.checksums())
            if self.is_main:
                with self.tracker.window("checkpoint"):
                    names = self.class_names if len(self.class_names) == self.family.num_classes else None
                    self.family.export(self.state.objects.model, self.state.objects.ema, self.state.noise_scheduler,
                                       self.run_dir / "pipeline", class_names=names)
        return self._end(status, reason)

    def _end(self, status: str, reason: str) -> TrainResult:
        self.emit(EndEvent(status, self.step, reason))
        return TrainResult(status, self.step, self.last_loss, self.run_dir, self.totals.prior_energy_j, reason)


class SamplingProgress:
    """An evaluation's sampling as :class:`PhaseProgress` events: ``draw(n)`` before each of its ``seeds`` draws
    gives the sampler's per-step callback (images done in this draw, a float), raised as the images sampled
    of ``n * seeds`` (this process's share)."""

    def __init__(self, trainer: Trainer, seeds: int) -> None:
        self.trainer, self.seeds = trainer, seeds
        self.drawn = 0.0  # images of earlier draws
        self.n = 0

    def draw(self, n: int) -> Callable[[float], None]:
        self.drawn += self.n
        self.n = n
        self.trainer.report_progress("eval", self.drawn, n * self.seeds, "sampling for the evaluation")
        return self.step

    def step(self, done: float) -> None:
        self.trainer.report_progress("eval", self.drawn + done, self.n * self.seeds, "sampling for the evaluation")


def _same(before: torch.Tensor | None, after: torch.Tensor | None) -> bool:
    """Whether two :func:`~greendiff.train._step.update_marker` readings are equal (no update began between)."""
    if before is None or after is None:
        return before is None and after is None
    return torch.equal(before, after)
