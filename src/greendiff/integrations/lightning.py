"""A PyTorch Lightning callback: energy and CO2e of any ``Trainer.fit``, in the ledger and in the
Lightning loggers beside the loss. Needs ``pip install 'greendiff[lightning]'``.

Example::

    from greendiff.carbon import Location
    from greendiff.integrations.lightning import GreendiffCallback

    trainer = lightning.Trainer(max_epochs=3, callbacks=[GreendiffCallback(location=Location(cloud="gcp:europe-west1"))])
    trainer.fit(model, data)   # every logger gets energy_kwh and emissions_kg; the ledger has the run
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from greendiff.integrations._loop import LoopTracker
from greendiff.tracking import RunSummary, Tracker


class GreendiffCallback(Callback):
    """Measures ``fit``: a ``train`` window per batch, an ``eval`` window per validation, energy and
    CO2e logged with ``pl_module.log`` every ``log_every_n_steps``. Only global rank 0 measures.
    Its state (energy so far) is saved in Lightning checkpoints, so a resumed fit continues the total.

    Args:
        tracker: A :class:`greendiff.tracking.Tracker` (not started), or ``None`` to build one from
            ``tracker_kwargs`` (``name``, ``location``, ``pue``, ``ledger``, ...).
    """

    def __init__(self, tracker: Tracker | None = None, **tracker_kwargs) -> None:
        self.loop = LoopTracker(tracker, "lightning", **tracker_kwargs)

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.loop.begin()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.loop.window_begin("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loop.window_end("train")
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            for name, value in self.loop.metrics().items():
                pl_module.log(name, value, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_validation_start(self, trainer, pl_module):
        self.loop.window_begin("eval")

    def on_validation_end(self, trainer, pl_module):
        self.loop.window_end("eval")

    def on_fit_end(self, trainer, pl_module):
        self.loop.end("completed")

    def on_exception(self, trainer, pl_module, exception):
        self.loop.end("interrupted" if isinstance(exception, KeyboardInterrupt) else "failed")

    def state_dict(self) -> dict:
        return self.loop.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.loop.load_state_dict(state_dict)

    @property
    def summary(self) -> RunSummary | None:
        return self.loop.tracker.summary
