from __future__ import annotations

import json

import pytest

from greendiff.cli._app import main
from greendiff.energy import NvidiaPowerLimit, PowerLimitDenied, _nvidia
from greendiff.errors import UserInputError
from greendiff.plan import estimate_gpus, limits_to_try, match_gpu, measure_cost, sweep_power_limits
from greendiff.plan._hardware import StepCost, gpu_table
from tests.energy.test_nvidia import FakeNVML, FakeNVMLError


class FakeNoPermission(FakeNVMLError):
    pass


class FakeNVMLWithLimits(FakeNVML):
    """FakeNVML plus power-limit management: 200-700 W, default 700 W; setting can be refused."""

    def __init__(self, allow_set: bool = True) -> None:
        super().__init__()
        self.limit_mw = {0: 700_000, 1: 250_000}
        self.allow_set = allow_set
        self.set_calls = []

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h):
        return 200_000, 700_000

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        return 700_000

    def nvmlDeviceGetPowerManagementLimit(self, h):
        return self.limit_mw[h[1]]

    def nvmlDeviceSetPowerManagementLimit(self, h, mw):
        if not self.allow_set:
            raise FakeNoPermission("Insufficient Permissions")
        self.set_calls.append(mw)
        self.limit_mw[h[1]] = mw


@pytest.fixture
def nvml(monkeypatch):
    fake = FakeNVMLWithLimits()
    monkeypatch.setattr(_nvidia, "pynvml", fake)
    return fake


#: limit (W) -> (J per sample, s per sample): capping saves energy down to a point, then the slowdown costs more
CURVE = {700: (0.50, 1.00e-3), 600: (0.46, 1.00e-3), 500: (0.42, 1.05e-3), 400: (0.38, 1.25e-3), 300: (0.40, 1.66e-3)}


