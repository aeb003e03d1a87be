"""Write a benchmark's section into BENCHMARKS.md between its own markers (other sections untouched)."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import psutil

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def bf16_capability(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX); without them bf16 autocast is emulated."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return "bf16 capability unknown"
    native = [name for name in ("avx512_bf16", "amx_bf16") if f" {name}" in flags]
    return f"native bf16 ({', '.join(native)})" if native else "no native bf16 (no AVX512-BF16/AMX)"


def machine() -> str:
    from greendiff.energy import read_cpuinfo

    cpu = read_cpuinfo()
    return (f"{cpu.model_name}, {psutil.cpu_count()} logical CPUs{' (VM)' if cpu.virtualized else ''}, "
            f"{bf16_capability()}, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def write_section(key: str, body: str) -> None:
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)
