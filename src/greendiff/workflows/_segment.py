"""One training segment in a run directory: ``train()`` with the loss the config asks for, its records sent
to the caller's :class:`Progress` and the experiment loggers, and every way it can end closed in the ledger."""

from __future__ import annotations

from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.workflows._progress import Interrupted, NullProgress, Progress, SegmentStart, TrainerProgress
from greendiff.workflows._rundir import write_emissions
from greendiff.workflows._signals import StopSignals


class ProgressCallback:
    """The progress bar and the experiment loggers as a trainer callback (main process only): the start event
    (with the config's preset and per-process batch size, as a :class:`SegmentStart`) and every
    :class:`~greendiff.train.LogEvent` to the :class:`Progress`; the start, log and evaluation records to the
    loggers."""

    def __init__(self, config, progress: Progress, loggers=()) -> None:
        self.config, self.progress, self.loggers = config, progress, list(loggers)

    def on_train_start(self, trainer, event) -> None:
        if trainer.is_main:
            self._to_loggers(event)
            self.progress.on_log(SegmentStart(event, self.config.model.preset, self.config.optim.batch_size))

    def on_log(self, trainer, event) -> None:
        if trainer.is_main:
            self._to_loggers(event)
            self.progress.on_log(event)

    def on_evaluation(self, trainer, event) -> None:
        self._to_loggers(event)

    def _to_loggers(self, event) -> None:
        for logger_ in self.loggers:
            logger_.log(event.to_dict())


def train_segment(config, data, run_dir: Path, tracker, progress: Progress | None = None, *, resume: bool = False,
                  label: str = "train", callbacks=(), loggers=(), stops: StopSignals | None = None, family=None):
    """Train ``config`` in ``run_dir`` under ``tracker`` (started); the :class:`greendiff.train.TrainResult`.

    On Ctrl-C or SIGTERM inside the loop (``stops``) it checkpoints and returns ``interrupted``; a Ctrl-C
    outside it stops the tracker as ``interrupted``, notes the resume command and raises :class:`Interrupted`.
    Out of memory is a one-line error, divergence too, and data that fails mid-run (a ``failed`` result: its
    last good step checkpointed) (both with ``emissions.json`` written); any other failure stops the tracker
    as ``failed``. Everything reaches ``train`` as a callback: ``stops`` (polled before every
    step), then the caller's ``callbacks`` (a :class:`greendiff.plan.CarbonAwareController`, a tuner's
    :class:`greendiff.tune.TrialPruner`, ...), then the progress and ``loggers`` (:class:`ProgressCallback`), and
    last what the loop does besides its steps, shown on ``progress`` (:class:`TrainerProgress`: evaluations' scores,
    carbon-aware pauses and waits; one per ``progress``: a caller's own is not doubled). ``family``: the model family
    (default: the config's; a fine-tune passes its own).
    """
    import torch

    from greendiff.compress import objective_for
    from greendiff.train import train

    progress = progress or NullProgress()
    stops = stops or StopSignals()
    # stop signals first, the presentation last: a callback's Stop is decided before the loggers see the event
    callbacks = [stops, *callbacks, ProgressCallback(config, progress, loggers)]
    if not any(isinstance(cb, TrainerProgress) and cb.progress is progress for cb in callbacks):
        callbacks.append(TrainerProgress(progress))  # each evaluation and pause shown once
    progress.on_start(label, config.run.max_steps)
    try:
        with stops:
            result = train(config, run_dir, data, tracker, resume=resume, objective=objective_for(config, data.channels),
                           callbacks=[cb for cb in callbacks if cb is not None], family=family)
    except KeyboardInterrupt:
        progress.on_end()
        tracker.stop("interrupted")
        progress.note(f"interrupted; resume with: greendiff {resume_command(config)} --resume {display_path(run_dir)}")
        raise Interrupted(stops.exit_code) from None
    except (MemoryError, torch.OutOfMemoryError) as exc:
        progress.on_end()
        tracker.stop("failed")
        where = "host" if isinstance(exc, MemoryError) else "GPU"
        raise UserInputError(f"out of {where} memory in {display_path(run_dir)}; checkpoints up to the last are kept: free memory and "
                             f"resume (greendiff {resume_command(config)} --resume {display_path(run_dir)}), or start again with a smaller --batch-size "
                             "or --preset") from None
    except BaseException:
        progress.on_end()
        tracker.stop("failed")
        raise
    progress.on_end()
    if result.status == "diverged":
        raise _diverged(config, result, tracker)
    if result.status == "failed":
        raise _data_failed(result, tracker, resume_command(config))
    return result


def resume_command(config) -> str:
    """The command that resumes a run of ``config``: ``finetune`` for a fine-tune, else ``train``."""
    return "finetune" if config.finetune.enabled else "train"


def _close_as(status: str, result, tracker) -> list[Path]:
    """Close the ledger run as ``status`` with the result's stop reason and write ``emissions.json`` (so
    ``report RUN_DIR`` finds it, as for a finished run); the run's checkpoint folders, oldest first."""
    from greendiff.train import checkpoint_dirs

    summary = tracker.stop(status, extra={"stop_reason": result.stop_reason})
    dist = getattr(tracker, "dist", None)
    if dist is None or dist.is_main:  # the run directory names its ledger run(s), as a finished one does
        write_emissions(result.run_dir, summary, result.prior_energy_j, tracker.ledger)
    return checkpoint_dirs(result.run_dir)


def _diverged(config, result, tracker) -> UserInputError:
    """Close a diverged run (``diverged``); the one-line error that ends the job. Its checkpoints are kept and
    no pipeline was exported (``train`` returns before that)."""
    kept = _close_as("diverged", result, tracker)
    return UserInputError(f"training diverged at step {result.step}: {result.stop_reason}; lower --lr (now "
                          f"{config.optim.lr:g}) or use --mixed-precision no; no pipeline exported, "
                          + (f"checkpoints up to {kept[-1].name} kept" if kept else "no checkpoint was written"))


def _data_failed(result, tracker, command: str = "train") -> UserInputError:
    """Close a run whose data failed mid-run (a streamed file deleted or corrupted, a loader worker killed:
    ``train`` checkpointed the last good step and returned ``failed``) as ``failed``; the one-line error that
    ends the job, saying how to continue."""
    kept = _close_as("failed", result, tracker)
    reason = " ".join(str(result.stop_reason or "the training data failed").split())  # one line
    run_dir = display_path(result.run_dir)
    if not kept:
        return UserInputError(f"{reason}; no checkpoint was written: fix the data and start again")
    return UserInputError(f"{reason}; checkpoint {kept[-1].name} kept: fix the data and resume with "
                          f"greendiff {command} --resume {run_dir}")
