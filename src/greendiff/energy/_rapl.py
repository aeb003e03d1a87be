"""CPU package and DRAM energy from Linux powercap RAPL (``/sys/class/powercap``).

Reads ``energy_uj`` of the package domains (``intel-rapl`` and AMD's ``amd-rapl`` controls,
both of which the kernel may expose) and of the DRAM domains when present. ``core``, ``uncore``
and ``psys`` are skipped because they overlap the package figure.

Two double counts are avoided:
- the same domain exposed by two interfaces (``intel-rapl:0`` and ``intel-rapl-mmio:0``, both
  named ``package-0``): the first by name is kept;
- multi-die CPUs (AMD Zen 1/2 Threadripper and EPYC) that expose one ``package-N-die-M`` domain
  per die, all mirroring the same socket counter (CodeCarbon issue #1274): domains whose raw
  counters are identical and non-zero when the meter opens are one meter.

Counters wrap at ``max_energy_range_uj``; a delta that goes backwards is corrected by one wrap.
Since more than one wrap between reads cannot be seen, a low-frequency guard thread reads the
counters every ``wrap_guard_interval_s`` (30 s by default; the fastest wrap seen is minutes).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from greendiff.energy._base import CpuMeter, DeviceInfo
from greendiff.units import UJ_TO_J

logger = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")
_CONTROL_PREFERENCE = ("intel-rapl:", "amd-rapl:", "intel-rapl-mmio:")


@dataclass
class _Domain:
    key: str
    path: Path
    max_range_uj: int
    start_uj: int
    last_uj: int
    wraps: int = 0

    def read_raw_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


def _zone_rank(zone: Path) -> tuple[int, str]:
    for rank, prefix in enumerate(_CONTROL_PREFERENCE):
        if zone.name.startswith(prefix):
            return rank, zone.name
    return len(_CONTROL_PREFERENCE), zone.name


def discover_domains(root: Path = POWERCAP_ROOT) -> tuple[list[tuple[str, Path]], str]:
    """Find the package and DRAM zones to meter.

    Returns:
        ``[(key, zone_path), ...]`` and a note on what was skipped or why nothing was found.
    """
    if not root.is_dir():
        return [], f"no powercap at {root}"
    zones = sorted((z for z in root.iterdir() if _zone_rank(z)[0] < len(_CONTROL_PREFERENCE)), key=_zone_rank)
    chosen: list[tuple[str, Path]] = []
    seen_keys: set[str] = set()
    skipped: list[str] = []
    for zone in zones:
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            skipped.append(f"{zone.name} (unreadable name)")
            continue
        is_top_level = zone.name.count(":") == 1
        if name.startswith("package") and is_top_level:
            key = f"cpu:{name}"
        elif name == "dram":
            parent = zone.name.rsplit(":", 1)[0] if not is_top_level else zone.name
            try:
                parent_name = (root / parent / "name").read_text().strip() if not is_top_level else "dram"
            except OSError:
                parent_name = parent
            key = f"dram:{parent_name}"
        else:
            continue  # core / uncore / psys overlap the package domain
        if key in seen_keys:
            skipped.append(f"{zone.name} (same domain as {key} on another interface)")
            continue
        seen_keys.add(key)
        chosen.append((key, zone))
    note = "; skipped " + ", ".join(skipped) if skipped else ""
    return chosen, note


class RaplMeter(CpuMeter):
    """Package and DRAM energy from RAPL. Whole-socket scope: includes every process on it.

    Example:
        >>> meter = RaplMeter.create()  # None when RAPL is absent or unreadable
    """

    def __init__(self, domains: list[_Domain], cpu_name: str, note: str,
                 wrap_guard_interval_s: float | None = 30.0) -> None:
        self._domains = domains
        self._lock = threading.Lock()
        self._devices = [
            DeviceInfo(d.key, "cpu" if d.key.startswith("cpu:") else "dram",
                       cpu_name if d.key.startswith("cpu:") else "DRAM", "rapl", "package",
                       f"powercap {d.path.name}{note}")
            for d in domains
        ]
        self._stop = threading.Event()
        self._guard: threading.Thread | None = None
        if wrap_guard_interval_s:
            self._guard = threading.Thread(target=self._guard_loop, args=(wrap_guard_interval_s,),
                                           name="greendiff-rapl-wrap-guard", daemon=True)
            self._guard.start()

    @classmethod
    def create(cls, root: Path = POWERCAP_ROOT, cpu_name: str = "CPU",
               wrap_guard_interval_s: float | None = 30.0) -> tuple[RaplMeter | None, str]:
        """Open the RAPL domains under ``root``.

        Returns:
            The meter (or ``None``) and a note saying what was used or why RAPL is unavailable.
        """
        found, note = discover_domains(root)
        if not any(key.startswith("cpu:") for key, _ in found):
            return None, note or f"no RAPL package domain under {root}"
        domains: list[_Domain] = []
        mirrored: list[str] = []
        raw_seen: dict[int, str] = {}
        for key, zone in found:
            try:
                raw_uj = int((zone / "energy_uj").read_text())
                max_range_uj = int((zone / "max_energy_range_uj").read_text())
            except PermissionError:
                return None, f"RAPL present but {zone / 'energy_uj'} is not readable (permission denied; root only since CVE-2020-8694)"
            except (OSError, ValueError) as exc:
                return None, f"RAPL present but {zone.name} could not be read: {exc}"
            if key.startswith("cpu:") and raw_uj != 0 and raw_uj in raw_seen:
                mirrored.append(f"{key} mirrors {raw_seen[raw_uj]}")
                continue
            raw_seen.setdefault(raw_uj, key)
            domains.append(_Domain(key, zone, max_range_uj, raw_uj, raw_uj))
        if mirrored:
            note += "; de-duplicated mirrored per-die counters: " + ", ".join(mirrored)
        return cls(domains, cpu_name, note, wrap_guard_interval_s), "RAPL" + note

    def devices(self) -> list[DeviceInfo]:
        return list(self._devices)

    def read_energy_j(self) -> dict[str, float]:
        energy_j: dict[str, float] = {}
        with self._lock:
            for d in self._domains:
                raw_uj = d.read_raw_uj()
                if raw_uj < d.last_uj:  # the counter wrapped since the last read
                    d.wraps += 1
                d.last_uj = raw_uj
                total_uj = raw_uj - d.start_uj + d.wraps * d.max_range_uj
                energy_j[d.key] = energy_j.get(d.key, 0.0) + total_uj * UJ_TO_J
        return energy_j

    def _guard_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.read_energy_j()
            except OSError:
                logger.debug("RAPL wrap-guard read failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._guard is not None:
            self._guard.join(timeout=1)
            self._guard = None
