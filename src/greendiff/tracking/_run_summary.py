"""The typed summary of one run: energy per device and phase, emissions, and every assumption used.

:func:`greendiff.tracking.summarize` makes it; ``Tracker.stop()`` returns it. ``to_dict()`` is the JSON
the ledger stores (``runs.summary_json``) and ``emissions.json`` holds, key for key and value for value
as it always was; :meth:`RunSummary.from_dict` reads one of those back (a stored summary is checked by
``greendiff.ledger.parse_summary`` first, so its required fields are there with the right types).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from greendiff.units import joules_to_kwh

#: Keys whose absence in a stored summary is kept absent by ``to_dict()`` (older writers left them out).
_OMITTED_WHEN_NONE = ("command", "location", "host", "uncertainty")


@dataclasses.dataclass(frozen=True)
class DeviceEnergy:
    """One metered device of a run: what it is, how it was measured, and its energy and emissions."""

    key: str
    kind: str
    name: str
    method: str
    scope: str
    uncertainty_frac: float
    note: str | None
    energy_j: float
    energy_kwh: float
    emissions_g: float

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.note is None:
            del out["note"]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DeviceEnergy:
        return cls(**{f.name: raw.get(f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class PhaseEnergy:
    """All windows of one name (``"train"``, ``"eval"``, ...): how many, how long, joules and grams."""

    name: str
    count: int
    duration_s: float
    energy_j: float
    energy_by_device_j: Mapping[str, float] | None
    emissions_g: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "count": self.count, "duration_s": self.duration_s,
                               "energy_j": self.energy_j}
        if self.energy_by_device_j is not None:
            out["energy_by_device_j"] = dict(self.energy_by_device_j)
        out["emissions_g"] = self.emissions_g
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PhaseEnergy:
        return cls(**{f.name: raw.get(f.name) for f in dataclasses.fields(cls)})

    def is_phase(self, phase: str) -> bool:
        """Whether this window belongs to ``phase``: its name is ``phase`` or a sub-phase ``phase-...``
        (``eval-sampling-8``, the evaluation of an 8-step sampler, is evaluation)."""
        return self.name == phase or self.name.startswith(f"{phase}-")


@dataclasses.dataclass(frozen=True)
class IntensityUsed:
    """The grid intensity a run was priced at. ``mean_g_per_kwh`` is energy-weighted over the run (gCO2e/kWh,
    without PUE); ``fallback`` names a fallback that priced (part of) it, else ``None``."""

    source: str
    kind: str
    year: int | None
    mean_g_per_kwh: float
    notes: tuple[str, ...]
    fallback: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "year": self.year, "mean_g_per_kwh": self.mean_g_per_kwh,
                "notes": list(self.notes), "fallback": self.fallback}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IntensityUsed:
        return cls(raw["source"], raw["kind"], raw.get("year"), raw["mean_g_per_kwh"], tuple(raw["notes"]),
                   raw.get("fallback"))


@dataclasses.dataclass(frozen=True)
class PueUsed:
    """The power usage effectiveness a run was priced with (dimensionless, >= 1) and where it came from."""

    value: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """Energy, emissions and assumptions of one run.

    Units are in the names (``energy_j``, ``energy_kwh``, ``emissions_kg``, ``duration_s``); ``*_low`` /
    ``*_high`` are the band of the devices' measurement methods. ``started``/``ended`` are ISO-8601 UTC.
    ``extra`` holds what the caller stored with it (``stop_reason``, ``carbon_aware``,
    ``prior_energy_kwh``, a job's per-rank breakdown), merged after the fields by ``to_dict()``.

    Example:
        >>> s = RunSummary.from_dict({
        ...     "run_id": 1, "name": "r", "kind": "train", "status": "completed", "started": None, "ended": None,
        ...     "duration_s": 2.0, "cpu_time_s": 1.0, "energy_j": 7.2e6, "energy_kwh": 2.0, "energy_kwh_low": 1.8,
        ...     "energy_kwh_high": 2.2, "emissions_kg": 0.1, "emissions_kg_low": 0.09, "emissions_kg_high": 0.11,
        ...     "devices": [], "phases": [{"name": "train", "count": 1, "duration_s": 1.0, "energy_j": 3.6e6,
        ...     "emissions_g": 50.0}, {"name": "eval-sampling-8", "count": 1, "duration_s": 1.0, "energy_j": 3.6e6,
        ...     "emissions_g": 50.0}], "intensity": {"source": "t", "kind": "static", "mean_g_per_kwh": 50.0,
        ...     "notes": []}, "pue": {"value": 1.0, "source": "x"}, "methods": [], "notes": [],
        ...     "stop_reason": "max_steps"})
        >>> s.phase_energy_kwh("eval"), s.stop_reason
        (1.0, 'max_steps')
    """

    run_id: int
    name: str
    kind: str
    status: str
    command: str | None
    started: str | None
    ended: str | None
    duration_s: float
    cpu_time_s: float
    energy_j: float
    energy_kwh: float
    energy_kwh_low: float
    energy_kwh_high: float
    emissions_kg: float
    emissions_kg_low: float
    emissions_kg_high: float
    devices: tuple[DeviceEnergy, ...]
    phases: tuple[PhaseEnergy, ...]
    location: Mapping[str, Any] | None
    host: Mapping[str, Any] | None
    intensity: IntensityUsed
    pue: PueUsed
    methods: tuple[str, ...]
    notes: tuple[str, ...]
    uncertainty: str | None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & _FIELDS)
        if clash:
            raise ValueError(f"extra may not replace summary fields: {', '.join(clash)}")

    # -- reading -----------------------------------------------------------------------------------

    def phase(self, phase: str) -> PhaseEnergy | None:
        """All windows of ``phase`` and its sub-phases ``phase-...`` (see :meth:`PhaseEnergy.is_phase`) as one
        :class:`PhaseEnergy` (counts, seconds, joules and grams added up); ``None`` when the run opened none."""
        parts = [p for p in self.phases if p.is_phase(phase)]
        if len(parts) <= 1:
            return parts[0] if parts else None
        by_device: dict[str, float] = {}
        for p in parts:
            for key, energy_j in (p.energy_by_device_j or {}).items():
                by_device[key] = by_device.get(key, 0.0) + energy_j
        return PhaseEnergy(phase, sum(p.count for p in parts), sum(p.duration_s for p in parts),
                           sum(p.energy_j for p in parts), by_device, sum(p.emissions_g for p in parts))

    def phase_energy_j(self, phase: str) -> float:
        """Joules of ``phase``, its sub-phases included (0.0 when the run opened none)."""
        found = self.phase(phase)
        return found.energy_j if found is not None else 0.0

    def phase_energy_kwh(self, phase: str) -> float:
        """:meth:`phase_energy_j` in kWh; ``phase_energy_kwh("eval")`` is the run's evaluation energy
        (``eval`` windows of training and scoring, ``eval-sampling-N`` windows of distill-steps)."""
        return joules_to_kwh(self.phase_energy_j(phase))

    @property
    def stop_reason(self) -> str | None:
        """Why training stopped (from ``extra``), if the caller said."""
        return self.extra.get("stop_reason")

    @property
    def carbon_aware(self) -> Mapping[str, Any] | None:
        """The carbon-aware controller's books (from ``extra``), if the run had one."""
        return self.extra.get("carbon_aware")

    # -- the stored form ---------------------------------------------------------------------------

    def with_extra(self, extra: Mapping[str, Any] | None) -> RunSummary:
        """This summary with ``extra`` added after what it already holds (later keys win)."""
        return dataclasses.replace(self, extra={**self.extra, **(extra or {})}) if extra else self

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict the ledger stores and ``emissions.json`` holds (fields in order, then ``extra``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in _OMITTED_WHEN_NONE):
                continue
            if f.name in ("devices", "phases"):
                value = [item.to_dict() for item in value]
            elif f.name in ("intensity", "pue"):
                value = value.to_dict()
            elif f.name in ("methods", "notes"):
                value = list(value)
            elif f.name in ("location", "host"):
                value = dict(value)
            out[f.name] = value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunSummary:
        """A summary read back from its stored form (a ledger row, ``emissions.json``); keys that are not
        fields go to ``extra``. ``raw`` should have passed ``greendiff.ledger.parse_summary``."""
        values: dict[str, Any] = {name: raw.get(name) for name in _FIELDS}
        values.update(
            devices=tuple(DeviceEnergy.from_dict(d) for d in raw["devices"]),
            phases=tuple(PhaseEnergy.from_dict(p) for p in raw["phases"]),
            intensity=IntensityUsed.from_dict(raw["intensity"]),
            pue=PueUsed(raw["pue"]["value"], raw["pue"]["source"]),
            methods=tuple(raw["methods"]), notes=tuple(raw["notes"]),
        )
        return cls(**values, extra={k: v for k, v in raw.items() if k not in _FIELDS})


_FIELDS = frozenset(f.name for f in dataclasses.fields(RunSummary)) - {"extra"}
