"""``greendiff train`` and ``greendiff sample``."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from greendiff.cli._options import (
    FLOAT, IMAGES, INT, PROCESSES, SAMPLER_STEPS, SEED, name_option, number_option,
    Cloud, Country, CpuWatts, Gpus, Grid, LedgerPath, Live, NoGpu, PueOpt, Zone, load_config_data, resolve_settings,
)
from greendiff.cli._render import fmt_energy, fmt_mass, plain, render_summary
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import check_name, display_path

Opt = typer.Option
logger = logging.getLogger(__name__)


def _parse_sets(sets: list[str]) -> dict[str, str]:
    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set expects KEY=VALUE (e.g. optim.snr_gamma=3), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _new_run_name(config, file: Path | None) -> str:
    """The name a new run's directory is made from: ``run.name`` (checked, one folder name), else
    ``recipe-preset``. ``file``: the config file ``run.name`` came from, named in the error. A saved
    config's name is never checked again (an older run's name stays usable)."""
    if not config.run.name:
        return f"{config.recipe}-{config.model.preset}"
    try:
        return check_name(config.run.name, "run.name")
    except UserInputError as exc:
        raise UserInputError(f"{display_path(file)}: {exc}" if file is not None else str(exc)) from None


def _new_run_dir(output_dir: str, name: str) -> Path:
    """``output_dir/<UTC stamp>-<name>``, made now; ``name`` is checked first (nothing is made for a bad one)."""
    check_name(name, "run name")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(output_dir) / f"{stamp}-{name}"
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise UserInputError(f"run directory {display_path(run_dir)} already exists; wait a second or set --name") from None
    except OSError as exc:
        raise UserInputError(f"cannot create run directory {display_path(run_dir)}: {exc.strerror}") from None
    return run_dir


def write_emissions(run_dir: Path, summary: dict, prior_energy_j: float, ledger=None) -> None:
    """``emissions.json``: this segment's summary, plus the ledger ids and energy of the whole run. Written
    atomically; ``ledger`` (default: the default one) rebuilds an unreadable earlier file's list of runs."""
    path = run_dir / "emissions.json"
    record = {**summary, "ledger_run_ids": [*_earlier_segments(path, summary["run_id"], ledger), summary["run_id"]],
              "run_total_energy_kwh": prior_energy_j / 3.6e6 + summary["energy_kwh"],
              "run_total_note": "earlier segments (resumed runs) counted from the checkpoint's energy; "
                                "their CO2e is in the ledger runs listed"}
    atomic_write_text(path, json.dumps(record, indent=2))


def _earlier_segments(path: Path, run_id: int, ledger) -> list[int]:
    """The ledger ids of the run's earlier segments: from ``emissions.json`` or, when that is unreadable
    (cut off, garbage, another shape), from the ledger's runs of this run directory, with a warning."""
    from greendiff.ledger import BadRecordError, Ledger
    from greendiff.train import read_emissions_json

    if not path.exists():
        return []
    try:
        return list(read_emissions_json(path).ledger_run_ids)
    except BadRecordError as exc:
        problem = str(exc)
    here = str(path.parent.resolve())
    ids = sorted(r.id for r in (ledger or Ledger()).list_runs() if r.assumptions.get("run_dir") == here and r.id < run_id)
    logger.warning("%s; its list of the run's ledger runs is rebuilt from the ledger (%s)", problem,
                   ", ".join(map(str, ids)) or "none earlier")
    return ids


