"""The trainer's state and its one step: :func:`setup` builds the state, :func:`train_step` advances it.

Determinism: the data order of epoch ``e`` (:func:`greendiff.data.batch_indices`) and the noise of step ``s``
come from generators seeded by ``(seed, e)`` and ``(seed, s)``, so they need no saved state, and a resumed
run replays exactly what an uninterrupted one would (bit-identical on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from greendiff.errors import UserInputError
from greendiff.names import first_line
from greendiff.train._callbacks import StepOutcome
from greendiff.train._checkpoint import TrainingObjects
from greendiff.train._config import TrainConfig
from greendiff.train._precision import make_accelerator, resolve_precision
from greendiff.train._schedule import make_lr_scheduler


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an update changes (``requires_grad``), in module order: all of a network trained from
    scratch, the adapters alone of a LoRA fine-tune. The optimizer, the EMA and checkpoints hold these."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params, optim) -> torch.optim.Optimizer:
    """AdamW, fused where PyTorch has a fused kernel for the parameters (CPU and CUDA floats):
    the same update as the default per-tensor loop, measured 4.5x faster on the tiny UNet's
    1.1 M parameters on CPU (3.2 vs 14.7 ms per step; see BENCHMARKS.md, loop overhead)."""
    params = list(params)
    kwargs = dict(lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2), weight_decay=optim.weight_decay, eps=1e-8)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(params, **kwargs)


# torch's messages for a loader worker that died (its SIGCHLD handler or the iterator's own check): killed by a
# signal (the OOM killer's SIGKILL), or exited with no word of why
_WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? [\d, ]+\) (?:is killed by signal|exited unexpectedly)")


class DataFailed(Exception):
    """Drawing a step's batch failed (the data, or a loader worker): the step did not run. Its message is the
    one-line reason (:func:`data_failure`)."""


def data_failure(exc: BaseException, step: int) -> str | None:
    """The one-line reason when ``exc`` is the data failing at ``step`` (1-based: the step that could not run):
    the data's :class:`UserInputError` (a file deleted or corrupted after the start) or torch's ``RuntimeError``
    for a killed loader worker; ``None`` for any other error.

    Example:
        >>> data_failure(RuntimeError("DataLoader worker (pid 42) is killed by signal: Killed. "), 121)
        'a data loader worker was killed (out of memory?) at step 121: DataLoader worker (pid 42) is killed by signal: Killed.'
        >>> data_failure(RuntimeError("CUDA error: out of memory"), 121) is None
        True
    """
    if isinstance(exc, UserInputError):
        return f"the data failed at step {step}: {first_line(exc)}"
    if isinstance(exc, RuntimeError) and _WORKER_DIED.match(str(exc)):
        return f"a data loader worker was killed (out of memory?) at step {step}: {first_line(exc)}"
    return None


class BatchStream:
    """The data's batches for one process, drawn in step order from one iterator (``data.batches``, started at
    the first step drawn: a resumed run starts the stream at its step); a step out of order restarts it
    there. :meth:`close` ends the iterator (a streamed set's loader workers shut down with it).

    Args:
        data: An :class:`~greendiff.data.ImageSet` or :class:`~greendiff.data.StreamedSet`.
        batch_size: Images per process per step.
        world_size, rank: The job's processes and this one (each takes its slice of the global batch).
        seed: The run's seed (the order of every epoch).
        stop_step: The step the stream ends at (``run.max_steps``: nothing decoded beyond it).
    """

    def __init__(self, data, batch_size: int, world_size: int, rank: int, seed: int, stop_step: int | None) -> None:
        self.data, self.batch_size, self.world_size, self.rank, self.seed = data, batch_size, world_size, rank, seed
        self.stop_step = stop_step
        self._batches = None
        self._next = -1

    def batch(self, step: int):
        """The :class:`~greendiff.data.Batch` of ``step`` (steps done so far: the batch of step ``step + 1``);
        :class:`DataFailed`, with the stream closed, when the data or a loader worker fails (:func:`data_failure`)."""
        try:
            if self._batches is None or step != self._next:
                self.close()
                stop = self.stop_step if self.stop_step is not None and self.stop_step > step else None
                self._batches = self.data.batches(step, self.batch_size, self.world_size, self.rank, self.seed, stop)
            batch = next(self._batches)
        except (UserInputError, RuntimeError) as exc:
            if (reason := data_failure(exc, step + 1)) is None:
                raise
            self.close()
            raise DataFailed(reason) from exc
        self._next = step + 1
        return batch

    def close(self) -> None:
        """End the iterator now (idempotent)."""
        if self._batches is not None:
            batches, self._batches = self._batches, None
            if hasattr(batches, "close"):  # a generator: its cleanup (the loader's workers) runs now
                batches.close()


def step_generator(seed: int, step: int) -> torch.Generator:
    """The noise generator of step ``step`` (timesteps and noise of the loss)."""
    return torch.Generator().manual_seed(seed * 7_919 + step * 104_729 + 1)


def update_marker(optimizer) -> torch.Tensor | None:
    """A copy of the optimizer's update count (AdamW's ``step`` of its first parameter; ``None`` before the
    first update): it changes as soon as an update begins to change the weights. Copied on the count's own
    device, so taking it costs no synchronisation."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            count = optimizer.state.get(p, {}).get("step")
            return count.clone() if isinstance(count, torch.Tensor) else (None if count is None else torch.tensor(count))
    return None


