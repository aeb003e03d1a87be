"""Energy measurement: one meter per device kind and vendor (RAPL, NVML, estimates from CPU time and RAM),
and an :class:`EnergyMonitor` that opens named windows over all of them.

A caller detects the monitor once (:class:`MonitorOptions` says which devices to measure) and measures
each phase in a window; a :class:`Measurement` holds the window's joules per device. The meters
themselves are chosen by :meth:`EnergyMonitor.detect`; a new one implements :class:`Meter`.

Example:
    >>> from greendiff.energy import EnergyMonitor, MonitorOptions
    >>> monitor = EnergyMonitor.detect(MonitorOptions())
    >>> with monitor.window("train") as w:
    ...     pass  # a training step
    >>> w.measurement.total_energy_j >= 0
    True
"""

from __future__ import annotations

from greendiff.energy._base import DeviceInfo, Measurement, Meter
from greendiff.energy._cpu_power import read_cpuinfo
from greendiff.energy._monitor import EnergyMonitor, MonitorOptions
from greendiff.energy._nvidia import NvidiaGpuMeter, NvidiaPowerLimit, PowerLimitDenied

__all__ = [
    # measuring
    "EnergyMonitor", "MonitorOptions", "Measurement", "DeviceInfo", "Meter",
    # NVIDIA GPUs: the meter and the power limit (``greendiff hardware``)
    "NvidiaGpuMeter", "NvidiaPowerLimit", "PowerLimitDenied",
    # the CPU model, for reports
    "read_cpuinfo",
]
