"""Training-loop overhead: greendiff's step time against the bare model forward+backward on the same batch.

Three timings of the same UNet, batch and precision, interleaved ``--repeats`` times:

- ``bare``: noise, timesteps, ``unet(x_t, t)``, MSE, ``backward()`` (the floor any trainer pays);
- ``bare+adamw``: the same plus ``AdamW.step()``/``zero_grad`` (the floor of a *training* step);
- ``greendiff``: :func:`greendiff.train.train` (data indexing, Min-SNR loss, clipping, LR schedule,
  EMA, the tracker's per-step energy window and logging every 10 steps), its step time the median
  over its log intervals after the first (the bare loops also leave 3 warm-up steps out).

    python bench/loop_overhead.py [--preset tiny] [--steps 60] [--repeats 3] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

import torch  # noqa: E402

from greendiff.carbon import Location  # noqa: E402
from greendiff.data import load_dataset  # noqa: E402
from greendiff.energy import EnergyMonitor, MonitorOptions  # noqa: E402
from greendiff.tracking import Tracker  # noqa: E402
from greendiff.train import build_unet, make_noise_scheduler, resolve_config, train  # noqa: E402


def bare_step_s(config, images: torch.Tensor, steps: int, with_optimizer: bool) -> float:
    torch.manual_seed(0)
    unet = build_unet(config.model, config.data.resolution, 1, config.optim.num_train_timesteps)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.optim.lr)
    scheduler = make_noise_scheduler(config.optim)
    b = config.optim.batch_size
    x0 = images[:b].float() / 127.5 - 1.0

    def step() -> None:
        noise = torch.randn_like(x0)
        t = torch.randint(0, config.optim.num_train_timesteps, (b,))
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        if with_optimizer:
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


class LogEvents:
    """A trainer callback keeping every log event (:class:`greendiff.train.LogEvent`)."""

    def __init__(self) -> None:
        self.events = []

    def on_log(self, trainer, event) -> None:
        self.events.append(event)


def greendiff_step_s(config, data, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker("loop-overhead", kind="bench", ledger=Path(tmp) / "ledger.sqlite", location=Location(country="FRA"),
                          monitor=EnergyMonitor.detect(MonitorOptions(measure_gpus=False))).start()
        logs = LogEvents()
        train(config, Path(tmp) / "run", data, tracker, callbacks=[logs])
        tracker.stop()
    # steady state, like the bare loops: the median over log intervals, the first (warm-up) one left out
    rates = [e.samples_per_s for e in logs.events if e.step > config.run.log_every]
    return config.optim.batch_size / statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    config = resolve_config(overrides={"model.preset": args.preset, "run.max_steps": args.steps + 10,
                                       "run.log_every": 10, "run.sample_every": 10_000, "run.checkpoint_every": 10_000,
                                       "run.num_samples": 4, "optim.sample_steps": 2, "optim.mixed_precision": "no"})
    data = load_dataset("mnist", config.data.resolution)
    timings: dict[str, list[float]] = {"bare": [], "bare+adamw": [], "greendiff": []}
    for _ in range(args.repeats):
        timings["bare"].append(bare_step_s(config, data.images, args.steps, with_optimizer=False))
        timings["bare+adamw"].append(bare_step_s(config, data.images, args.steps, with_optimizer=True))
        timings["greendiff"].append(greendiff_step_s(config, data, args.steps))
    med = {k: statistics.median(v) for k, v in timings.items()}
    result = {"date": today(), "machine": machine(), "args": vars(args), "step_s": timings, "median_step_s": med,
              "overhead_vs_bare": med["greendiff"] / med["bare"] - 1,
              "overhead_vs_bare_adamw": med["greendiff"] / med["bare+adamw"] - 1}
    (Path(__file__).resolve().parent / "results" / "loop_overhead.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.write_benchmarks:
        met = result["overhead_vs_bare"] <= 0.03
        lines = ["## Training-loop overhead (`bench/loop_overhead.py`)", "",
                 f"- Command: `python {' '.join(sys.argv)}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}",
                 f"- `{args.preset}` UNet, MNIST 16x16, batch {config.optim.batch_size}, fp32, {torch.get_num_threads()} "
                 f"threads; {args.steps} timed steps per measurement, {args.repeats} interleaved repeats (median).", "",
                 "| loop | step time (median) | runs |", "|---|---:|---|"]
        for k, v in timings.items():
            lines.append(f"| {k} | {med[k] * 1e3:.1f} ms | {', '.join(f'{x * 1e3:.1f}' for x in v)} ms |")
        lines += ["", f"greendiff's step is **{result['overhead_vs_bare']:+.1%}** against the bare forward+backward and "
                      f"**{result['overhead_vs_bare_adamw']:+.1%}** against forward+backward+AdamW. Target: within 3 % of the "
                      f"bare forward+backward → **{'met' if met else 'NOT met'}**."]
        write_section("loop_overhead", "\n".join(lines))


if __name__ == "__main__":
    main()