def train_command(
    ctx: typer.Context,
    config_file: Annotated[Optional[Path], Opt("--config", help="TOML config file (CLI flags override it).")] = None,
    recipe: Annotated[Optional[str], Opt("--recipe", help="green (default) or baseline (diffusers' defaults).")] = None,
    preset: Annotated[Optional[str], Opt("--preset", help="Model preset: pico, nano, tiny, small, base.")] = None,
    dataset: Annotated[Optional[str], Opt("--dataset", help="mnist (bundled), digits, an image folder, or .npy/.npz.")] = None,
    skip_bad_images: Annotated[Optional[bool], Opt("--skip-bad-images/--no-skip-bad-images", help="Skip (and count) unusable files of an image folder instead of stopping.")] = None,
    resolution: Annotated[Optional[int], number_option("--resolution", bounds=INT, help="Training resolution in pixels.")] = None,
    batch_size: Annotated[Optional[int], number_option("--batch-size", bounds=INT, help="Images per step.")] = None,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Peak learning rate (green default: the preset's, e.g. nano 2e-3, tiny 1e-3).")] = None,
    max_steps: Annotated[Optional[int], number_option("--max-steps", bounds=INT, help="Optimizer steps to train.")] = None,
    seed: Annotated[Optional[int], number_option("--seed", bounds=INT, help="Seed of weights, data order and noise.")] = None,
    mixed_precision: Annotated[Optional[str], Opt("--mixed-precision", help="auto, no, bf16, fp16.")] = None,
    loss_weighting: Annotated[Optional[str], Opt("--loss-weighting", help="min-snr or uniform.")] = None,
    beta_schedule: Annotated[Optional[str], Opt("--beta-schedule", help="squaredcos_cap_v2 (cosine) or linear.")] = None,
    ema: Annotated[Optional[bool], Opt("--ema/--no-ema", help="Keep an EMA of the weights for sampling.")] = None,
    sampler: Annotated[Optional[str], Opt("--sampler", help="Preview sampler: ddim or ddpm.")] = None,
    sample_steps: Annotated[Optional[int], number_option("--sample-steps", bounds=INT, help="Sampler steps for previews.")] = None,
    warmup_steps: Annotated[Optional[int], number_option("--warmup-steps", bounds=INT, help="LR warm-up steps.")] = None,
    lr_schedule: Annotated[Optional[str], Opt("--lr-schedule", help="cosine (decays to 0 at --max-steps), linear, or constant (after warm-up; suits early stopping).")] = None,
    eval_every: Annotated[Optional[int], number_option("--eval-every", bounds=INT, help="Evaluate quality (FID/KID) every N steps.")] = None,
    eval_every_kwh: Annotated[Optional[float], number_option("--eval-every-kwh", bounds=FLOAT, help="Evaluate each time this much energy (kWh) is used.")] = None,
    eval_samples: Annotated[Optional[int], number_option("--eval-samples", bounds=INT, help="Generated images per evaluation.")] = None,
    eval_sample_steps: Annotated[Optional[int], number_option("--eval-sample-steps", bounds=INT, help="Sampler steps per evaluation image (default: --sample-steps).")] = None,
    patience: Annotated[Optional[int], number_option("--patience", bounds=INT, help="Stop after N evaluations without improvement.")] = None,
    min_delta: Annotated[Optional[float], number_option("--min-delta", bounds=FLOAT, help="Smallest improvement that counts.")] = None,
    min_gain_per_kwh: Annotated[Optional[float], number_option("--min-gain-per-kwh", bounds=FLOAT, help="Stop when the metric improves less than this per kWh.")] = None,
    target_fid: Annotated[Optional[float], number_option("--target-fid", bounds=FLOAT, help="Stop as soon as FID (or --set stop.metric) reaches this.")] = None,
    budget_kwh: Annotated[Optional[float], number_option("--budget-kwh", bounds=FLOAT, help="Stop before the run uses more energy than this.")] = None,
    budget_kgco2e: Annotated[Optional[float], number_option("--budget-kgco2e", bounds=FLOAT, help="Stop before the run emits more than this.")] = None,
    sets: Annotated[list[str], Opt("--set", help="Any config key, e.g. --set optim.snr_gamma=3 (repeatable).")] = [],
    output_dir: Annotated[Optional[str], Opt("--output-dir", help="Parent of the run directory (default runs).")] = None,
    name: Annotated[Optional[str], name_option("--name", help="Run name (default: recipe-preset).")] = None,
    resume: Annotated[Optional[Path], Opt("--resume", help="Run directory to continue from its latest checkpoint.")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="Print the resolved config and exit.")] = False,
    nproc: Annotated[int, number_option("--nproc", bounds=PROCESSES, help="Data-parallel processes on this machine, launched with torchrun (batch size is per process).")] = 1,
    log_to: Annotated[Optional[list[str]], Opt("--log-to", help="Also log metrics, energy and CO2e to: tensorboard, mlflow (repeatable).")] = None,
    mlflow_uri: Annotated[Optional[str], Opt("--mlflow-uri", help="MLflow tracking URI (default: file: the mlruns folder beside the run directory).")] = None,
    carbon_aware: Annotated[Optional[bool], Opt("--carbon-aware/--no-carbon-aware", help="Pause while the grid is dirty (needs --grid or --live uk, and --max-intensity and/or --deadline).")] = None,
    max_intensity: Annotated[Optional[float], number_option("--max-intensity", bounds=FLOAT, help="Carbon-aware: train only at or below this many gCO2e/kWh.")] = None,
    deadline: Annotated[Optional[str], Opt("--deadline", help="Carbon-aware: training must end by this ISO 8601 time (UTC unless a zone is given).")] = None,
    simulate_clock: Annotated[Optional[str], Opt("--simulate-clock", help="Carbon-aware on a simulated clock starting at this ISO time (with --simulated-step-s).", hidden=True)] = None,
    simulated_step_s: Annotated[Optional[float], number_option("--simulated-step-s", bounds=FLOAT, help="Simulated seconds per training step.", hidden=True)] = None,
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    live: Live = "none", zone: Zone = None, cpu_watts: CpuWatts = None, gpus: Gpus = None,
    no_gpu: NoGpu = False, ledger: LedgerPath = None,
) -> None:
    """Train a diffusion model with the green recipe (or the baseline), energy measured per phase."""
    from greendiff.train import check_data, check_train, resolve_config, to_toml

    overrides = {"recipe": recipe, "model.preset": preset, "data.dataset": dataset, "data.resolution": resolution,
                 "data.skip_bad_images": skip_bad_images,
                 "optim.batch_size": batch_size, "optim.lr": lr, "run.max_steps": max_steps, "run.seed": seed,
                 "optim.mixed_precision": mixed_precision, "optim.loss_weighting": loss_weighting,
                 "optim.beta_schedule": beta_schedule, "optim.ema": ema, "optim.sampler": sampler,
                 "optim.sample_steps": sample_steps, "optim.warmup_steps": warmup_steps,
                 "optim.lr_schedule": lr_schedule, "stop.eval_sample_steps": eval_sample_steps,
                 "run.output_dir": output_dir, "run.name": name, "stop.eval_every": eval_every, "stop.eval_every_kwh": eval_every_kwh,
                 "stop.eval_samples": eval_samples, "stop.patience": patience, "stop.min_delta": min_delta,
                 "stop.min_gain_per_kwh": min_gain_per_kwh, "stop.target": target_fid, "stop.budget_kwh": budget_kwh,
                 "stop.budget_kgco2e": budget_kgco2e, "carbon.enabled": carbon_aware, "carbon.max_intensity": max_intensity,
                 "carbon.deadline": deadline, "carbon.simulate_start": simulate_clock,
                 "carbon.simulated_step_s": simulated_step_s,
                 "run.log_to": ",".join(log_to) if log_to else None, "run.mlflow_uri": mlflow_uri, **_parse_sets(sets)}
    if resume is not None:
        if not (resume / "config.toml").is_file():
            raise UserInputError(f"--resume {display_path(resume)}: not a run directory (no config.toml)")
        changed = [k for k, v in overrides.items() if v is not None and k != "run.max_steps"]
        if changed or config_file is not None:
            raise UserInputError(f"--resume continues the saved config; only --max-steps may change (got {', '.join(changed) or '--config'})")
        config, run_name = resolve_config(resume / "config.toml", {"run.max_steps": max_steps}), resume.name
    else:
        config = resolve_config(config_file, overrides)
        run_name = _new_run_name(config, config_file if overrides.get("run.name") is None else None)
    if dry_run:
        typer.echo(to_toml(config), nl=False)
        return
    from greendiff.parallel import Dist

    dist = Dist.from_env()
    if nproc > 1 and dist.distributed:
        raise UserInputError("--nproc launches processes; this is already one process of a job (drop --nproc)")
    if (nproc > 1 or dist.distributed) and config.carbon.enabled:
        raise UserInputError("--carbon-aware does not support several processes yet; train with one process")
    settings = resolve_settings(country, cloud, grid, pue, live, zone, cpu_watts, gpus, no_gpu, ledger)
    data = load_config_data(config, config_file)
    check_data(config, data, max(nproc, dist.world_size))
    check_train(config, data.channels, resume, str(resume / "config.toml") if resume is not None else "config")
    if nproc > 1:
        raise typer.Exit(launch(nproc, ctx.obj["argv"] if ctx.obj else []))
    import torch

    dist.init(torch.cuda.is_available())
    console = Console(stderr=True, quiet=not dist.is_main)
    from greendiff.integrations import check_loggers

    check_loggers(config.run.log_to)
    controller = None
    if config.carbon.enabled:
        from greendiff.carbon import resolve_pue
        from greendiff.plan import controller_for

        controller = controller_for(config.carbon, settings.provider, resolve_pue(settings.pue, settings.location).value,
                                    config.run.max_steps)
    if data.skipped:
        console.print(f"skipped {data.skipped} unreadable image files", style="yellow")
    with _claimed_run_dir(config, resume, run_name, dist) as run_dir:
        _train_in(config, data, run_dir, settings, dist, console, controller, resume is not None)


