"""Measuring someone else's training loop: the hooks both framework callbacks call."""

from __future__ import annotations

from greendiff.tracking import RunSummary, Tracker
from greendiff.units import joules_to_kwh


class LoopTracker:
    """A :class:`Tracker` driven by a framework's events: a ``train`` window per step, an ``eval``
    window per validation, energy and CO2e so far on request.

    Args:
        tracker: A Tracker, not yet started; ``None`` builds one from ``tracker_kwargs``.
        kind: The ledger's ``kind`` for the run (``"hf-trainer"``, ``"lightning"``).
        tracker_kwargs: For :class:`Tracker` (``name``, ``location``, ``pue``, ``ledger``, ...).
    """

    def __init__(self, tracker: Tracker | None, kind: str, **tracker_kwargs) -> None:
        if tracker is None:
            tracker_kwargs.setdefault("name", kind)
            tracker = Tracker(kind=kind, **tracker_kwargs)
        self.tracker = tracker
        self._open: str | None = None
        self._baseline_j = 0.0
        self.prior_energy_j = 0.0  # earlier segments of a resumed run (from the callback's state)
        self.prior_emissions_kg = 0.0

    @property
    def started(self) -> bool:
        return self.tracker.run_id is not None

    def begin(self) -> None:
        if not self.started:
            self.tracker.start()
            self._baseline_j = self._read_j()  # the ledger counts from the start sample: so do the metrics

    def _read_j(self) -> float:
        return self.tracker.total_energy_j()

    def window_begin(self, name: str) -> None:
        if self.started and self._open is None:
            self.tracker.begin_window(name)
            self._open = name

    def window_end(self, name: str) -> None:
        if self._open == name:
            self.tracker.end_window(name)
            self._open = None

    def metrics(self) -> dict[str, float]:
        """``energy_kwh`` and ``emissions_kg`` so far (this process and earlier segments); the CO2e as the ledger
        accounts it (:meth:`Tracker.emissions_so_far_kg`: each hour at its own intensity, with the PUE)."""
        if not self.started or self.tracker.summary is not None:
            return {}
        energy_j = self.prior_energy_j + self._read_j() - self._baseline_j
        return {"energy_kwh": joules_to_kwh(energy_j), "emissions_kg": self.prior_emissions_kg + self.tracker.emissions_so_far_kg()}

    def end(self, status: str = "completed") -> RunSummary | None:
        if not self.started or self.tracker.summary is not None:
            return self.tracker.summary
        if self._open is not None:
            self.window_end(self._open)
        return self.tracker.stop(status, extra={"prior_energy_kwh": joules_to_kwh(self.prior_energy_j)} if self.prior_energy_j else None)

    def state_dict(self) -> dict:
        """Energy (J) and emissions (kgCO2e) so far, earlier segments included."""
        if not self.started:
            return {"energy_j": self.prior_energy_j, "emissions_kg": self.prior_emissions_kg}
        if self.tracker.summary is not None:  # saved after the end: the run's measured total
            return {"energy_j": self.prior_energy_j + self.tracker.summary.energy_j,
                    "emissions_kg": self.prior_emissions_kg + self.tracker.summary.emissions_kg}
        return {"energy_j": self.prior_energy_j + self._read_j() - self._baseline_j,
                "emissions_kg": self.prior_emissions_kg + self.tracker.emissions_so_far_kg()}

    def load_state_dict(self, state: dict) -> None:
        self.prior_energy_j = float(state.get("energy_j", 0.0))
        self.prior_emissions_kg = float(state.get("emissions_kg", 0.0))  # absent in states saved before it was kept
