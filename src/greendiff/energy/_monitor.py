"""EnergyMonitor: every meter of the machine behind one window API."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from greendiff.energy._base import DeviceInfo, Measurement, Meter
from greendiff.energy._cpu_power import read_cpuinfo, resolve_cpu_power
from greendiff.energy._estimate import CpuTimeMeter, RamEstimateMeter
from greendiff.energy._nvidia import NvidiaGpuMeter
from greendiff.energy._process_tree import ProcessTreeClock
from greendiff.energy._rapl import POWERCAP_ROOT, RaplMeter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorOptions:
    """What to meter. Resolved once and saved with the run.

    Args:
        gpu_indices: GPUs to report, in CUDA's visible numbering; ``None`` = all visible.
            A data-parallel rank passes its own GPU(s) only.
        measure_gpus: Meter NVIDIA GPUs when NVML is available.
        measure_node: Meter CPU and RAM. Node-level counters (RAPL) cover the whole socket, so in
            a multi-process job only one process per node (local rank 0) should set this.
        cpu_watts: Override of the CPU package's power at full load, watts (``--cpu-watts``).
        include_children: Count child processes in CPU-time estimates.
        process_root_pid: Root of the process tree whose CPU time is estimated (``None``: this process).
            In a multi-process job, local rank 0 passes the launcher's pid, so the tree holds every
            rank of the node, each counted once.
        powercap_root: Where RAPL lives (tests point it at a fake tree).
    """

    gpu_indices: tuple[int, ...] | None = None
    measure_gpus: bool = True
    measure_node: bool = True
    cpu_watts: float | None = None
    include_children: bool = True
    process_root_pid: int | None = None
    powercap_root: Path = POWERCAP_ROOT


@dataclass(frozen=True)
class Reading:
    """Cumulative joules per device at one instant."""

    unix_s: float
    monotonic_s: float
    energy_j: dict[str, float] = field(default_factory=dict)


class EnergyMonitor:
    """Reads every meter at window boundaries; windows nest and cost two reads each.

    Example:
        >>> monitor = EnergyMonitor.detect(MonitorOptions(measure_gpus=False))
        >>> with monitor.window("step") as result:
        ...     _ = sum(i * i for i in range(10_000))
        >>> result.measurement.total_energy_j >= 0
        True
        >>> monitor.close()
    """

    def __init__(self, meters: Sequence[Meter], notes: Sequence[str] = (),
                 clock: ProcessTreeClock | None = None) -> None:
        self._meters = list(meters)
        self.notes = list(notes)
        self._clock = clock
        self._open: dict[str, Reading] = {}
        self._cpu_start_s = clock.cpu_time_s() if clock is not None else 0.0

    @classmethod
    def detect(cls, options: MonitorOptions = MonitorOptions()) -> EnergyMonitor:
        """Build the best meters this machine allows, recording every choice in ``notes``."""
        meters: list[Meter] = []
        notes: list[str] = []
        clock = ProcessTreeClock(options.process_root_pid, include_children=options.include_children)
        if options.measure_gpus:
            gpu = NvidiaGpuMeter.create(options.gpu_indices)
            if gpu is None:
                notes.append("GPU: no NVIDIA GPU metered (NVML not available or no visible GPU)")
            else:
                meters.append(gpu)
                notes.extend(f"GPU: {d.key} {d.name} via {d.method}" for d in gpu.devices())
        if options.measure_node:
            cpu = read_cpuinfo()
            rapl, rapl_note = (None, "RAPL not used: CPU power given by the user") if options.cpu_watts is not None \
                else RaplMeter.create(options.powercap_root, cpu.model_name)
            if rapl is not None:
                meters.append(rapl)
                notes.append(f"CPU: {rapl_note}")
            else:
                power = resolve_cpu_power(cpu, options.cpu_watts)
                meters.append(CpuTimeMeter(clock, power, cpu.model_name))
                notes.append(f"CPU: {rapl_note}; estimated from process-tree CPU time ({power.method}: {power.source})")
            if rapl is None or not any(d.kind == "dram" for d in rapl.devices()):
                ram = RamEstimateMeter(clock)
                meters.append(ram)
                notes.append(f"RAM: no DRAM RAPL domain; {ram.devices()[0].note}")
        else:
            notes.append("CPU/RAM: not metered by this process (measured once per node elsewhere)")
        for note in notes:
            logger.info(note)
        return cls(meters, notes, clock)

    @property
    def devices(self) -> list[DeviceInfo]:
        return [d for m in self._meters for d in m.devices()]

    def read(self) -> Reading:
        energy_j: dict[str, float] = {}
        for meter in self._meters:
            energy_j.update(meter.read_energy_j())
        return Reading(time.time(), time.monotonic(), energy_j)

    def cpu_time_s(self) -> float:
        """CPU seconds of this process tree since the monitor was created."""
        return self._clock.cpu_time_s() - self._cpu_start_s if self._clock is not None else 0.0

    def begin_window(self, name: str) -> None:
        """Start a named window. Windows of different names may overlap or nest."""
        if name in self._open:
            raise ValueError(f"window {name!r} is already open")
        self._open[name] = self.read()

    def end_window(self, name: str) -> Measurement:
        """Close a window and return its energy and duration."""
        try:
            start = self._open.pop(name)
        except KeyError:
            raise ValueError(f"window {name!r} was not begun") from None
        return measurement_between(name, start, self.read())

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[WindowResult]:
        """Context manager around :meth:`begin_window` / :meth:`end_window`."""
        result = WindowResult()
        self.begin_window(name)
        try:
            yield result
        finally:
            result.measurement = self.end_window(name)

    def close(self) -> None:
        for meter in self._meters:
            meter.close()


@dataclass
class WindowResult:
    """Filled with the window's :class:`Measurement` when the ``with`` block exits."""

    measurement: Measurement | None = None


def measurement_between(name: str, start: Reading, end: Reading) -> Measurement:
    """Energy per device between two readings."""
    return Measurement(
        name=name,
        start_unix_s=start.unix_s,
        duration_s=end.monotonic_s - start.monotonic_s,
        energy_j={k: end.energy_j[k] - start.energy_j.get(k, 0.0) for k in end.energy_j},
    )