@contextlib.contextmanager
def _claimed_run_dir(config, resume: Path | None, name: str, dist) -> Iterator[Path]:
    """The run's directory, held by the main process (:class:`greendiff.train.RunDirLock`) until the block
    ends: a resumed one is locked before anything in it is touched (its checkpoints tidied, its ledger row),
    a new one as soon as it is made; then ``config.toml`` is written. Every process of a job gets the
    directory, or the same one-line error (none is left waiting for the others)."""
    from greendiff.train import RunDirLock, to_toml

    with contextlib.ExitStack() as held:
        run_dir, problem = None, None
        if dist.is_main:  # one run directory for the job, made by rank 0 and told to the others
            try:
                run_dir = resume if resume is not None else _new_run_dir(config.run.output_dir, name)
                held.enter_context(RunDirLock(run_dir))
                atomic_write_text(run_dir / "config.toml", to_toml(config))
            except OSError as exc:
                problem = UserInputError(f"cannot write {display_path(run_dir / 'config.toml')}: {exc.strerror or exc}")
            except UserInputError as exc:
                problem = exc
        told, why = dist.broadcast((str(run_dir) if run_dir is not None else None, str(problem) if problem else None))
        if problem is not None:
            raise problem
        if why is not None:
            raise UserInputError(why)
        yield Path(told)


