"""The CLI's :class:`greendiff.workflows.Progress`: rich bars and one-line notes on a console."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from greendiff.cli._render import fmt_energy, fmt_mass, plain

_STYLES = {"warning": "yellow"}


class RichProgress:
    """A bar per training segment (loss, images/s, energy, CO2e and the projected energy) or Taylor pass;
    the trainer's start record as a line about the model; notes as plain lines."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task = None
        self._total = 0
        self._start_step = 0  # the step the run (or the resumed segment) started at

    def on_start(self, label: str, total: int) -> None:
        self._bar = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                             transient=label == "taylor")
        self._task = self._bar.add_task(label, total=total, info="")
        self._total, self._start_step = total, 0
        self._bar.start()

    def on_end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def note(self, text: str, style: str | None = None) -> None:
        self.console.print(plain(text), style=_STYLES.get(style or "", style), highlight=False)

    def on_log(self, record: dict) -> None:
        event = record.get("event")
        if event == "start":
            self._start_step = record["step"]
            self._header(record)
        elif event == "timestep":
            if self._bar is not None:
                self._bar.update(self._task, advance=1, info=f"timestep {record['t']}")
        elif "loss" in record and self._bar is not None:
            done = record["step"] - self._start_step
            projected = record["energy_kwh"] * (1 + (self._total - record["step"]) / max(done, 1))
            self._bar.update(self._task, completed=record["step"], info=(
                f"loss {record['loss']:.4f} · {record['samples_per_s']:.0f} img/s · {fmt_energy(record['energy_kwh'])} · "
                f"{fmt_mass(record['co2e_g'] / 1e3)} CO2e · projected {fmt_energy(projected)}"))

    def _header(self, record: dict) -> None:
        console = self._bar.console if self._bar is not None else self.console
        console.print(plain(
            f"UNet {record['preset']}: {record['params']:,} parameters, {record['macs_per_image'] / 1e6:.1f} M MACs "
            f"per image · precision {record['precision']} ({record['precision_reason']}) on {record['device']} · "
            f"{record['dataset']}"), highlight=False)
        if record.get("processes", 1) > 1:
            console.print(f"{record['processes']} processes: effective batch {record['effective_batch_size']} "
                          f"({record['batch_size']} per process), lr {record['lr']:g} (scaling "
                          f"{record['lr_scaling']})", highlight=False)
