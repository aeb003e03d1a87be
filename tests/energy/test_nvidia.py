"""NvidiaGpuMeter against a fake NVML patched where it is imported."""

from __future__ import annotations

import time

import pytest

from greendiff.energy import _nvidia
from greendiff.energy._nvidia import NvidiaGpuMeter, _visible_nvml_indices
from greendiff.errors import UserInputError


class FakeNVMLError(Exception):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


class FakeNVML:
    """Two GPUs: index 0 has an energy counter (Volta+), index 1 only reports power."""

    NVMLError = FakeNVMLError

    def __init__(self, count: int = 2, fail_init: bool = False) -> None:
        self.count, self.fail_init = count, fail_init
        self.counter_mj = {0: 1_000_000, 1: None}
        self.power_mw = {0: 300_000, 1: 150_000}
        self.uuids = {f"GPU-aaaa{i}": i for i in range(count)}
        self.initialised = 0

    def nvmlInit(self):
        if self.fail_init:
            raise FakeNVMLError("NVML Shared Library Not Found")
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("h", i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for full, i in self.uuids.items():
            if full.startswith(uuid):
                return ("h", i)
        raise FakeNVMLError("Not Found")

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H200" if h[1] == 0 else "Tesla P100"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        value = self.counter_mj.get(h[1])
        if value is None:
            raise FakeNotSupported("Not Supported")
        return value

    def nvmlDeviceGetPowerUsage(self, h):
        return self.power_mw[h[1]]


@pytest.fixture
def fake_nvml(monkeypatch):
    fake = FakeNVML()
    monkeypatch.setattr(_nvidia, "pynvml", fake)
    return fake


def test_counter_gpu_reports_counter_delta_in_joules(fake_nvml):
    meter = NvidiaGpuMeter.create([0])
    assert [(d.key, d.name, d.method) for d in meter.devices()] == [("gpu:0", "NVIDIA H200", "counter")]
    fake_nvml.counter_mj[0] += 12_345  # 12.345 J
    assert meter.read_energy_j() == {"gpu:0": pytest.approx(12.345)}
    meter.close()
    assert fake_nvml.initialised == 0


def test_gpu_without_counter_integrates_polled_power(fake_nvml):
    meter = NvidiaGpuMeter.create([1], poll_interval_s=0.01)
    (device,) = meter.devices()
    assert device.method == "polled-power" and "nvmlDeviceGetPowerUsage" in device.note
    t0 = time.monotonic()
    start = meter.read_energy_j()["gpu:1"]
    time.sleep(0.3)
    elapsed = time.monotonic() - t0
    energy = meter.read_energy_j()["gpu:1"] - start
    meter.close()
    assert energy == pytest.approx(150.0 * elapsed, rel=0.1)  # 150 W constant


def test_missing_library_means_no_meter_and_no_error(monkeypatch):
    monkeypatch.setattr(_nvidia, "pynvml", None)
    assert NvidiaGpuMeter.create() is None


def test_nvml_init_failure_means_no_meter(monkeypatch):
    monkeypatch.setattr(_nvidia, "pynvml", FakeNVML(fail_init=True))
    assert NvidiaGpuMeter.create() is None


def test_zero_gpus_means_no_meter(monkeypatch):
    fake = FakeNVML(count=0)
    monkeypatch.setattr(_nvidia, "pynvml", fake)
    assert NvidiaGpuMeter.create() is None
    assert fake.initialised == 0


@pytest.mark.parametrize(("env", "expected"), [
    (None, [0, 1, 2, 3]),
    ("", []),
    ("2,0", [2, 0]),
    ("1,7,0", [1]),  # CUDA stops at the first invalid entry
    ("GPU-aaaa1", ["GPU-aaaa1"]),
    ("MIG-xyz", []),
])
def test_cuda_visible_devices_mapping(env, expected):
    assert _visible_nvml_indices(4, env) == expected


def test_cuda_visible_devices_renumbers_gpus(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter = NvidiaGpuMeter.create(poll_interval_s=0.01)
    (device,) = meter.devices()
    # visible index 0 is physical GPU 1: the power-only Tesla P100
    assert (device.key, device.name, device.method) == ("gpu:0", "Tesla P100", "polled-power")
    meter.close()


def test_cuda_visible_devices_by_uuid(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa0")
    meter = NvidiaGpuMeter.create()
    assert [d.name for d in meter.devices()] == ["NVIDIA H200"]
    meter.close()


def test_rank_reports_only_its_own_gpu(fake_nvml):
    meter = NvidiaGpuMeter.create([1], poll_interval_s=0.01)
    assert [d.key for d in meter.devices()] == ["gpu:1"]
    meter.close()


def test_invisible_index_is_a_user_error(fake_nvml):
    with pytest.raises(UserInputError, match="GPU index 5 is not visible"):
        NvidiaGpuMeter.create([5])
    assert fake_nvml.initialised == 0


def test_polling_can_be_forced_where_a_counter_exists(fake_nvml):
    meter = NvidiaGpuMeter.create([0], poll_interval_s=0.01, use_counter=False)
    assert meter.devices()[0].method == "polled-power"
    meter.close()