def _train_in(config, data, run_dir: Path, settings, dist, console: Console, controller, resume: bool) -> None:
    """Train in ``run_dir`` under one ledger run; write ``emissions.json`` and the summary (exit 130 unless finished)."""
    from greendiff.train import to_dict

    loggers = _loggers(config, run_dir, remove_on_error=None if resume else run_dir) if dist.is_main else []
    tracker = settings.tracker(run_dir.name + (" (resumed)" if resume else ""), "train", f"greendiff train ({display_path(run_dir)})",
                               config=to_dict(config), run_dir=run_dir, dist=dist).start()
    t0 = time.perf_counter()
    for logger_ in loggers:
        logger_.tag({"greendiff.ledger_run_id": tracker.run_id, "greendiff.location": tracker.location.describe(),
                     "greendiff.intensity_source": tracker.provider.describe(), "greendiff.pue": tracker.pue.value})
    with StopSignals() as stops:  # held until the ledger row and emissions.json are closed
        result = run_training(config, data, run_dir, tracker, console, resume=resume, carbon_aware=controller,
                              loggers=loggers, stops=stops)
        extra = {"stop_reason": result.stop_reason or ("max_steps reached" if result.status == "completed" else result.status)}
        if controller is not None:
            extra["carbon_aware"] = controller.summary()
        summary = tracker.stop("completed" if result.status in ("completed", "stopped") else "interrupted", extra=extra)
        for logger_ in loggers:
            logger_.log({"event": "final", "step": result.step, "energy_kwh": summary["energy_kwh"],
                         "emissions_kg": summary["emissions_kg"]})
            logger_.close(result.status)
        if dist.is_main:
            write_emissions(run_dir, summary, result.prior_energy_j, tracker.ledger)
    render_summary(summary, console)
    console.print(f"{result.status} at step {result.step} in {time.perf_counter() - t0:.1f} s · run directory {display_path(run_dir)}"
                  + (f" · {result.stop_reason}" if result.stop_reason else "")
                  + ("" if result.status in ("completed", "stopped") else f" · resume with: greendiff train --resume {display_path(run_dir)}"),
                  highlight=False, markup=False)
    if result.status not in ("completed", "stopped"):
        raise typer.Exit(stops.exit_code)  # 143 after SIGTERM, 130 after Ctrl-C


