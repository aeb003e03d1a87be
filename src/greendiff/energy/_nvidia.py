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


def _init_nvml() -> bool:
    """Initialise NVML; ``False`` (logged) where the library, the driver or a GPU is missing."""
    if pynvml is None:
        return False
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        logger.info("no NVML: %s", exc)
        return False
    return True


def _handle_and_name(ref: int | str) -> tuple[object, str]:
    """NVML handle and name of a visible GPU given by NVML index or UUID prefix."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(ref) if isinstance(ref, int) else pynvml.nvmlDeviceGetHandleByUUID(ref)
    name = pynvml.nvmlDeviceGetName(handle)
    return handle, name.decode() if isinstance(name, bytes) else str(name)


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
        if not _init_nvml():
            return None
        try:
            visible = _visible_nvml_indices(pynvml.nvmlDeviceGetCount(), os.environ.get("CUDA_VISIBLE_DEVICES"))
            wanted = range(len(visible)) if gpu_indices is None else gpu_indices
            handles, names, indices = [], [], []
            for cuda_index in wanted:
                if not 0 <= cuda_index < len(visible):
                    pynvml.nvmlShutdown()
                    raise UserInputError(f"GPU index {cuda_index} is not visible: {len(visible)} GPU(s) visible "
                                         "through CUDA_VISIBLE_DEVICES; use an index below that")
                handle, name = _handle_and_name(visible[cuda_index])
                handles.append(handle)
                names.append(name)
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


class PowerLimitDenied(RuntimeError):
    """The power limit cannot be set here (no permission, or the GPU does not support it)."""


class NvidiaPowerLimit:
    """One GPU's power limit through NVML, for power-limit sweeps (as Zeus' ``GlobalPowerLimitOptimizer``).

    Setting a limit needs root (or ``nvidia-smi -pm 1`` and admin rights); where it is refused,
    :meth:`set_w` raises :class:`PowerLimitDenied` and the GPU keeps its limit. :meth:`close`
    restores the limit found at open.

    Args:
        cuda_index: The GPU, in CUDA's numbering after ``CUDA_VISIBLE_DEVICES``.
    """

    def __init__(self, handle: object, name: str, cuda_index: int) -> None:
        self._handle, self.name, self.cuda_index = handle, name, cuda_index
        self.original_w = self.current_w()
        self._changed = False

    @classmethod
    def open(cls, cuda_index: int) -> NvidiaPowerLimit | None:
        """``None`` where NVML or the GPU is missing."""
        if not _init_nvml():
            return None
        try:
            visible = _visible_nvml_indices(pynvml.nvmlDeviceGetCount(), os.environ.get("CUDA_VISIBLE_DEVICES"))
            if not 0 <= cuda_index < len(visible):
                pynvml.nvmlShutdown()
                return None
            return cls(*_handle_and_name(visible[cuda_index]), cuda_index)
        except pynvml.NVMLError as exc:
            logger.warning("GPU %d: no power-limit control: %s", cuda_index, exc)
            pynvml.nvmlShutdown()
            return None

    def constraints_w(self) -> tuple[float, float]:
        """The lowest and highest limit the GPU accepts, in W."""
        low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(self._handle)
        return low * MW_TO_W, high * MW_TO_W

    def default_w(self) -> float:
        return pynvml.nvmlDeviceGetPowerManagementDefaultLimit(self._handle) * MW_TO_W

    def current_w(self) -> float:
        return pynvml.nvmlDeviceGetPowerManagementLimit(self._handle) * MW_TO_W

    def set_w(self, limit_w: float) -> None:
        try:
            pynvml.nvmlDeviceSetPowerManagementLimit(self._handle, int(round(limit_w / MW_TO_W)))
        except pynvml.NVMLError as exc:
            raise PowerLimitDenied(f"GPU {self.cuda_index} ({self.name}): cannot set the power limit to "
                                   f"{limit_w:.0f} W: {exc}") from None
        self._changed = True

    def energy_j(self) -> float:
        """The GPU's energy counter (J since the driver loaded)."""
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) * MJ_TO_J

    def close(self) -> None:
        """Restore the original limit (if this object changed it) and release NVML."""
        if self._handle is None:
            return
        try:
            if self._changed:
                pynvml.nvmlDeviceSetPowerManagementLimit(self._handle, int(round(self.original_w / MW_TO_W)))
        except pynvml.NVMLError as exc:
            logger.warning("GPU %d: could not restore the power limit %.0f W: %s", self.cuda_index, self.original_w, exc)
        finally:
            self._handle = None
            pynvml.nvmlShutdown()
