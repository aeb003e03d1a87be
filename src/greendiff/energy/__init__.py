"""Energy measurement: one meter per device kind and vendor, windows over all of them.

Example:
    >>> from greendiff.energy import EnergyMonitor, MonitorOptions
    >>> monitor = EnergyMonitor.detect(MonitorOptions())
    >>> with monitor.window("train") as w:
    ...     pass  # a training step
    >>> w.measurement.total_energy_j >= 0
    True
"""

from __future__ import annotations

from greendiff.energy._base import (
    METHOD_UNCERTAINTY,
    CpuMeter,
    DeviceInfo,
    GpuMeter,
    Measurement,
    MemoryMeter,
    Meter,
)
from greendiff.energy._cpu_power import CpuInfo, CpuPower, read_cpuinfo, resolve_cpu_power
from greendiff.energy._estimate import RAM_WATTS_PER_GB, CpuTimeMeter, RamEstimateMeter
from greendiff.energy._monitor import EnergyMonitor, MonitorOptions, Reading, measurement_between
from greendiff.energy._nvidia import NvidiaGpuMeter, NvidiaPowerLimit, PowerLimitDenied
from greendiff.energy._process_tree import ProcessTreeClock
from greendiff.energy._rapl import RaplMeter

__all__ = [
    "METHOD_UNCERTAINTY",
    "RAM_WATTS_PER_GB",
    "CpuInfo",
    "CpuMeter",
    "GpuMeter",
    "MemoryMeter",
    "CpuPower",
    "CpuTimeMeter",
    "DeviceInfo",
    "EnergyMonitor",
    "Measurement",
    "Meter",
    "MonitorOptions",
    "NvidiaGpuMeter",
    "NvidiaPowerLimit",
    "PowerLimitDenied",
    "ProcessTreeClock",
    "RamEstimateMeter",
    "RaplMeter",
    "Reading",
    "measurement_between",
    "read_cpuinfo",
    "resolve_cpu_power",
]
