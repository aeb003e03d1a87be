"""The training loop: accelerate for precision and placement, diffusers for the model parts.

Determinism: the data order of epoch ``e`` and the noise of step ``s`` come from generators
seeded by ``(seed, e)`` and ``(seed, s)``, so they need no saved state, and a resumed run
replays exactly what an uninterrupted one would (bit-identical on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from greendiff.data import ImageSet
from greendiff.errors import UserInputError
from greendiff.tracking import Tracker
from greendiff.names import display_path
from greendiff.train._checkpoint import (
    TrainingObjects, check_resume, fingerprint, load_latest, remove_tree, save_checkpoint,
)
from greendiff.train._config import TrainConfig
from greendiff.train._divergence import Diverged, DivergenceGuard, weights_finite
from greendiff.train._diffusion import diffusion_loss, make_noise_scheduler, make_sampler, sample_images
from greendiff.train._images import save_grid
from greendiff.train._model import build_unet, check_architecture, check_init_from, count_macs, count_parameters
from greendiff.train._schedule import make_lr_scheduler
from greendiff.train._stopping import StopCallback, StoppingRules

logger = logging.getLogger(__name__)


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """AVX512-BF16 or AMX: without them CPU bf16 autocast is emulated and slower than fp32
    (measured ~10x slower on this project's AVX2-only EPYC VM; see BENCHMARKS.md)."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The autocast dtype to use and why. ``auto``: bf16 where the hardware runs it natively
    (Ampere+ GPUs; CPUs with AVX512-BF16/AMX), fp16 on older GPUs, else full fp32."""
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UserInputError("fp16 autocast is not supported on the CPU; use --mixed-precision bf16 or no")
        return requested, "set by the config"
    if device.type == "cuda":
        return ("bf16", "auto: GPU supports bf16") if torch.cuda.is_bf16_supported() else ("fp16", "auto: GPU lacks bf16")
    if cpu_has_native_bf16():
        return "bf16", "auto: CPU has native bf16 (AVX512-BF16/AMX)"
    return "no", "auto: CPU lacks native bf16 (no AVX512-BF16/AMX), where bf16 autocast is slower than fp32"


def _accelerator(precision: str, use_cuda: bool):
    """An ``Accelerator`` for this run. accelerate keeps one global state per process; a second run in
    the same process (tests, tuning) with another precision must clear it first. Only the
    precision part (``AcceleratorState``) is cleared, never the process-group part."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision, cpu=not use_cuda)


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


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the batch of ``step``: a fresh permutation per epoch, seeded by (seed, epoch)."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch_size:(k + 1) * batch_size]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7_919 + step * 104_729 + 1)


@dataclass
class TrainResult:
    status: str  # completed | stopped (a stopping rule fired) | interrupted | diverged
    step: int
    last_loss: float
    run_dir: Path
    prior_energy_j: float = 0.0  # energy of earlier segments of a resumed run, from its checkpoint
    stop_reason: str = ""


def check_data(config: TrainConfig, data: ImageSet, processes: int = 1) -> None:
    """The data can fill a batch on every process (checked before a run directory is created)."""
    n, need = data.images.shape[0], config.optim.batch_size * processes
    if n < need:
        raise UserInputError(f"the dataset has {n} images, fewer than one batch of {config.optim.batch_size}"
                             + (f" on each of {processes} processes" if processes > 1 else "") + "; lower --batch-size")


def check_train(config: TrainConfig, channels: int, resume_from: Path | None = None, source: str = "config") -> None:
    """What :func:`train` would refuse, checked before a run directory or a ledger row exists: the precision
    on this device, the architecture at this resolution, and for a resume (``resume_from``, a run
    directory) a usable checkpoint of this config's shapes (``source`` names the config in the error)."""
    resolve_precision(config.optim.mixed_precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    check_architecture(config.model, config.data.resolution)
    check_init_from(config.model, config.data.resolution, channels, config.optim.num_train_timesteps)
    if resume_from is not None:
        check_resume(resume_from, config, channels, source)


def train(config: TrainConfig, run_dir: Path, data: ImageSet, tracker: Tracker, **kwargs) -> TrainResult:
    """:func:`train_on_share` with this process's share of the cores (:class:`greendiff.parallel.CoreShare`:
    two runs on one machine must not each run a thread per core). Same arguments."""
    from greendiff.parallel import CoreShare

    with CoreShare() as cores:
        return train_on_share(config, run_dir, data, tracker, cores=cores, **kwargs)


def train_on_share(config: TrainConfig, run_dir: Path, data: ImageSet, tracker: Tracker, *,
                   resume: bool = False, on_log: Callable[[dict], None] | None = None,
                   stop_requested: Callable[[], bool] = lambda: False, objective: Callable | None = None,
                   on_eval: Callable[[dict], str | None] | None = None, carbon_aware=None,
                   cores=None) -> TrainResult:
    """Train ``config`` on ``data``, writing metrics, samples, checkpoints and the pipeline to ``run_dir``.

    Args:
        tracker: A started :class:`Tracker`; phases ``train``, ``sample``, ``checkpoint`` are windows.
        resume: Continue from the newest checkpoint in ``run_dir``.
        on_log: Called with each metrics record (for a progress bar).
        stop_requested: Polled every step; when true, checkpoint and return ``interrupted``.
        objective: The loss, called like :func:`diffusion_loss` (the default); distillation passes its own
            (``greendiff.compress.objective_for``), whose teacher runs inside the metered ``train`` window.
        on_eval: Called with every evaluation's record (``metrics.jsonl``'s ``eval`` events); a returned
            string stops the run with that reason, as a tuner's pruner does.
        carbon_aware: A :class:`greendiff.plan.CarbonAwareController`: asked before every step whether to
            run; a pause checkpoints, waits in a metered ``wait`` window and carries on. Its books are
            saved with each checkpoint.
        cores: A :class:`greendiff.parallel.CoreShare` rebalanced every step (``None``: threads left alone).
    """
    from diffusers.training_utils import EMAModel

    from greendiff.parallel import Dist

    optim, run = config.optim, config.run
    dist: Dist = getattr(tracker, "dist", Dist())
    main = dist.is_main
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    precision, precision_why = resolve_precision(optim.mixed_precision, device)
    accelerator = _accelerator(precision, use_cuda)
    torch.manual_seed(run.seed)  # weight initialisation
    channels, res = data.channels, config.data.resolution
    unet = build_unet(config.model, res, channels, optim.num_train_timesteps)
    params, macs = count_parameters(unet), count_macs(unet, res, channels)
    channels_last = optim.channels_last == "on" or (optim.channels_last == "auto" and device.type == "cuda")
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    lr_scale = dist.world_size if optim.scale_lr else 1
    optimizer = make_optimizer(unet.parameters(), dataclasses.replace(optim, lr=optim.lr * lr_scale))
    # diffusers' curves; "constant" warms up like the others; a budget may move the horizon (stop.fit_schedule)
    lr_scheduler = make_lr_scheduler(optimizer, optim.lr_schedule, optim.warmup_steps, run.max_steps)
    schedule = lr_scheduler.lr_lambdas[0]
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema = None
    if optim.ema:
        ema = EMAModel(accelerator.unwrap_model(unet).parameters(), decay=optim.ema_max_decay,
                       use_ema_warmup=optim.ema_warmup, inv_gamma=1.0, power=optim.ema_power,
                       foreach=True)  # one kernel per op over all tensors: 2.4x faster on CPU (tiny UNet)
        ema.to(device)
    noise_scheduler = make_noise_scheduler(optim)
    sampler = make_sampler(optim, noise_scheduler)
    check_data(config, data, dist.world_size)
    images = data.images
    n = images.shape[0]

    stop = config.stop
    extractor = real_features = None

    def evaluate(at_step: int, seeds: int = 1) -> dict:
        """Quality of the EMA weights with a fixed noise seed; with ``seeds`` > 1 also its spread (std)."""
        from greendiff.evaluate import quality, seed_spread

        results, scores = [], None
        share = -(-stop.eval_samples // dist.world_size)  # each process samples its share; rank 0 scores them all
        with tracker.window("eval"), ema_weights() as model:
            for k in range(seeds):
                with accelerator.autocast():
                    fake = sample_images(model, sampler, share if dist.distributed else stop.eval_samples,
                                         stop.eval_sample_steps or optim.sample_steps, (channels, res, res),
                                         torch.Generator().manual_seed(run.seed + 54_321 + k + 7_777 * dist.rank), device)
                if dist.distributed:
                    fake = torch.cat(dist.all_gather(fake.cpu()))[:stop.eval_samples]
                if main:
                    results.append(quality(fake, real_features, extractor).to_dict())  # KID subset: at most the samples
        if main:
            scores = results[0]
            if seeds > 1:
                scores["spread"] = seed_spread(results)
        return dist.broadcast(scores if main else None)

    def record(event: dict) -> None:
        metrics.write(json.dumps(event) + "\n")
        metrics.flush()

    rules = StoppingRules(stop.patience, stop.min_delta, stop.min_gain_per_kwh, stop.gain_window, stop.target,
                          stop.budget_kwh, stop.budget_kgco2e, stop.budget_warmup_steps,
                          max((d.uncertainty_frac for d in tracker.monitor.devices), default=0.0))
    stopper = StopCallback(rules, run.max_steps, stop.metric, stop.eval_every, stop.eval_every_kwh, stop.spread_seeds,
                           evaluate, record, save_best=lambda at_step: checkpoint(at_step, name="best"),
                           kg_per_kwh=tracker.pue.value * tracker.intensity_now_g_per_kwh() / 1000.0,
                           set_horizon=(lambda steps: setattr(schedule, "horizon_steps", steps)) if stop.fit_schedule else None,
                           on_eval=on_eval)
    guard = DivergenceGuard(run.max_bad_steps, run.max_steps)
    # the loop's own books travel in the checkpoints with the model's state, checked and restored with it
    objects = TrainingObjects(accelerator.unwrap_model(unet), optimizer, lr_scheduler, ema, accelerator.scaler,
                              parts={"stopping": stopper, "divergence": guard, "carbon_aware": carbon_aware})
    shapes = fingerprint(config, channels)
    step, prior_energy_j = 0, 0.0
    if resume:
        saved_state = load_latest(accelerator, objects, run_dir, shapes)
        step, prior_energy_j = saved_state["step"], float(saved_state["energy_j"])
    header = {"event": "start", "step": step, "params": params, "macs_per_image": macs, "precision": precision,
              "precision_reason": precision_why, "device": str(device), "dataset": data.source, "skipped_files": data.skipped,
              "processes": dist.world_size, "effective_batch_size": optim.batch_size * dist.world_size,
              "lr": optim.lr * lr_scale, "lr_scaling": (f"x{lr_scale} (optim.scale_lr, {dist.world_size} processes)"
                                                        if lr_scale > 1 else "none")}
    logger.info("UNet: %s parameters, %.3g GMACs per image; precision %s (%s) on %s", f"{params:,}", macs / 1e9,
                precision, precision_why, device)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    metrics = _open_metrics(run_dir / "metrics.jsonl") if main else open(os.devnull, "w")  # only rank 0 writes
    metrics.write(json.dumps(header) + "\n")
    if on_log and main:
        on_log(header)

    def energy_so_far_j() -> float:
        """Energy of the run so far: this process, or (a collective) the whole job."""
        return prior_energy_j + tracker.total_energy_j()

    @contextlib.contextmanager
    def ema_weights():
        """The model in eval mode with the EMA weights swapped in, restored afterwards."""
        model = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
        model.eval()
        try:
            yield model
        finally:
            model.train()
            if ema is not None:
                ema.restore(model.parameters())

    def write_samples(at_step: int) -> Path | None:
        if not main:
            return None
        with tracker.window("sample"):
            with ema_weights() as model, accelerator.autocast():
                grid = sample_images(model, sampler, run.num_samples, optim.sample_steps, (channels, res, res),
                                     torch.Generator().manual_seed(run.seed + 12_345), device)
            return save_grid(grid, run_dir / "samples" / f"step-{at_step}.png")

    def weights_problem(at_step: int) -> str | None:
        """Why the weights must not be saved (some value is not finite, on any process), or ``None``."""
        tensors = [*objects.model.parameters(), *(ema.shadow_params if ema is not None else ())]
        if dist.all_true(weights_finite(tensors)):
            return None
        return f"the weights are not finite after step {at_step} (an update too large for them)"

    def checkpoint(at_step: int, name: str | None = None) -> None:
        """Save a checkpoint, unless the weights are not finite: then the run has diverged."""
        if (problem := weights_problem(at_step)) is not None:
            raise Diverged(problem)
        with tracker.window("checkpoint"):
            books = {"energy_j": energy_so_far_j(), "fingerprint": shapes}
            save_checkpoint(accelerator, objects, run_dir, at_step, books, run.keep_checkpoints, name)
        tracker.sync()  # a ledger sample with every checkpoint: a killed run's ledger covers all the work it kept

    if (stop.eval_every or stop.eval_every_kwh or stop.eval_at_end) and main:
        from greendiff.evaluate import reference_features, resolve_extractor

        with tracker.window("eval"):
            extractor, _ = resolve_extractor(stop.eval_features)
            real_features = reference_features(images, extractor)

    if carbon_aware is not None:
        carbon_aware.begin(energy_so_far_j())
    stop_reason = ""

    def pause(until) -> None:
        """Checkpoint, then wait (metered) until the controller's time."""
        checkpoint(step)
        with tracker.window("wait"):
            began = carbon_aware.wait(until, stop_requested, tick=tracker.sample)
        carbon_aware.after_wait(energy_so_far_j(), began)
        record({"event": "pause", "step": step, "from": began.isoformat(), "until": until.isoformat()})

    loss_fn = objective or diffusion_loss
    status, last_loss = "completed", math.nan
    t_log, samples_since_log = time.perf_counter(), 0
    unet.train()
    try:
        while step < run.max_steps:
            if cores is not None:
                cores.rebalance()  # looks for other runs every few seconds
            if carbon_aware is not None and (until := carbon_aware.before_step(step)) is not None:
                pause(until)
            if stop_requested():
                status = "interrupted"
                break
            # each process takes its slice of the global batch; rank 0 of a job and a single process draw alike
            idx = batch_indices(step, n, optim.batch_size * dist.world_size, run.seed)[
                dist.rank * optim.batch_size:(dist.rank + 1) * optim.batch_size]
            x0 = (images[idx].float() / 127.5 - 1.0).to(device)
            if channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            with tracker.window("train"):
                with accelerator.autocast():
                    loss = loss_fn(unet, noise_scheduler, x0, step_generator(run.seed + 1_000_003 * dist.rank, step), optim)
                # the loss is finite on every process: all skip a bad step together
                updated = dist.all_true(bool(torch.isfinite(loss))) and apply_update(accelerator, unet, objects, loss,
                                                                                     optim.grad_clip)
            step += 1
            stop_reason = guard.after_step(step, updated) or ""
            if not updated:
                logger.warning("step %d: loss %s or its gradient is not finite; update skipped (%d in a row, %d in all)",
                               step - 1, loss.item(), guard.bad_in_row, guard.bad_steps)
            if stop_reason:
                status = "diverged"
                break
            if not updated:
                continue
            last_loss = loss.item()
            if carbon_aware is not None:
                carbon_aware.after_step(step, energy_so_far_j())
            samples_since_log += x0.shape[0]
            if step % run.log_every == 0 or step == run.max_steps:
                now = time.perf_counter()
                energy_j = energy_so_far_j()
                log = {"step": step, "loss": last_loss, "lr": lr_scheduler.get_last_lr()[0],
                       "samples_per_s": samples_since_log / max(now - t_log, 1e-9), "energy_kwh": energy_j / 3.6e6,
                       "co2e_g": energy_j / 3.6e6 * tracker.pue.value * tracker.intensity_now_g_per_kwh(),
                       "ema_decay": ema.cur_decay_value if ema is not None else None}
                record(log)
                t_log, samples_since_log = now, 0
                if on_log and main:
                    on_log(log)
                if dist.distributed:
                    tracker.sync()  # every rank's readings to rank 0's ledger
            stop_reason = stopper.after_step(step, lambda: energy_so_far_j() / 3.6e6) or ""
            if stop_reason:
                status = "stopped"
                break
            if step % run.sample_every == 0 and step < run.max_steps:
                write_samples(step)
            if step % run.checkpoint_every == 0 and step < run.max_steps:
                checkpoint(step)
    except KeyboardInterrupt:
        status = "interrupted"
    except Diverged as exc:  # a checkpoint found the weights non-finite
        status, stop_reason = "diverged", str(exc)
    if status != "diverged" and (problem := guard.at_end(step) or weights_problem(step)) is not None:
        status, stop_reason = "diverged", problem  # however the run ended, before anything is saved from it
    if status == "diverged":  # no checkpoint of the diverged weights, no pipeline: the earlier checkpoints stay
        record({"event": "diverged", "step": step, "reason": stop_reason})
        metrics.close()
        return TrainResult(status, step, last_loss, run_dir, prior_energy_j, stop_reason)
    if stop.eval_at_end and status in ("completed", "stopped"):
        stopper.final(step, lambda: energy_so_far_j() / 3.6e6)
    checkpoint(step)
    if status == "stopped":
        metrics.write(json.dumps({"event": "stopped", "step": step, "reason": stop_reason}) + "\n")
    if status in ("completed", "stopped"):
        write_samples(step)
        if dist.distributed:
            metrics.write(json.dumps(ranks_in_sync(accelerator.unwrap_model(unet), dist)) + "\n")
        if main:
            with tracker.window("checkpoint"):
                export_pipeline(accelerator.unwrap_model(unet), ema, noise_scheduler, run_dir / "pipeline")
    metrics.write(json.dumps({"event": status, "step": step}) + "\n")
    metrics.close()
    return TrainResult(status, step, last_loss, run_dir, prior_energy_j, stop_reason)


def apply_update(accelerator, unet, objects: TrainingObjects, loss: torch.Tensor, grad_clip: float) -> bool:
    """Backward, clipping, then the optimizer, schedule and EMA steps; ``False``, with nothing changed, when
    the gradient is not finite (a finite loss can have one, and its update would poison the weights). In a
    job the gradient is all-reduced, so every process decides alike; with fp16's gradient scaler, an inf
    gradient is the scaler's to skip (it lowers its scale), not a bad step."""
    accelerator.backward(loss)
    norm = accelerator.clip_grad_norm_(unet.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if objects.scaler is None and norm is not None and not bool(torch.isfinite(norm)):
        objects.optimizer.zero_grad(set_to_none=True)
        return False
    objects.optimizer.step()
    objects.lr_scheduler.step()
    objects.optimizer.zero_grad(set_to_none=True)
    if objects.ema is not None:
        objects.ema.step(objects.model.parameters())
    return True


def ranks_in_sync(model, dist) -> dict:
    """Every process's parameter checksum (data parallelism keeps the replicas identical)."""
    import hashlib

    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().float().cpu().numpy().tobytes())
    sums = dist.all_gather(digest.hexdigest())
    return {"event": "ranks_in_sync", "processes": dist.world_size, "checksums": sums, "equal": len(set(sums)) == 1}


def export_pipeline(unet, ema, noise_scheduler, path: Path) -> None:
    """``DDPMPipeline.save_pretrained`` with the EMA weights, loadable by plain diffusers. Written beside
    ``path`` and renamed into place, so a kill mid-export leaves the previous pipeline (of a resumed
    run), never half of one."""
    import copy

    from diffusers import DDPMPipeline

    model = copy.deepcopy(unet).to(memory_format=torch.contiguous_format).float().cpu()
    if ema is not None:
        ema.copy_to(model.parameters())
    tmp, old = path.with_name(f".tmp-{path.name}"), path.with_name(f".old-{path.name}")
    remove_tree(tmp)  # a planted link is unlinked, never written through
    DDPMPipeline(unet=model, scheduler=noise_scheduler).save_pretrained(str(tmp))
    if path.exists() or path.is_symlink():
        remove_tree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    remove_tree(old)


def _open_metrics(path: Path):
    """``metrics.jsonl`` for appending, never through a symbolic link (``O_NOFOLLOW``: one planted in a
    copied run directory must not have greendiff append to a file elsewhere)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(path)}: "
                             + ("it is a symbolic link" if path.is_symlink() else (exc.strerror or str(exc)))) from None
    return os.fdopen(fd, "a")