def launch(nproc: int, argv: list[str]) -> int:
    """Run this same ``greendiff train`` as ``nproc`` processes through torchrun; their exit code.
    The processes measure themselves (one ledger run for the job); this one does not."""
    import subprocess

    from greendiff.parallel import torchrun_command, without_nproc

    import os

    from greendiff.parallel import available_cores

    command = torchrun_command(nproc, without_nproc(argv[1:] if argv[:1] == ["train"] else argv))
    # torchrun would give each process 1 thread; give them the machine's cores, shared (the user's setting wins)
    env = {"OMP_NUM_THREADS": str(max(1, available_cores() // nproc)), **os.environ}
    Console(stderr=True).print(f"launching {nproc} processes: torchrun --standalone --nproc-per-node {nproc} "
                               "-m greendiff train ...", highlight=False)
    try:
        return subprocess.run(command, env=env).returncode
    except KeyboardInterrupt:  # torchrun passes Ctrl-C on to the processes, which checkpoint and stop
        return 130


def _loggers(config, run_dir: Path, remove_on_error: Path | None) -> list:
    """The experiment trackers of ``run.log_to``, with the config as parameters. If one cannot be opened,
    the new run directory (``remove_on_error``, nothing trained in it yet) is removed with the error."""
    if not config.run.log_to:
        return []
    import shutil

    from greendiff.integrations import make_loggers
    from greendiff.report import flatten
    from greendiff.train import to_dict

    try:
        return make_loggers(config.run.log_to, run_dir, config.run.mlflow_uri, flatten(to_dict(config)))
    except UserInputError:
        if remove_on_error is not None:
            shutil.rmtree(remove_on_error, ignore_errors=True)
        raise


class StopSignals:
    """SIGTERM handled like Ctrl-C while training (a scheduler, ``docker stop`` or systemd sends TERM): the
    first TERM sets the flag the loop polls (``stop_requested``), so it checkpoints and returns
    ``interrupted``; the first Ctrl-C still raises ``KeyboardInterrupt`` at once. Once one arrived, further
    TERM/INT are ignored until the checkpoint is written. The previous handlers come back on exit.
    ``exit_code``: 128 + the signal (143 for TERM, 130 for INT)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}
        self._depth = 0  # re-entrant: the CLI holds it until the run's books are closed, run_training again

    @property
    def exit_code(self) -> int:
        import signal

        return 128 + (self.signum or signal.SIGINT)

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        import signal

        if self.signum is not None:
            return  # a second signal while the first one's checkpoint is written
        self.signum = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(signum) is not signal.SIG_IGN:  # a background job's ignored INT stays ignored
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        self._depth -= 1
        if self._depth == 0:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = {}


def run_training(config, data, run_dir: Path, tracker, console: Console, *, resume: bool = False, label: str = "train",
                 on_eval=None, carbon_aware=None, loggers=(), stops: StopSignals | None = None):
    """``train()`` with a progress bar and the loss the config asks for (distillation builds its teacher's).
    On Ctrl-C or SIGTERM (``stops``, see :class:`StopSignals`) the loop checkpoints and returns ``interrupted``;
    a Ctrl-C outside the loop stops the tracker, prints the resume command and exits 130; on any other
    failure the tracker is stopped as failed. ``on_eval``: passed to ``train`` (a tuner's pruner).
    Returns the :class:`TrainResult`."""
    import torch

    from greendiff.compress import objective_for
    from greendiff.train import train

    objective = objective_for(config, data.channels)
    start_step = 0  # the step the run (or the resumed segment) started at
    progress = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=False)
    task = progress.add_task(label, total=config.run.max_steps, info="")

    def on_log(record: dict) -> None:
        nonlocal start_step
        for logger_ in loggers:
            logger_.log(record)
        if record.get("event") == "start":
            start_step = record["step"]
            progress.console.print(plain(
                f"UNet {config.model.preset}: {record['params']:,} parameters, {record['macs_per_image'] / 1e6:.1f} M MACs "
                f"per image · precision {record['precision']} ({record['precision_reason']}) on {record['device']} · "
                f"{record['dataset']}"), highlight=False)
            if record.get("processes", 1) > 1:
                progress.console.print(f"{record['processes']} processes: effective batch {record['effective_batch_size']} "
                                       f"({config.optim.batch_size} per process), lr {record['lr']:g} (scaling "
                                       f"{record['lr_scaling']})", highlight=False)
            return
        done = record["step"] - start_step
        frac_left = (config.run.max_steps - record["step"]) / max(done, 1)
        projected = record["energy_kwh"] * (1 + frac_left)
        progress.update(task, completed=record["step"], info=(
            f"loss {record['loss']:.4f} · {record['samples_per_s']:.0f} img/s · {fmt_energy(record['energy_kwh'])} · "
            f"{fmt_mass(record['co2e_g'] / 1e3)} CO2e · projected {fmt_energy(projected)}"))

    stops = stops or StopSignals()
    try:
        with progress, stops:
            result = train(config, run_dir, data, tracker, resume=resume, on_log=on_log, objective=objective,
                           on_eval=_logged(on_eval, loggers), carbon_aware=carbon_aware, stop_requested=stops.requested)
    except KeyboardInterrupt:
        tracker.stop("interrupted")
        console.print(f"interrupted; resume with: greendiff train --resume {display_path(run_dir)}", markup=False)
        raise typer.Exit(stops.exit_code) from None
    except (MemoryError, torch.OutOfMemoryError) as exc:
        tracker.stop("failed")
        where = "host" if isinstance(exc, MemoryError) else "GPU"
        raise UserInputError(f"out of {where} memory in {display_path(run_dir)}; checkpoints up to the last are kept: free memory and "
                             f"resume (greendiff train --resume {display_path(run_dir)}), or start again with a smaller --batch-size "
                             "or --preset") from None
    except BaseException:
        tracker.stop("failed")
        raise
    if result.status == "diverged":
        raise _diverged(config, result, tracker)
    return result


def _diverged(config, result, tracker) -> UserInputError:
    """Close a diverged run's ledger row as ``diverged`` and write its ``emissions.json`` (so ``report RUN_DIR``
    finds it); the one-line error that ends the command (exit 2). Its checkpoints are kept and no pipeline
    was exported (``train`` returns before that)."""
    from greendiff.train import checkpoint_dirs

    summary = tracker.stop("diverged", extra={"stop_reason": result.stop_reason})
    dist = getattr(tracker, "dist", None)
    if dist is None or dist.is_main:  # the run directory names its ledger run(s), as a finished one does
        write_emissions(result.run_dir, summary, result.prior_energy_j, tracker.ledger)
    kept = checkpoint_dirs(result.run_dir)
    return UserInputError(f"training diverged at step {result.step}: {result.stop_reason}; lower --lr (now "
                          f"{config.optim.lr:g}) or use --mixed-precision no; no pipeline exported, "
                          + (f"checkpoints up to {kept[-1].name} kept" if kept else "no checkpoint was written"))


def _logged(on_eval, loggers):
    """``on_eval`` that also sends each evaluation to the loggers (and keeps its answer)."""
    if not loggers:
        return on_eval

    def call(event: dict):
        for logger_ in loggers:
            logger_.log(event)
        return on_eval(event) if on_eval else None
    return call


def sample_command(
    run: Annotated[Path, Opt("--run", help="Run directory (with pipeline/ and config.toml).")],
    n: Annotated[int, number_option("--n", bounds=IMAGES, help="Number of images.")] = 64,
    steps: Annotated[Optional[int], number_option("--steps", bounds=SAMPLER_STEPS, help="Sampler steps (default: the run's).")] = None,
    out: Annotated[Path, Opt("--out", help="Output .png grid or .npz (uint8 images).")] = Path("samples.png"),
    seed: Annotated[int, number_option("--seed", bounds=SEED, help="Noise seed.")] = 0,
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    live: Live = "none", zone: Zone = None, cpu_watts: CpuWatts = None, gpus: Gpus = None,
    no_gpu: NoGpu = False, ledger: LedgerPath = None,
) -> None:
    """Sample images from a trained run's EMA weights; energy per image measured and reported."""
    import numpy as np
    import torch

    from greendiff.train import load_run_model, sample_images, save_grid, to_uint8

    if out.suffix.lower() not in (".png", ".npz"):
        raise UserInputError(f"--out must end in .png or .npz, got {display_path(out)}")
    config, unet, sampler = load_run_model(run)
    settings = resolve_settings(country, cloud, grid, pue, live, zone, cpu_watts, gpus, no_gpu, ledger)
    n_steps = steps or config.optim.sample_steps
    console = Console(stderr=True)
    with settings.tracker(f"sample {run.name}", "sample", f"greendiff sample --run {display_path(run)} --n {n}") as tracker:
        with tracker.window("sample"):
            images = sample_images(unet, sampler, n, n_steps, (unet.config.in_channels, unet.config.sample_size,
                                   unet.config.sample_size), torch.Generator().manual_seed(seed))
    try:
        if out.suffix.lower() == ".npz":
            out.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(out, images=to_uint8(images))
        else:
            save_grid(images, out)
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(out)}: {exc.strerror}") from None
    summary = tracker.summary
    render_summary(summary, console)
    console.print(f"{n} images, {n_steps} {config.optim.sampler} steps → {display_path(out)} · "
                  f"{fmt_energy(summary['energy_kwh'] / n)} and {fmt_mass(summary['emissions_kg'] / n)} CO2e per image",
                  highlight=False, markup=False)