def gpu_model(fake):
    def measure(limit_w):
        energy, s = CURVE[limit_w if limit_w is not None else fake.limit_mw[0] // 1000]
        return StepCost("cuda:0", "NVIDIA H200", energy, s, limit_w, "counter")
    return measure


def test_limits_to_try():
    assert limits_to_try((300.0, 700.0)) == [700, 600, 500, 400, 300]
    assert limits_to_try((150.0, 400.0)) == [400, 300, 200, 150]


def test_sweep_finds_the_limit_with_least_energy_within_the_slowdown_and_restores(nvml):
    control = NvidiaPowerLimit.open(0)
    assert control.constraints_w() == (200.0, 700.0) and control.original_w == 700.0
    sweep = sweep_power_limits(control, [700, 600, 500, 400, 300], gpu_model(nvml), "cuda:0")
    assert sweep.permitted and [c.limit_w for c in sweep.costs] == [700, 600, 500, 400, 300]
    assert sweep.best(0.1).limit_w == 500  # 400 W saves more energy but is 25 % slower
    assert sweep.best(0.3).limit_w == 400
    assert sweep.best(1.0).limit_w == 400  # 300 W is slower and no longer saves energy
    assert sweep.best(0.0).limit_w == 600  # as fast as 700 W, 8 % less energy
    assert nvml.set_calls[:5] == [700_000, 600_000, 500_000, 400_000, 300_000]
    assert nvml.limit_mw[0] == 700_000 and nvml.initialised == 0  # restored and released


def test_without_permission_the_default_is_reported(monkeypatch):
    fake = FakeNVMLWithLimits(allow_set=False)
    monkeypatch.setattr(_nvidia, "pynvml", fake)
    control = NvidiaPowerLimit.open(0)
    with pytest.raises(PowerLimitDenied, match="cannot set the power limit to 500 W"):
        control.set_w(500)
    sweep = sweep_power_limits(control, [700, 500, 300], gpu_model(fake), "cuda:0")
    assert not sweep.permitted and [c.limit_w for c in sweep.costs] == [None]
    assert "needs root" in sweep.note and "current limit (700 W)" in sweep.note
    assert sweep.best(0.1).energy_per_sample_kwh == sweep.costs[0].energy_per_sample_kwh
    assert fake.limit_mw[0] == 700_000 and fake.initialised == 0


def test_limits_outside_the_gpu_range_are_refused(nvml):
    with pytest.raises(UserInputError, match="power limit 800 W is outside what NVIDIA H200 accepts"):
        sweep_power_limits(NvidiaPowerLimit.open(0), [800, 500], gpu_model(nvml), "cuda:0")
    assert nvml.initialised == 0


def test_measure_cost_divides_by_samples_after_the_warmup():
    energy, now, ran = [0.0], [0.0], []

    def run(n):
        ran.append(n)
        energy[0] += 2.0 * n
        now[0] += 0.5 * n

    cost = measure_cost(run, lambda: energy[0], 8, steps=10, warmup=3, device="cpu", name="x", clock=lambda: now[0])
    assert ran == [3, 10] and cost.energy_per_sample_kwh == pytest.approx(2.0 / 8 / 3.6e6)
    assert cost.s_per_sample == pytest.approx(0.5 / 8)
    assert cost.power_w == pytest.approx(4.0)


def test_gpu_table_and_names():
    table = gpu_table()
    assert "GTX 750" not in table and table["H100 SXM"].tdp_w == 700 and table["T4"].peak_kind == "FP16"
    assert table["GTX 1080"].peak_kind == "FP32"  # its FP16 rate is a fraction of FP32 on consumer Pascal
    assert match_gpu("NVIDIA A100-SXM4-80GB").name == "A100 SXM4 80 GB"
    assert match_gpu("Tesla T4").name == "T4" and match_gpu("NVIDIA H200") is None


def test_estimates_reproduce_the_calibration_gpu_and_scale_the_others():
    spec = gpu_table()["A100 SXM4 80 GB"]
    measured = StepCost("cuda:0", "NVIDIA A100-SXM4-80GB", energy_per_sample_kwh=0.02 / 3.6e6, s_per_sample=1e-4)  # 200 W
    estimates = {e.name: e for e in estimate_gpus(1e8, measured, spec)}
    same = estimates["A100 SXM4 80 GB"]
    assert same.s_per_sample == pytest.approx(1e-4) and same.energy_per_sample_kwh == pytest.approx(0.02 / 3.6e6)
    t4 = gpu_table()["T4"]
    assert estimates["T4"].s_per_sample == pytest.approx(1e-4 * spec.peak_tflops / t4.peak_tflops)
    assert estimates["T4"].energy_per_sample_kwh == pytest.approx(estimates["T4"].s_per_sample * t4.tdp_w * 200 / 400 / 3.6e6)
    assert "calibrated on the measured" in same.method and "estimate" in same.method
    assert "assumed MFU" in estimate_gpus(1e8)[0].method


def test_hardware_cli_on_the_cpu(capsys, tmp_path):
    out = tmp_path / "hw.json"
    code = main(["hardware", "--set", "model.preset=nano", "--set", "model.block_out_channels=8,16", "--set", "data.dataset=digits",
                 "--set", "data.resolution=8", "--set", "optim.batch_size=16", "--train-steps", "3", "--unmetered-steps", "1",
                 "--devices", "cpu", "-o", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == report
    (cpu,) = report["devices"]
    assert cpu["device"] == "cpu" and cpu["energy_per_sample_kwh"] > 0 and cpu["s_per_sample"] > 0
    assert cpu["power_w"] == pytest.approx(cpu["energy_per_sample_kwh"] * 3.6e6 / cpu["s_per_sample"])
    energies = [k for k in json.dumps(report).replace('"', " ").split() if "energy" in k]
    assert energies and all(k.endswith("_kwh") for k in energies), set(energies)  # one unit: kWh
    assert report["macs_per_sample"] > 0 and len(report["estimates"]) == len(gpu_table())
    assert any("no CUDA GPU measured" in n for n in report["notes"])


@pytest.mark.parametrize("args, message", [
    (["--devices", "cuda:7"], "--devices: 'cuda:7' is not available here"),
    (["--limits", "high"], "--limits must be comma-separated watts"),
    (["--max-slowdown", "-1"], "--max-slowdown must be a fraction >= 0"),
    (["--train-steps", "0"], "--train-steps must be positive"),
    (["--steps", "0"], "--steps must be positive"),  # the old name, read by the same bounds
])
def test_hardware_cli_bad_input(capsys, args, message):
    code = main(["hardware", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_hardware_cli_sweeps_a_gpu_through_nvml(monkeypatch, capsys, nvml):
    """The CLI's GPU path end to end with a fake NVML and a fake training step: each step uses energy
    and time from CURVE at the limit NVML holds, so the sweep, the choice and the calibration are checked."""
    import time

    import torch

    import greendiff.plan

    def fake_steps(config, data, device):
        def run(n):
            energy, s = CURVE[nvml.limit_mw[0] // 1000]
            samples = n * config.optim.batch_size
            nvml.counter_mj[0] += int(round(energy * samples * 1e3))
            time.sleep(5 * s * samples)  # 5x slower than CURVE: 100 ms per limit keeps timing noise small
        return run, 2e7

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(greendiff.plan, "training_steps", fake_steps)
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # table: H100 SXM, 700 W
    code = main(["hardware", "--devices", "cuda:0", "--set", "optim.batch_size=4", "--train-steps", "5", "--unmetered-steps", "1",
                 "--limits", "700,600,500,400,300", "--max-slowdown", "0.1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    (sweep,) = report["sweeps"]
    assert sweep["permitted"] and [c["limit_w"] for c in sweep["costs"]] == [700, 600, 500, 400, 300]
    for c in sweep["costs"]:
        assert c["energy_per_sample_kwh"] * 3.6e6 == pytest.approx(CURVE[c["limit_w"]][0], rel=1e-3)
        assert c["s_per_sample"] == pytest.approx(5 * CURVE[c["limit_w"]][1], rel=0.3)  # real sleeps
    assert sweep["best"]["limit_w"] in (500, 600)  # 400 W is 25 % slower; timing noise may favour 600 W
    assert nvml.limit_mw[0] == 700_000  # restored
    (calibrated,) = [e for e in report["estimates"] if e["name"] == "H100 SXM"]
    assert "calibrated on the measured NVIDIA H100 80GB HBM3" in calibrated["method"]
    assert calibrated["energy_per_sample_kwh"] == pytest.approx(report["devices"][0]["energy_per_sample_kwh"], rel=1e-6)
