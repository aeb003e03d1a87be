"""Meter interface shared by every device kind.

A meter exposes one or more devices and returns, for each, the energy in joules it has used
since the meter was created. Readings are cumulative and monotonic, so a window is the
difference of two readings and windows can nest freely.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, Literal

DeviceKind = Literal["gpu", "cpu", "dram"]

#: Relative uncertainty (one side of the band) of each measurement method. These are documented
#: judgements, not measurements; docs/energy.md gives the reasoning and sources for each.
METHOD_UNCERTAINTY: dict[str, float] = {
    "counter": 0.05,  # NVML energy counter; board power sensor accuracy ~±5 %
    "polled-power": 0.10,  # sensor ±5 % plus integration error of 100 ms polling
    "rapl": 0.10,  # package RAPL tracks wall-plug package power within ~10 % in published studies
    "estimate:tdp-cputime": 0.40,  # TDP is a thermal design figure, not the power drawn
    "estimate:ccf-vcpu-cputime": 0.50,  # fleet-average per-vCPU coefficient, unknown host
    "estimate:user-watts-cputime": 0.25,  # user-supplied watts; we cannot check them
    "estimate:ram-per-gb": 0.50,  # constant W/GB, ignores DIMM type and activity
}


@dataclass(frozen=True)
class DeviceInfo:
    """One metered device.

    Args:
        key: Unique key within a monitor, e.g. ``"gpu:0"``, ``"cpu:package-0"``, ``"cpu:process"``.
        kind: ``"gpu"``, ``"cpu"`` or ``"dram"``.
        name: Human-readable device name (``"NVIDIA H200"``, ``"AMD EPYC 7763"``).
        method: How energy is obtained (a key of :data:`METHOD_UNCERTAINTY`).
        scope: What the figure covers: ``"device"`` (whole device, all processes on it),
            ``"package"`` (whole CPU socket) or ``"process-tree"`` (this process and its children).
        note: Where the numbers come from (the TDP table row, the coefficient, the sysfs path).
    """

    key: str
    kind: DeviceKind
    name: str
    method: str
    scope: str
    note: str = ""

    @property
    def uncertainty_frac(self) -> float:
        return METHOD_UNCERTAINTY[self.method]


class Meter(abc.ABC):
    """A source of cumulative energy readings for one device kind and vendor.

    Subclasses must make :meth:`read_energy_j` cheap (it runs at every window boundary) and
    monotonic per device. Vendors subclass one of the per-kind bases below.
    """

    #: The device kind this meter family reports.
    kind: ClassVar[DeviceKind]

    @abc.abstractmethod
    def devices(self) -> list[DeviceInfo]:
        """The devices this meter reports, in a stable order."""

    @abc.abstractmethod
    def read_energy_j(self) -> dict[str, float]:
        """Joules used by each device (by key) since this meter was created."""

    def close(self) -> None:
        """Release vendor handles and stop helper threads. Idempotent."""


class GpuMeter(Meter):
    """Accelerators (``gpu:<visible index>`` keys). Vendor: :mod:`greendiff.energy._nvidia`."""

    kind: ClassVar[DeviceKind] = "gpu"


class CpuMeter(Meter):
    """CPU packages (``cpu:`` keys); a package-level counter may also report its DRAM domains.

    Vendors: :mod:`greendiff.energy._rapl` (Linux powercap), :mod:`greendiff.energy._estimate`.
    """

    kind: ClassVar[DeviceKind] = "cpu"


class MemoryMeter(Meter):
    """Main memory (``dram:`` keys) where no package counter covers it."""

    kind: ClassVar[DeviceKind] = "dram"


@dataclass(frozen=True)
class Measurement:
    """Energy and time of one window.

    Attributes:
        name: Window name.
        start_unix_s: Wall-clock start (seconds since the epoch, UTC).
        duration_s: Elapsed monotonic time.
        energy_j: Joules per device key.
    """

    name: str
    start_unix_s: float
    duration_s: float
    energy_j: dict[str, float] = field(default_factory=dict)

    @property
    def total_energy_j(self) -> float:
        return sum(self.energy_j.values())