@dataclass
class TrainState:
    """Everything a step changes or reads, built by :func:`setup`.

    ``unet`` is the network as accelerate prepared it (what the loss calls); ``objects.model`` the
    unwrapped one (what checkpoints, samples and the pipeline use). ``schedule`` is the learning-rate
    curve, whose horizon a budget may move. ``step`` counts the steps done, resumed ones included.
    """

    accelerator: Any
    unet: Any
    objects: TrainingObjects
    noise_scheduler: Any
    sampler: Any
    schedule: Any
    device: torch.device
    channels_last: bool
    precision: str
    precision_reason: str
    lr_scale: int
    params: int
    macs_per_image: int
    step: int = 0
    align: Any = None  # the run's representation alignment (greendiff.train._align.Alignment), or None


def setup(config: TrainConfig, family, channels: int, world_size: int, parts: dict) -> TrainState:
    """The model (``family``), optimizer, LR schedule, EMA and accelerator of a run; ``parts`` are the
    stateful callbacks that travel in its checkpoints."""
    from diffusers.training_utils import EMAModel

    optim, run = config.optim, config.run
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    precision, precision_reason = resolve_precision(optim.mixed_precision, device)
    accelerator = make_accelerator(precision, use_cuda)
    torch.manual_seed(run.seed)  # weight initialisation
    unet = family.build(config, channels)
    params, macs = family.size(unet, config, channels)
    channels_last = optim.channels_last == "on" or (optim.channels_last == "auto" and device.type == "cuda")
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    lr_scale = world_size if optim.scale_lr else 1
    align = _alignment(config, family, unet, device, world_size)
    # the projector's parameters (alignment) after the model's
    weights = [*trainable(unet), *(align.parameters() if align is not None else ())]
    optimizer = make_optimizer(weights, dataclasses.replace(optim, lr=optim.lr * lr_scale))
    # diffusers' curves; "constant" warms up like the others; a budget may move the horizon (stop.fit_schedule)
    lr_scheduler = make_lr_scheduler(optimizer, optim.lr_schedule, optim.warmup_steps, run.max_steps)
    schedule = lr_scheduler.lr_lambdas[0]
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema = None
    if optim.ema:
        ema = EMAModel(trainable(accelerator.unwrap_model(unet)), decay=optim.ema_max_decay,
                       use_ema_warmup=optim.ema_warmup, inv_gamma=1.0, power=optim.ema_power,
                       foreach=True)  # one kernel per op over all tensors: 2.4x faster on CPU (tiny UNet)
        ema.to(device)
    noise_scheduler = family.noise_scheduler(optim)
    if align is not None and align.part is not None:
        parts = {**parts, align.part.state_key: align.part}
    objects = TrainingObjects(accelerator.unwrap_model(unet), optimizer, lr_scheduler, ema, accelerator.scaler, parts)
    if optim.compile:  # the loss's forward and backward compiled; checkpoints, EMA and sampling keep the plain module
        unet = torch.compile(unet)
    return TrainState(accelerator, unet, objects, noise_scheduler, family.sampler(optim, noise_scheduler), schedule,
                      device, channels_last, precision, precision_reason, lr_scale, params, macs, align=align)


