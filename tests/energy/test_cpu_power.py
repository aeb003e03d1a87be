from __future__ import annotations

import pytest

from greendiff.energy._cpu_power import CpuInfo, lookup_tdp_w, read_cpuinfo, resolve_cpu_power
from greendiff.errors import UserInputError

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7763 64-Core Processor
siblings\t: 128
flags\t\t: fpu vme sse
processor\t: 1
model name\t: AMD EPYC 7763 64-Core Processor
"""


def test_read_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert read_cpuinfo(path) == CpuInfo("AMD EPYC 7763 64-Core Processor", 128, virtualized=False)
    path.write_text(CPUINFO.replace("sse", "sse hypervisor"))
    assert read_cpuinfo(path).virtualized


@pytest.mark.parametrize(("model", "expected"), [
    ("AMD EPYC 7763 64-Core Processor", ("AMD EPYC 7763", 280.0)),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", ("Intel Xeon E5-2686 v4", 145.0)),
    ("Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz", ("Intel Core i7-8550U", 15.0)),
    ("AMD EPYC", None),  # no model number: never guessed from the family name
])
def test_tdp_lookup(model, expected):
    assert lookup_tdp_w(model) == expected


def test_bare_metal_uses_tdp_per_logical_cpu():
    power = resolve_cpu_power(CpuInfo("AMD EPYC 7763 64-Core Processor", 128, virtualized=False))
    assert power.method == "estimate:tdp-cputime"
    assert power.watts_per_logical_cpu == pytest.approx(280.0 / 128)
    assert "TDP 280 W" in power.source


def test_virtual_machine_uses_ccf_per_vcpu_not_host_tdp():
    power = resolve_cpu_power(CpuInfo("AMD EPYC 7763 64-Core Processor", 2, virtualized=True))
    assert power.method == "estimate:ccf-vcpu-cputime"
    assert 0.5 < power.watts_per_logical_cpu < 5  # per vCPU, not 280 W / 2
    assert "EPYC" in power.source and "virtual machine" in power.source


def test_user_watts_override():
    power = resolve_cpu_power(CpuInfo("x", 4, virtualized=True), cpu_watts=40.0)
    assert (power.method, power.watts_per_logical_cpu) == ("estimate:user-watts-cputime", 10.0)
    # a fact that travels into summaries and exports: no flag in it (the CLI says what to type)
    assert power.source == "40 W given by the user / 4 logical CPUs per package"


@pytest.mark.parametrize("watts", [0.0, -5.0, float("nan")])
def test_bad_user_watts(watts):
    with pytest.raises(UserInputError, match="--cpu-watts"):
        resolve_cpu_power(CpuInfo("x", 4, virtualized=True), cpu_watts=watts)
