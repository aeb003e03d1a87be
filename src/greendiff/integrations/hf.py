"""A Hugging Face ``transformers`` callback: energy and CO2e of any ``Trainer`` run, in the ledger and
beside the loss in its logs. Needs ``pip install 'greendiff[hf]'``.

Example::

    from greendiff.carbon import Location
    from greendiff.integrations.hf import GreendiffCallback

    trainer = Trainer(model=model, args=args, train_dataset=data)
    GreendiffCallback(name="bert-finetune", location=Location(country="FRA")).attach(trainer)
    trainer.train()   # logs now carry energy_kwh and emissions_kg; the ledger has the run
"""

from __future__ import annotations

from transformers import TrainerCallback

from greendiff.integrations._loop import LoopTracker
from greendiff.tracking import RunSummary, Tracker


class GreendiffCallback(TrainerCallback):
    """Measures a ``Trainer`` run: a ``train`` window per optimizer step, the whole run in the ledger.

    Energy so far (``energy_kwh``) and CO2e so far (``emissions_kg``) are added to every log record, so
    ``report_to`` integrations (TensorBoard, MLflow, W&B) record them beside the loss: use
    :meth:`attach`, which puts this callback before them. Only the main process measures (``is_world_process_zero``).

    Args:
        tracker: A :class:`greendiff.tracking.Tracker` (not started), or ``None`` to build one from
            ``tracker_kwargs`` (``name``, ``location``, ``pue``, ``ledger``, ...).
    """

    def __init__(self, tracker: Tracker | None = None, **tracker_kwargs) -> None:
        self.loop = LoopTracker(tracker, "hf-trainer", **tracker_kwargs)

    def attach(self, trainer) -> GreendiffCallback:
        """Add this callback to ``trainer`` ahead of its reporting callbacks."""
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.loop.begin()

    def on_step_begin(self, args, state, control, **kwargs):
        self.loop.window_begin("train")

    def on_step_end(self, args, state, control, **kwargs):
        self.loop.window_end("train")

    def on_log(self, args, state, control, logs=None, **kwargs):
        energy = self.loop.metrics()
        if logs is not None:
            logs.update(energy)
        if state.log_history and energy:
            state.log_history[-1].update(energy)

    def on_train_end(self, args, state, control, **kwargs):
        self.loop.end("completed")

    @property
    def summary(self) -> RunSummary | None:
        """The run's summary (energy per device and phase, CO2e, assumptions) once training ended."""
        return self.loop.tracker.summary