def _alignment(config: TrainConfig, family, unet: torch.nn.Module, device: torch.device, world_size: int):
    """The run's representation alignment (:func:`greendiff.train._align.make_alignment`; None with
    ``optim.align = none``), built after the model so its initialisation is unchanged. REPA's projector is
    trained on one process only (its gradient is not all-reduced in a job)."""
    if config.optim.align == "none":
        return None
    from greendiff.train._align import make_alignment

    if config.optim.align == "repa" and world_size > 1:
        raise UserInputError("--align repa trains its projector on one process; run it without --processes, or use "
                             "--align dispersive")
    return make_alignment(config, family, unet, device)


@dataclass(frozen=True)
class StepBatch:
    """One step's training input on the device: ``x0`` (B, C, H, W) in [-1, 1] and what else the model
    family's loss takes from the batch (``loss_inputs``, keyword arguments: e.g. ``labels`` (B,))."""

    x0: torch.Tensor
    loss_inputs: dict = field(default_factory=dict)


def train_step(state: TrainState, batch: StepBatch, objective: Callable, generator: torch.Generator,
               config: TrainConfig, dist, tracker) -> StepOutcome:
    """One optimizer step on ``batch``, metered in a ``train`` window.

    ``objective(unet, noise_scheduler, x0, generator, optim, **batch.loss_inputs)`` is the loss. The loss must
    be finite on every process for the update to apply: all skip a bad step together.
    """
    x0 = batch.x0
    with tracker.window("train"):
        with state.accelerator.autocast():
            loss = objective(state.unet, state.noise_scheduler, x0, generator, config.optim, **batch.loss_inputs)
        updated = dist.all_true(bool(torch.isfinite(loss))) and apply_update(state.accelerator, state.unet, state.objects,
                                                                             loss, config.optim.grad_clip)
    state.step += 1
    return StepOutcome(state.step, loss.item(), updated, x0.shape[0])


def optimized(optimizer) -> list[torch.nn.Parameter]:
    """The parameters ``optimizer`` updates, in order: the model's trainable ones (:func:`trainable`), then any
    trained beside it (an alignment projector); the gradient is clipped over all of them."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def apply_update(accelerator, unet, objects: TrainingObjects, loss: torch.Tensor, grad_clip: float) -> bool:
    """Backward, clipping, then the optimizer, schedule and EMA steps; ``False``, with nothing changed, when
    the gradient is not finite (a finite loss can have one, and its update would poison the weights). In a
    job the gradient is all-reduced, so every process decides alike; with fp16's gradient scaler, an inf
    gradient is the scaler's to skip (it lowers its scale), not a bad step. The gradient is clipped over all the
    optimizer's parameters (:func:`optimized`: ``unet``'s trainable ones, then an alignment projector's)."""
    accelerator.backward(loss)
    norm = accelerator.clip_grad_norm_(optimized(objects.optimizer), grad_clip if grad_clip > 0 else math.inf)
    if objects.scaler is None and norm is not None and not bool(torch.isfinite(norm)):
        objects.optimizer.zero_grad(set_to_none=True)
        return False
    objects.optimizer.step()
    objects.lr_scheduler.step()
    objects.optimizer.zero_grad(set_to_none=True)
    if objects.ema is not None:
        objects.ema.step(trainable(objects.model))
    return True
