"""Power of one busy logical CPU, for estimating CPU energy from CPU time.

Resolved once, in this order, and every step recorded in the result:

1. the user's ``--cpu-watts`` (the CPU package's power at full load, in watts; divided by the
   logical CPUs of the package);
2. on bare metal, the CPU model's TDP from the bundled CodeCarbon table, divided by the logical
   CPUs of the package (``siblings`` in ``/proc/cpuinfo``): ``estimate:tdp-cputime``;
3. in a virtual machine (``hypervisor`` CPU flag) or when the model is not in the table, the
   Cloud Carbon Footprint per-vCPU ``Max Watts`` coefficient of the CPU's microarchitecture (the
   average over the bundled tables when the architecture is unknown):
   ``estimate:ccf-vcpu-cputime``. Dividing a host's TDP by the few vCPUs a VM sees would
   overstate power many times, so the TDP table is not used there.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from greendiff.errors import UserInputError

_TABLES = resources.files("greendiff.energy") / "tables"

# microarchitecture keyword in the CPU model name -> CCF architecture names to average over
_ARCH_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("EPYC", ("EPYC 1st Gen", "EPYC 2nd Gen", "EPYC 3rd Gen")),
    ("Graviton", ("Graviton", "Graviton2")),
)


@dataclass(frozen=True)
class CpuInfo:
    model_name: str
    logical_cpus_per_package: int
    virtualized: bool


@dataclass(frozen=True)
class CpuPower:
    """Watts drawn by one fully busy logical CPU, with how that figure was obtained."""

    watts_per_logical_cpu: float
    method: str
    source: str


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Model name, logical CPUs per package, and whether we run under a hypervisor."""
    try:
        text = path.read_text()
    except OSError:
        return CpuInfo("unknown CPU", 1, virtualized=True)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    siblings = fields.get("siblings", "")
    return CpuInfo(
        model_name=fields.get("model name") or fields.get("Model") or "unknown CPU",
        logical_cpus_per_package=int(siblings) if siblings.isdigit() and int(siblings) > 0 else 1,
        virtualized="hypervisor" in fields.get("flags", "").split(),
    )


def _normalise(name: str) -> str:
    name = re.sub(r"\((R|TM)\)", " ", name, flags=re.IGNORECASE)
    name = re.sub(r"\s(@|with)\s.*$", " ", name)  # clock speed, integrated graphics
    name = re.sub(r"\b(CPU|Processor|\d+-Core)\b", " ", name, flags=re.IGNORECASE)
    return " ".join(name.replace("-", " ").split()).lower()


@functools.cache
def _tdp_table() -> dict[str, tuple[str, float]]:
    table: dict[str, tuple[str, float]] = {}
    with (_TABLES / "cpu-tdp.csv").open() as f:
        for row in csv.DictReader(f):
            try:
                table[_normalise(row["Name"])] = (row["Name"], float(row["TDP"]))
            except ValueError:  # four source rows carry ranges like "27.29.5": not usable
                continue
    return table


def lookup_tdp_w(model_name: str) -> tuple[str, float] | None:
    """Exact match of the normalised model name, then the longest table name contained in it."""
    table = _tdp_table()
    wanted = _normalise(model_name)
    if wanted in table:
        return table[wanted]
    tokens = wanted.split()
    candidates = [k for k in table if len(k.split()) >= 2 and set(k.split()) <= set(tokens)
                  and any(ch.isdigit() for ch in k)]  # a model number must match, not just "amd epyc"
    if not candidates:
        return None
    return table[max(candidates, key=len)]


@functools.cache
def _ccf_max_watts() -> dict[str, list[float]]:
    per_arch: dict[str, list[float]] = {}
    for provider in ("aws", "azure", "gcp"):
        with (_TABLES / f"cpu-coefficients-{provider}.csv").open() as f:
            for row in csv.DictReader(f):
                per_arch.setdefault(row["Architecture"], []).append(float(row["Max Watts"]))
    return per_arch


def ccf_vcpu_watts(model_name: str) -> tuple[float, str]:
    """Per-vCPU max watts (Cloud Carbon Footprint) for the model's architecture, or the average."""
    table = _ccf_max_watts()
    for hint, archs in _ARCH_HINTS:
        if hint.lower() in model_name.lower():
            values = [w for a in archs for w in table.get(a, [])]
            if values:
                return sum(values) / len(values), f"CCF per-vCPU Max Watts, mean of {', '.join(archs)}"
    values = [w for ws in table.values() for w in ws]
    return sum(values) / len(values), "CCF per-vCPU Max Watts, mean over all microarchitectures (model not recognised)"


def resolve_cpu_power(cpu: CpuInfo, cpu_watts: float | None = None) -> CpuPower:
    """Decide the power of one busy logical CPU (see the module docstring for the order)."""
    if cpu_watts is not None:
        if not cpu_watts > 0:
            raise UserInputError(f"--cpu-watts must be a positive number of watts, got {cpu_watts}")
        return CpuPower(cpu_watts / cpu.logical_cpus_per_package, "estimate:user-watts-cputime",
                        f"{cpu_watts:g} W given by the user / {cpu.logical_cpus_per_package} logical CPUs per package")
    match = lookup_tdp_w(cpu.model_name)
    if match is not None and not cpu.virtualized:
        table_name, tdp_w = match
        return CpuPower(tdp_w / cpu.logical_cpus_per_package, "estimate:tdp-cputime",
                        f"TDP {tdp_w:g} W of '{table_name}' (CodeCarbon table) / "
                        f"{cpu.logical_cpus_per_package} logical CPUs per package")
    watts, source = ccf_vcpu_watts(cpu.model_name)
    why = "virtual machine" if cpu.virtualized else f"'{cpu.model_name}' not in the TDP table"
    return CpuPower(watts, "estimate:ccf-vcpu-cputime", f"{source} ({why})")
