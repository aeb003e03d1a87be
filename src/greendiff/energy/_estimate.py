"""Estimated CPU and RAM energy where no counter exists (most containers and CI machines).

CPU: joules = CPU seconds of the process tree x watts of one busy logical CPU
(:mod:`greendiff.energy._cpu_power`). Idle cores and other processes are not charged to us.

RAM: joules = integral of the tree's resident memory x 0.375 W/GB. The constant is
CodeCarbon's "3 W per 8 GB" methodology figure (CodeCarbon docs, "RAM" section, v2), itself from
DDR4 DIMM power estimates; resident memory is sampled at most every ``rss_interval_s``.
"""

from __future__ import annotations

import time

from greendiff.energy._base import CpuMeter, DeviceInfo, MemoryMeter
from greendiff.energy._cpu_power import CpuPower
from greendiff.energy._process_tree import ProcessTreeClock
from greendiff.units import BYTES_PER_GB

RAM_WATTS_PER_GB = 3.0 / 8.0
RAM_WATTS_SOURCE = "CodeCarbon methodology: 3 W per 8 GB of RAM (0.375 W/GB)"


class CpuTimeMeter(CpuMeter):
    """CPU energy of a process tree, estimated from CPU time.

    Example:
        >>> from greendiff.energy._cpu_power import read_cpuinfo, resolve_cpu_power
        >>> cpu = read_cpuinfo()
        >>> meter = CpuTimeMeter(ProcessTreeClock(), resolve_cpu_power(cpu), cpu.model_name)
        >>> meter.read_energy_j()["cpu:process-tree"] >= 0
        True
    """

    def __init__(self, clock: ProcessTreeClock, power: CpuPower, cpu_name: str) -> None:
        self._clock = clock
        self._power = power
        self._start_cpu_s = clock.cpu_time_s()
        self._device = DeviceInfo("cpu:process-tree", "cpu", cpu_name, power.method, "process-tree",
                                  f"{power.watts_per_logical_cpu:.3g} W per busy logical CPU: {power.source}")

    def devices(self) -> list[DeviceInfo]:
        return [self._device]

    def cpu_time_s(self) -> float:
        """CPU seconds used by the tree since the meter was created."""
        return self._clock.cpu_time_s() - self._start_cpu_s

    def read_energy_j(self) -> dict[str, float]:
        return {self._device.key: self.cpu_time_s() * self._power.watts_per_logical_cpu}


class RamEstimateMeter(MemoryMeter):
    """RAM energy of a process tree from its resident memory and a W/GB constant."""

    def __init__(self, clock: ProcessTreeClock, watts_per_gb: float = RAM_WATTS_PER_GB,
                 rss_interval_s: float = 1.0) -> None:
        self._clock = clock
        self._watts_per_gb = watts_per_gb
        self._rss_interval_s = rss_interval_s
        self._energy_j = 0.0
        self._last_t = time.monotonic()
        self._last_rss_t = self._last_t
        self._rss_gb = clock.rss_bytes() / BYTES_PER_GB
        self._device = DeviceInfo("dram:process-tree", "dram", "RAM", "estimate:ram-per-gb", "process-tree",
                                  f"{watts_per_gb:g} W/GB of resident memory: {RAM_WATTS_SOURCE}")
        self._key = self._device.key

    def devices(self) -> list[DeviceInfo]:
        return [self._device]

    def read_energy_j(self) -> dict[str, float]:
        # no lock: a monitor is read from one thread (the training loop), and this runs every window
        now = time.monotonic()
        self._energy_j += self._rss_gb * self._watts_per_gb * (now - self._last_t)
        self._last_t = now
        if now - self._last_rss_t >= self._rss_interval_s:
            self._rss_gb = self._clock.rss_bytes() / BYTES_PER_GB
            self._last_rss_t = now
        return {self._key: self._energy_j}
