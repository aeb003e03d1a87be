"""RaplMeter against fake powercap trees built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from greendiff.energy._rapl import RaplMeter

MAX_RANGE_UJ = 262_143_328_850


def zone(root: Path, dirname: str, name: str, energy_uj: int, max_range_uj: int = MAX_RANGE_UJ) -> Path:
    z = root / dirname
    z.mkdir(parents=True)
    (z / "name").write_text(name + "\n")
    (z / "energy_uj").write_text(f"{energy_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return z


def set_uj(z: Path, value: int) -> None:
    (z / "energy_uj").write_text(f"{value}\n")


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "powercap"
    (r / "intel-rapl").mkdir(parents=True)  # the control-type directory has no energy file
    return r


def open_meter(root: Path) -> RaplMeter:
    meter, note = RaplMeter.create(root, "Intel Xeon", wrap_guard_interval_s=None)
    assert meter is not None, note
    return meter


def test_package_and_dram_counted_core_uncore_psys_skipped(root):
    pkg = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:0:0", "core", 500_000)
    dram = zone(root, "intel-rapl:0:1", "dram", 2_000_000)
    zone(root, "intel-rapl:1", "psys", 9_000_000)
    meter = open_meter(root)
    assert [(d.key, d.kind, d.method, d.scope) for d in meter.devices()] == [
        ("cpu:package-0", "cpu", "rapl", "package"), ("dram:package-0", "dram", "rapl", "package")]
    set_uj(pkg, 31_000_000)  # +30 J
    set_uj(dram, 7_000_000)  # +5 J
    assert meter.read_energy_j() == {"cpu:package-0": pytest.approx(30.0), "dram:package-0": pytest.approx(5.0)}


def test_counter_wrap_around_uses_max_energy_range(root):
    pkg = zone(root, "intel-rapl:0", "package-0", MAX_RANGE_UJ - 1_000_000)
    meter = open_meter(root)
    set_uj(pkg, MAX_RANGE_UJ - 500_000)
    assert meter.read_energy_j()["cpu:package-0"] == pytest.approx(0.5)
    set_uj(pkg, 2_000_000)  # wrapped: 0.5 J to the top, then 2 J
    assert meter.read_energy_j()["cpu:package-0"] == pytest.approx(3.0)
    set_uj(pkg, 4_000_000)
    assert meter.read_energy_j()["cpu:package-0"] == pytest.approx(5.0)


def test_mirrored_amd_die_domains_counted_once(root):
    """Zen 1/2 multi-die parts: every die mirrors the socket counter (CodeCarbon #1274)."""
    die0 = zone(root, "intel-rapl:0", "package-0-die-0", 68_000_000)
    die1 = zone(root, "intel-rapl:1", "package-0-die-1", 68_000_000)
    meter, note = RaplMeter.create(root, "AMD Ryzen Threadripper 1950X", wrap_guard_interval_s=None)
    assert [d.key for d in meter.devices()] == ["cpu:package-0-die-0"]
    assert "mirrors" in note
    set_uj(die0, 136_000_000)
    set_uj(die1, 136_000_000)
    assert meter.read_energy_j() == {"cpu:package-0-die-0": pytest.approx(68.0)}


def test_distinct_sockets_both_counted(root):
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:1", "package-1", 2_000_000)
    assert [d.key for d in open_meter(root).devices()] == ["cpu:package-0", "cpu:package-1"]


def test_amd_rapl_control_and_mmio_duplicate(root):
    zone(root, "amd-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl-mmio:0", "package-0", 1_000_123)  # same domain, other interface
    meter, note = RaplMeter.create(root, "AMD EPYC", wrap_guard_interval_s=None)
    assert [d.key for d in meter.devices()] == ["cpu:package-0"]
    assert "intel-rapl-mmio:0 (same domain" in note


def test_unreadable_energy_file_falls_back(root, monkeypatch):
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    real_read_text = Path.read_text

    def deny(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny)
    meter, note = RaplMeter.create(root, "Intel Xeon", wrap_guard_interval_s=None)
    assert meter is None
    assert "permission denied" in note


def test_garbage_energy_file_falls_back(root):
    z = zone(root, "intel-rapl:0", "package-0", 0)
    (z / "energy_uj").write_text("not a number")
    meter, note = RaplMeter.create(root, "Intel Xeon", wrap_guard_interval_s=None)
    assert meter is None and "could not be read" in note


def test_no_powercap_means_no_meter(tmp_path):
    meter, note = RaplMeter.create(tmp_path / "absent")
    assert meter is None and "no powercap" in note


def test_wrap_guard_thread_catches_wraps_between_windows(root):
    """A long window spanning a full wrap: only the guard's reads in between can see it."""
    import time

    pkg = zone(root, "intel-rapl:0", "package-0", MAX_RANGE_UJ - 1_000_000)
    meter, _ = RaplMeter.create(root, "Intel Xeon", wrap_guard_interval_s=0.02)
    set_uj(pkg, 1_000_000)  # wrapped once ...
    time.sleep(0.15)  # ... and the guard reads it
    set_uj(pkg, MAX_RANGE_UJ - 500_000)  # climbs past where it started: without the guard, 0.5 J
    energy_j = meter.read_energy_j()["cpu:package-0"]
    meter.close()
    assert energy_j == pytest.approx((MAX_RANGE_UJ + 500_000) * 1e-6)
