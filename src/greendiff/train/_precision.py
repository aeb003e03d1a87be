"""Precision and placement: the autocast dtype a run uses, and the ``Accelerator`` that applies it."""

from __future__ import annotations

from pathlib import Path

import torch

from greendiff.errors import UserInputError


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """AVX512-BF16 or AMX: without them CPU bf16 autocast is emulated and slower than fp32
    (measured ~10x slower on this project's AVX2-only EPYC VM; see BENCHMARKS.md)."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The autocast dtype to use and why. ``auto``: bf16 where the hardware runs it natively
    (Ampere+ GPUs; CPUs with AVX512-BF16/AMX), fp16 on older GPUs, else full fp32.

    Example:
        >>> resolve_precision("no", torch.device("cpu"))
        ('no', 'set by the config')
    """
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UserInputError("fp16 autocast is not supported on the CPU; use --mixed-precision bf16 or no")
        return requested, "set by the config"
    if device.type == "cuda":
        return ("bf16", "auto: GPU supports bf16") if torch.cuda.is_bf16_supported() else ("fp16", "auto: GPU lacks bf16")
    if cpu_has_native_bf16():
        return "bf16", "auto: CPU has native bf16 (AVX512-BF16/AMX)"
    return "no", "auto: CPU lacks native bf16 (no AVX512-BF16/AMX), where bf16 autocast is slower than fp32"


def make_accelerator(precision: str, use_cuda: bool):
    """An ``Accelerator`` for this run. accelerate keeps one global state per process; a second run in
    the same process (tests, tuning) with another precision must clear it first. Only the
    precision part (``AcceleratorState``) is cleared, never the process-group part."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision, cpu=not use_cuda)
