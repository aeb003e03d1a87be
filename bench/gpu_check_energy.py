"""GPU check: NVML energy counter vs 100 ms power polling across a 20 s matmul load.

Both figures come from greendiff's own NVIDIA meter: one opened on the counter
(``nvmlDeviceGetTotalEnergyConsumption``), one forced to integrate ``nvmlDeviceGetPowerUsage``
every 100 ms. Target: within 2 %. Needs PyTorch with CUDA and an NVIDIA GPU; exits 0 with a
message where there is none (CI never has one).

    python bench/gpu_check_energy.py [--seconds 20] [--out DIR] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.energy import NvidiaGpuMeter  # noqa: E402


def matmul_load(seconds: float) -> tuple[int, float]:
    """bf16 matmuls on GPU 0 for ``seconds``; returns (iterations, achieved TFLOP/s)."""
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    iters, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a = (a @ b).clamp_(-1, 1)
        torch.cuda.synchronize()
        iters += 10
    elapsed = time.perf_counter() - t0
    return iters, iters * 2 * n**3 / elapsed / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    counter = NvidiaGpuMeter.create([0]) if has_cuda else None
    if counter is None:
        print("no NVIDIA GPU with NVML and CUDA here: nothing to check")
        return 0
    polled = NvidiaGpuMeter.create([0], poll_interval_s=0.1, use_counter=False)
    (device,) = counter.devices()
    if device.method != "counter":
        print(f"{device.name} has no energy counter (pre-Volta): nothing to compare")
        return 0
    idle_s = 2.0
    c0, p0, t0 = counter.read_energy_j()["gpu:0"], polled.read_energy_j()["gpu:0"], time.perf_counter()
    time.sleep(idle_s)  # a little idle first so both see the ramp-up
    iters, tflops = matmul_load(args.seconds)
    time.sleep(1.0)
    c1, p1, t1 = counter.read_energy_j()["gpu:0"], polled.read_energy_j()["gpu:0"], time.perf_counter()
    counter.close()
    polled.close()
    counter_j, polled_j = c1 - c0, p1 - p0
    result = {
        "date": today(), "machine": machine(), "gpu": device.name, "load_s": args.seconds, "window_s": t1 - t0,
        "matmul_iterations": iters, "bf16_tflops": tflops,
        "counter_energy_j": counter_j, "polled_energy_j": polled_j,
        "mean_power_w": counter_j / (t1 - t0), "relative_difference": (polled_j - counter_j) / counter_j,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check_energy.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.write_benchmarks:
        ok = abs(result["relative_difference"]) <= 0.02
        write_section("gpu_check_energy", "\n".join([
            "## GPU energy counter vs polled power (`bench/gpu_check_energy.py`)",
            "",
            f"- Command: `python {' '.join(sys.argv)}`",
            f"- Machine: {result['machine']}, GPU {result['gpu']}",
            f"- Date: {result['date']}",
            "",
            f"Over {result['window_s']:.1f} s ({args.seconds:g} s of bf16 8192² matmuls at {tflops:.0f} TFLOP/s, "
            f"plus idle edges): counter **{counter_j:.0f} J**, 100 ms polling **{polled_j:.0f} J** "
            f"(mean {result['mean_power_w']:.0f} W); difference **{result['relative_difference']:+.2%}** → "
            f"target ±2 % **{'met' if ok else 'NOT met'}**.",
        ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
