"""Write a benchmark's section into BENCHMARKS.md between its own markers (other sections untouched)."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import psutil

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    from greendiff.energy import read_cpuinfo

    cpu = read_cpuinfo()
    return (f"{cpu.model_name}, {psutil.cpu_count()} logical CPUs{' (VM)' if cpu.virtualized else ''}, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


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
