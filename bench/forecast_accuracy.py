"""How good is `greendiff profile`'s forecast? Profile a config, then train it in full and compare.

For each config: `greendiff profile --train-steps N` (forecast energy, band and hours), then
`greendiff train` of the same config (measured energy and wall time), interleaved config by config,
same machine and meters. Reports the forecast error and whether the measurement fell in the band.

    python bench/forecast_accuracy.py [--profile-steps 50] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
HERE = Path(__file__).resolve().parent

CONFIGS = {
    "nano-16px-600steps-eval": ["--set", "model.preset=nano", "--set", "run.max_steps=600", "--set", "stop.eval_every=200",
                                "--set", "stop.eval_samples=200", "--set", "stop.eval_sample_steps=20"],
    "tiny-16px-300steps": ["--set", "model.preset=tiny", "--set", "run.max_steps=300", "--set", "optim.batch_size=32"],
}


def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"greendiff {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile-steps", type=int, default=50)
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GREENDIFF_LEDGER": str(Path(tmp) / "ledger.sqlite"), "GREENDIFF_COUNTRY": "FRA"}
        for name, sets in CONFIGS.items():
            profile = Path(tmp) / f"{name}.json"
            t0 = time.perf_counter()
            cli(["profile", *sets, "--train-steps", str(args.profile_steps), "-o", str(profile)], env)
            profile_s = time.perf_counter() - t0
            f = json.loads(profile.read_text())["forecast"]
            runs = Path(tmp) / "runs" / name
            t0 = time.perf_counter()
            cli(["train", *sets, "--output-dir", str(runs), "--name", name], env)
            wall_s = time.perf_counter() - t0
            (run_dir,) = runs.iterdir()
            measured = json.loads((run_dir / "emissions.json").read_text())
            row = {"config": name, "profile_s": profile_s, "forecast_kwh": f["energy_kwh"], "low_kwh": f["energy_low_kwh"],
                   "high_kwh": f["energy_high_kwh"], "forecast_h": f["hours"], "measured_kwh": measured["energy_kwh"],
                   "measured_h": measured["duration_s"] / 3600, "train_wall_s": wall_s, "band_frac": f["uncertainty_frac"],
                   "method": f["method"]}
            row["energy_error"] = row["forecast_kwh"] / row["measured_kwh"] - 1
            row["time_error"] = row["forecast_h"] / row["measured_h"] - 1
            row["in_band"] = row["low_kwh"] <= row["measured_kwh"] <= row["high_kwh"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = HERE / "results" / "forecast-accuracy.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    if args.write_benchmarks:
        lines = ["## Forecast accuracy of `greendiff profile`", "",
                 f"`python bench/forecast_accuracy.py --profile-steps {args.profile_steps} --write-benchmarks` · {today()} · "
                 f"{machine()}", "",
                 "Each config is profiled for the given steps, then trained in full on the same machine (bundled MNIST, 16 px).", "",
                 "| config | profile | forecast energy (band) | measured energy | energy error | in band | forecast time | measured time | time error |",
                 "|---|---:|---:|---:|---:|:--:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['config']} | {r['profile_s']:.0f} s | {r['forecast_kwh'] * 1e3:.3f} Wh "
                         f"({r['low_kwh'] * 1e3:.3f}–{r['high_kwh'] * 1e3:.3f}) | {r['measured_kwh'] * 1e3:.3f} Wh | "
                         f"{r['energy_error']:+.1%} | {'yes' if r['in_band'] else 'no'} | {r['forecast_h'] * 3600:.0f} s | "
                         f"{r['measured_h'] * 3600:.0f} s | {r['time_error']:+.1%} |")
        lines += ["", f"Meters: {rows[0]['method']}."]
        write_section("forecast-accuracy", "\n".join(lines))


if __name__ == "__main__":
    main()
