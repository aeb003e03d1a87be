"""NVIDIA GPUs through NVML (``nvidia-ml-py``). The only module that imports ``pynvml``.

Volta and newer GPUs expose ``nvmlDeviceGetTotalEnergyConsumption``, a millijoule counter since
the driver was loaded: a window is two counter reads, with no thread. Older GPUs only report
instantaneous power; for those a poller thread integrates ``nvmlDeviceGetPowerUsage`` every
``poll_interval_s`` and the device is labelled ``polled-power``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from greendiff.energy._base import DeviceInfo, GpuMeter
from greendiff.errors import UserInputError
from greendiff.units import MJ_TO_J, MW_TO_W

try:  # the vendor library is optional at run time: no NVML, no GPU meter
    import pynvml
except ImportError:  # pragma: no cover - exercised by patching pynvml to None in tests
    pynvml = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


def _visible_nvml_indices(count: int, env_value: str | None) -> list[int | str]:
    """Map CUDA's visible-device list to NVML indices (ints) or UUID prefixes (strs).

    Follows CUDA's rules: unset means all devices; an empty string means none; the list stops at
    the first entry that is not a valid index or UUID.
    """
    if env_value is None:
        return list(range(count))
    visible: list[int | str] = []
    for entry in (e.strip() for e in env_value.split(",")):
        if entry.isdigit() and int(entry) < count:
            visible.append(int(entry))
        elif entry.startswith("GPU-"):
            visible.append(entry)
        else:  # MIG instances, "-1", typos: CUDA ignores this entry and all after it
            if entry:
                logger.warning("CUDA_VISIBLE_DEVICES entry %r not metered (not a GPU index or UUID)", entry)
            break
    return visible


def _read_counter_mj(handle: object) -> int | None:
    """The energy counter (Volta and newer), or ``None`` where the GPU has none."""
    try:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError:
        return None


class _PowerPoller:
    """Integrates instantaneous power (trapezoid rule) on a daemon thread."""

    def __init__(self, read_power_w, interval_s: float) -> None:
        self._read_power_w = read_power_w
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._energy_j = 0.0
        self._last_t = time.monotonic()
        self._last_w = read_power_w()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="greendiff-nvml-poller", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        power_w = self._read_power_w()
        now = time.monotonic()
        with self._lock:
            self._energy_j += 0.5 * (power_w + self._last_w) * (now - self._last_t)
            self._last_t, self._last_w = now, power_w

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._sample()
            except Exception:  # a failed read must not kill the thread; the gap is interpolated
                logger.debug("NVML power read failed", exc_info=True)

    def energy_j(self) -> float:
        with self._lock:  # include the time since the last poll at the last power seen
            return self._energy_j + self._last_w * (time.monotonic() - self._last_t)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self._interval_s + 1)


class NvidiaGpuMeter(GpuMeter):
    """Energy of the visible NVIDIA GPUs.

    Args:
        gpu_indices: Which GPUs to report, in CUDA's numbering after ``CUDA_VISIBLE_DEVICES``
            (so rank ``r`` of a data-parallel job passes ``[r]`` and ranks sum without double
            counting). ``None`` reports every visible GPU.
        poll_interval_s: Poll period for GPUs without an energy counter.

    Example:
        >>> meter = NvidiaGpuMeter.create()  # None when NVML is missing
        >>> if meter is not None:
        ...     before = meter.read_energy_j()
    """

    def __init__(self, handles: Sequence[object], names: Sequence[str], visible_indices: Sequence[int],
                 poll_interval_s: float = 0.1, use_counter: bool = True) -> None:
        self._handles = list(handles)
        self._devices: list[DeviceInfo] = []
        self._counter_start_mj: dict[str, int] = {}
        self._pollers: dict[str, _PowerPoller] = {}
        for handle, name, index in zip(self._handles, names, visible_indices):
            key = f"gpu:{index}"
            counter_mj = _read_counter_mj(handle) if use_counter else None
            if counter_mj is not None:
                self._counter_start_mj[key] = counter_mj
                method, note = "counter", "nvmlDeviceGetTotalEnergyConsumption (mJ counter)"
            else:
                def read_w(h=handle) -> float:
                    return pynvml.nvmlDeviceGetPowerUsage(h) * MW_TO_W
                self._pollers[key] = _PowerPoller(read_w, poll_interval_s)
                method = "polled-power"
                why = "no energy counter" if use_counter else "counter not used"
                note = f"nvmlDeviceGetPowerUsage integrated every {poll_interval_s * 1e3:.0f} ms ({why})"
            self._devices.append(DeviceInfo(key, "gpu", name, method, "device", note))
        self._handle_by_key = {d.key: h for d, h in zip(self._devices, self._handles)}

    @classmethod
    def create(cls, gpu_indices: Sequence[int] | None = None, poll_interval_s: float = 0.1,
               use_counter: bool = True) -> NvidiaGpuMeter | None:
        """Open NVML and meter the requested visible GPUs; ``None`` if NVML or GPUs are absent.

        ``use_counter=False`` forces power polling even where the counter exists (to compare them).
        """
        if pynvml is None:
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            logger.info("no NVIDIA GPU meter: %s", exc)
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            visible = _visible_nvml_indices(count, os.environ.get("CUDA_VISIBLE_DEVICES"))
            wanted = range(len(visible)) if gpu_indices is None else gpu_indices
            handles, names, indices = [], [], []
            for cuda_index in wanted:
                if not 0 <= cuda_index < len(visible):
                    pynvml.nvmlShutdown()
                    raise UserInputError(f"GPU index {cuda_index} is not visible: {len(visible)} GPU(s) visible "
                                         "through CUDA_VISIBLE_DEVICES; use an index below that")
                ref = visible[cuda_index]
                handle = (pynvml.nvmlDeviceGetHandleByIndex(ref) if isinstance(ref, int)
                          else pynvml.nvmlDeviceGetHandleByUUID(ref))
                name = pynvml.nvmlDeviceGetName(handle)
                handles.append(handle)
                names.append(name.decode() if isinstance(name, bytes) else str(name))
                indices.append(cuda_index)
        except pynvml.NVMLError as exc:
            logger.warning("no NVIDIA GPU meter: %s", exc)
            pynvml.nvmlShutdown()
            return None
        if not handles:
            pynvml.nvmlShutdown()
            return None
        return cls(handles, names, indices, poll_interval_s, use_counter)

    def devices(self) -> list[DeviceInfo]:
        return list(self._devices)

    def read_energy_j(self) -> dict[str, float]:
        energy_j = {}
        for device in self._devices:
            if device.key in self._pollers:
                energy_j[device.key] = self._pollers[device.key].energy_j()
            else:
                now_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle_by_key[device.key])
                energy_j[device.key] = (now_mj - self._counter_start_mj[device.key]) * MJ_TO_J
        return energy_j

    def close(self) -> None:
        if self._handles:
            for poller in self._pollers.values():
                poller.stop()
            self._pollers.clear()
            self._handles = []
            pynvml.nvmlShutdown()
