"""``greendiff measure -- CMD ...``: run any command and record its energy and CO2e."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
from typing import Annotated, Optional

import typer
from rich.console import Console

from greendiff.cli._options import (
    Cloud, Country, CpuWatts, Gpus, Grid, LedgerPath, Live, NoGpu, PueOpt, Zone, resolve_settings,
)
from greendiff.cli._render import render_summary
from greendiff.errors import UserInputError


def measure(
    command: Annotated[Optional[list[str]], typer.Argument(help="The command to run, after --.", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name (default: the program name).")] = None,
    country: Country = None, cloud: Cloud = None, grid: Grid = None, pue: PueOpt = None,
    live: Live = "none", zone: Zone = None, cpu_watts: CpuWatts = None, gpus: Gpus = None,
    no_gpu: NoGpu = False, ledger: LedgerPath = None,
    sample_interval_s: Annotated[float, typer.Option("--sample-interval", help="Seconds between ledger samples.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run a command, measure its process tree's energy, record it in the ledger."""
    if not command:
        raise UserInputError("no command to measure: use 'greendiff measure [OPTIONS] -- COMMAND [ARGS...]'")
    if shutil.which(command[0]) is None:
        raise UserInputError(f"command not found: {command[0]!r} (not executable or not on PATH)")
    if sample_interval_s <= 0:
        raise UserInputError(f"--sample-interval must be positive seconds, got {sample_interval_s}")
    settings = resolve_settings(country, cloud, grid, pue, live, zone, cpu_watts, gpus, no_gpu, ledger)
    tracker = settings.tracker(name or command[0], "measure", shlex.join(command), sample_interval_s=sample_interval_s)
    tracker.start()
    proc = subprocess.Popen(command)
    stopped_by: list[int] = []

    def forward(signum, _frame):  # pass SIGTERM/SIGHUP on, then let the child's exit end the run
        stopped_by.append(signum)
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with tracker.window("command"):
            while True:
                try:
                    exit_code = proc.wait(timeout=sample_interval_s)
                    break
                except subprocess.TimeoutExpired:
                    tracker.sample(force=True)
                except KeyboardInterrupt:  # Ctrl-C reached the child too; wait for it, kill it on a second one
                    if signal.SIGINT in stopped_by:
                        proc.kill()
                    stopped_by.append(signal.SIGINT)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    status = "interrupted" if stopped_by else ("completed" if exit_code == 0 else "failed")
    summary = tracker.stop(status, exit_code)
    console = Console(stderr=True)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        render_summary(summary, console)
    raise typer.Exit(exit_code if exit_code >= 0 else 128 - exit_code)
