"""A shared contract every meter passes, plus the CPU-time and RAM estimates' own figures."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from greendiff.energy import EnergyMonitor, MonitorOptions
from greendiff.energy._base import METHOD_UNCERTAINTY
from greendiff.energy._cpu_power import CpuPower
from greendiff.energy._estimate import CpuTimeMeter, RamEstimateMeter
from greendiff.energy._process_tree import ProcessTreeClock
from greendiff.energy._rapl import RaplMeter
from greendiff.energy import _nvidia
from tests.energy.test_nvidia import FakeNVML
from tests.energy.test_rapl import zone

POWER = CpuPower(2.0, "estimate:user-watts-cputime", "test")


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def make_cpu_time_meter(tmp_path, monkeypatch):
    return CpuTimeMeter(ProcessTreeClock(), POWER, "test CPU")


def make_ram_meter(tmp_path, monkeypatch):
    return RamEstimateMeter(ProcessTreeClock(), rss_interval_s=0.0)


def make_rapl_meter(tmp_path, monkeypatch):
    zone(tmp_path, "intel-rapl:0", "package-0", 1000)
    zone(tmp_path, "intel-rapl:0:0", "dram", 1000)
    meter, _ = RaplMeter.create(tmp_path, "test CPU", wrap_guard_interval_s=None)
    return meter


def make_nvidia_meter(tmp_path, monkeypatch):
    monkeypatch.setattr(_nvidia, "pynvml", FakeNVML())
    return _nvidia.NvidiaGpuMeter.create(poll_interval_s=0.01)


@pytest.fixture(params=[make_cpu_time_meter, make_ram_meter, make_rapl_meter, make_nvidia_meter],
                ids=["cputime", "ram", "rapl", "nvidia"])
def meter(request, tmp_path, monkeypatch):
    m = request.param(tmp_path, monkeypatch)
    yield m
    m.close()


def test_meter_contract(meter):
    devices = meter.devices()
    assert devices, "a meter reports at least one device"
    assert len({d.key for d in devices}) == len(devices)
    for d in devices:
        # a meter reports its own kind; a CPU package counter may add its DRAM domains
        assert d.kind == meter.kind or (meter.kind == "cpu" and d.kind == "dram")
        assert d.method in METHOD_UNCERTAINTY and 0 < d.uncertainty_frac < 1
        assert d.key.startswith(d.kind + ":")
    first = meter.read_energy_j()
    assert set(first) == {d.key for d in devices}
    assert all(v >= 0 for v in first.values())
    busy(0.02)
    second = meter.read_energy_j()
    assert all(second[k] >= first[k] for k in first), "readings are cumulative and monotonic"
    meter.close()
    meter.close()  # idempotent


def test_cpu_time_meter_charges_cpu_seconds_times_watts():
    meter = CpuTimeMeter(ProcessTreeClock(), POWER, "test CPU")
    t0 = meter.cpu_time_s()
    busy(0.3)
    cpu_s = meter.cpu_time_s() - t0
    assert 0.28 <= cpu_s <= 0.5
    # the process keeps using CPU between two reads: the energy lies between 2 W x the CPU time read before and after
    before_s = meter.cpu_time_s()
    energy_j = meter.read_energy_j()["cpu:process-tree"]
    assert 2.0 * before_s * (1 - 1e-6) <= energy_j <= 2.0 * meter.cpu_time_s() * (1 + 1e-6)


def test_cpu_time_meter_ignores_sleep():
    meter = CpuTimeMeter(ProcessTreeClock(), POWER, "test CPU")
    time.sleep(0.3)
    assert meter.read_energy_j()["cpu:process-tree"] < 2.0 * 0.05


def test_process_tree_counts_live_and_finished_children():
    clock = ProcessTreeClock(rescan_interval_s=0.0)
    start = clock.cpu_time_s()
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nend=time.process_time()+0.5\nwhile time.process_time()<end: pass\n"
                              "print('burnt', flush=True)\ntime.sleep(1)"],
                             stdout=subprocess.PIPE, text=True)
    # wait for the child to say it has burnt its 0.5 s (a fixed sleep undercounts on a loaded machine,
    # where the burn is not over yet); it now sleeps: live, counted through psutil
    assert child.stdout.readline().strip() == "burnt"
    live = clock.cpu_time_s() - start
    child.wait()  # reaped: now in our children_* times, and not counted twice
    child.stdout.close()
    done = clock.cpu_time_s() - start
    assert 0.45 <= live <= 1.2
    # the child's exit and our own waiting add a little; counting the child twice would add its 0.5 s again
    assert live - 0.02 <= done <= live + 0.3


def test_process_tree_without_children_ignores_them():
    clock = ProcessTreeClock(include_children=False)
    start = clock.cpu_time_s()
    subprocess.run([sys.executable, "-c", "sum(i*i for i in range(3_000_000))"], check=True)
    assert clock.cpu_time_s() - start < 0.1


def test_ram_meter_integrates_rss_times_watts_per_gb():
    clock = ProcessTreeClock()
    meter = RamEstimateMeter(clock, watts_per_gb=1.0, rss_interval_s=10.0)
    rss_gb = clock.rss_bytes() / 1e9
    time.sleep(0.2)
    energy = meter.read_energy_j()["dram:process-tree"]
    assert energy == pytest.approx(rss_gb * 0.2, rel=0.3)


def test_monitor_windows_nest_and_sum():
    monitor = EnergyMonitor.detect(MonitorOptions(measure_gpus=False, cpu_watts=10.0))
    monitor.begin_window("outer")
    with monitor.window("inner") as inner:
        busy(0.1)
    busy(0.1)
    outer = monitor.end_window("outer")
    assert inner.measurement.duration_s < outer.duration_s
    assert 0 < inner.measurement.energy_j["cpu:process-tree"] < outer.energy_j["cpu:process-tree"]
    assert any("estimate:user-watts-cputime" in n for n in monitor.notes)
    assert any(n.startswith("CPU: RAPL not used: CPU power given by the user;") for n in monitor.notes)
    assert not any("--" in n for n in monitor.notes), monitor.notes
    with pytest.raises(ValueError, match="not begun"):
        monitor.end_window("never")
    monitor.begin_window("dup")
    with pytest.raises(ValueError, match="already open"):
        monitor.begin_window("dup")
    monitor.close()


def test_monitor_uses_rapl_when_present(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 1000)
    monitor = EnergyMonitor.detect(MonitorOptions(measure_gpus=False, powercap_root=tmp_path))
    assert [(d.key, d.method) for d in monitor.devices] == [("cpu:package-0", "rapl"), ("dram:process-tree", "estimate:ram-per-gb")]
    monitor.close()


def test_monitor_without_node_meters_reports_only_gpus(monkeypatch):
    monkeypatch.setattr(_nvidia, "pynvml", FakeNVML())
    monitor = EnergyMonitor.detect(MonitorOptions(gpu_indices=(0,), measure_node=False))
    assert [d.key for d in monitor.devices] == ["gpu:0"]
    monitor.close()


def test_descendant_walk_finds_grandchildren():
    from greendiff.energy._process_tree import descendant_pids

    script = ("import subprocess, sys, time\n"
              "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(5)'])\n"
              "print(g.pid, flush=True)\ntime.sleep(5)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    try:
        assert {child.pid, grandchild} <= set(descendant_pids(os.getpid()))
    finally:
        psutil.Process(grandchild).kill()
        child.kill()
        child.wait()


def test_process_tree_falls_back_to_psutil_without_proc_children(monkeypatch):
    from greendiff.energy import _process_tree

    monkeypatch.setattr(_process_tree, "descendant_pids", lambda pid: None)
    clock = ProcessTreeClock(rescan_interval_s=0.0)
    start = clock.cpu_time_s()
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nend=time.process_time()+0.3\nwhile time.process_time()<end: pass\ntime.sleep(2)"])
    time.sleep(1.0)
    try:
        assert clock.cpu_time_s() - start >= 0.25
    finally:
        child.kill()
        child.wait()
