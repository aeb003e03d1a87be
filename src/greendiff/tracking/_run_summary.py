"""The typed summary of one run: energy per device and phase, emissions, and every assumption used.

:func:`greendiff.tracking.summarize` makes it; ``Tracker.stop()`` returns it. Two forms:

- ``to_dict()`` is the JSON the ledger stores (``runs.summary_json``) and ``emissions.json`` holds, key for
  key and value for value as it always was; :meth:`RunSummary.from_dict` reads one of those back (a stored
  summary is checked by ``greendiff.ledger.parse_summary`` first, so its required fields are there with the
  right types).
- ``to_public_dict()`` is the summary every JSON output gives people and scripts (``measure --json``,
  ``runs show --json``, ``runs export -f json``; :func:`public_json`): one unit per quantity, energy in kWh
  and CO2e in kg, each name with its unit.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from greendiff.carbon import INTENSITY_KINDS
from greendiff.units import G_PER_KG, joules_to_kwh

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

    def to_public_dict(self) -> dict[str, Any]:
        """The device in one unit per quantity: ``energy_kwh``, ``emissions_kg``."""
        out = self.to_dict()
        del out["energy_j"], out["emissions_g"]
        return {**out, "emissions_kg": self.emissions_g / G_PER_KG}

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

    def to_public_dict(self) -> dict[str, Any]:
        """The phase in one unit per quantity: ``energy_kwh``, ``energy_by_device_kwh``, ``emissions_kg``."""
        out: dict[str, Any] = {"name": self.name, "count": self.count, "duration_s": self.duration_s,
                               "energy_kwh": joules_to_kwh(self.energy_j)}
        if self.energy_by_device_j is not None:
            out["energy_by_device_kwh"] = {k: joules_to_kwh(j) for k, j in self.energy_by_device_j.items()}
        out["emissions_kg"] = self.emissions_g / G_PER_KG
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
    """The grid intensity a run was priced at. ``kind``: ``"static"``, ``"trace"`` or ``"live"``
    (:class:`greendiff.carbon.Intensity`); ``resolution``: its step in words (``"yearly"``, ``"hourly"``,
    ``"10-second"``; None: not known). ``mean_g_per_kwh`` is energy-weighted over the run (gCO2e/kWh,
    without PUE); ``fallback`` names a fallback that priced (part of) it, else ``None``."""

    source: str
    kind: str
    year: int | None
    mean_g_per_kwh: float
    notes: tuple[str, ...]
    fallback: str | None
    resolution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored form; ``resolution`` only when known (an older writer's summary reads back as it was)."""
        out: dict[str, Any] = {"source": self.source, "kind": self.kind}
        if self.resolution is not None:
            out["resolution"] = self.resolution
        return {**out, "year": self.year, "mean_g_per_kwh": self.mean_g_per_kwh, "notes": list(self.notes),
                "fallback": self.fallback}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> IntensityUsed:
        """Read back; a summary stored before ``resolution`` was kept had a trace's resolution as its kind
        (``"hourly"``): it reads as kind ``"trace"`` with that resolution."""
        kind, resolution = raw["kind"], raw.get("resolution")
        if kind not in INTENSITY_KINDS:
            kind, resolution = "trace", resolution or kind
        return cls(raw["source"], kind, raw.get("year"), raw["mean_g_per_kwh"], tuple(raw["notes"]),
                   raw.get("fallback"), resolution)


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

    def to_public_dict(self) -> dict[str, Any]:
        """The summary as JSON for people and scripts, one unit per quantity: energy in kWh (``energy_kwh``,
        per device and phase, ``energy_by_device_kwh``), CO2e in kg (``emissions_kg``; the carbon-aware books'
        ``emissions_kg``, ``straight_through_kg``, ``saved_kg``), times in seconds or hours as named. The same
        fields as :meth:`to_dict` otherwise (``extra`` after them)."""
        out = self.to_dict()
        del out["energy_j"]
        out["devices"] = [d.to_public_dict() for d in self.devices]
        out["phases"] = [p.to_public_dict() for p in self.phases]
        if isinstance(self.carbon_aware, Mapping):
            out["carbon_aware"] = _carbon_aware_public(self.carbon_aware)
        return out

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
#: The carbon-aware books' masses, stored in grams: their names in kg.
_CARBON_AWARE_KG = {"emissions_g": "emissions_kg", "straight_through_g": "straight_through_kg", "saved_g": "saved_kg"}


def _carbon_aware_public(books: Mapping[str, Any]) -> dict[str, Any]:
    """The carbon-aware controller's books with CO2e in kg (stored in g)."""
    return {_CARBON_AWARE_KG.get(k, k): v / G_PER_KG if k in _CARBON_AWARE_KG and isinstance(v, (int, float)) else v
            for k, v in books.items()}


def public_json(summaries: RunSummary | Sequence[RunSummary]) -> str:
    """The JSON text of one summary (an object) or several (a list), as every JSON output writes it:
    :meth:`RunSummary.to_public_dict`, keys sorted, indented."""
    if isinstance(summaries, RunSummary):
        return json.dumps(summaries.to_public_dict(), indent=2, sort_keys=True)
    return json.dumps([s.to_public_dict() for s in summaries], indent=2, sort_keys=True)
