"""The CLI's :class:`greendiff.workflows.Progress`: rich bars and one-line notes on a console."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from greendiff.cli._render import fmt_energy, fmt_mass, plain
from greendiff.units import G_PER_KG
from greendiff.workflows._progress import Advance, ProgressEvent, SegmentStart, TimestepDone

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

    def on_log(self, event: ProgressEvent) -> None:
        if isinstance(event, SegmentStart):
            self._start_step = event.event.step
            self._header(event)
        elif isinstance(event, Advance):
            if self._bar is not None:
                self._bar.update(self._task, advance=event.units, **({"info": event.info} if event.info else {}))
        elif isinstance(event, TimestepDone):
            if self._bar is not None:
                self._bar.update(self._task, advance=1, info=f"timestep {event.t}")
        elif self._bar is not None:  # a greendiff.train.LogEvent (torch is not imported for --help)
            done = event.step - self._start_step
            projected = event.energy_kwh * (1 + (self._total - event.step) / max(done, 1))
            self._bar.update(self._task, completed=event.step, info=(
                f"loss {event.loss:.4f} · {event.samples_per_s:.0f} img/s · {fmt_energy(event.energy_kwh)} · "
                f"{fmt_mass(event.co2e_g / G_PER_KG)} CO2e · projected {fmt_energy(projected)}"))

    def _header(self, start: SegmentStart) -> None:
        console = self._bar.console if self._bar is not None else self.console
        e = start.event
        console.print(plain(
            f"UNet {start.preset}: {e.params:,} parameters, {e.macs_per_image / 1e6:.1f} M MACs "
            f"per image · precision {e.precision} ({e.precision_reason}) on {e.device} · {e.dataset}"), highlight=False)
        if e.processes > 1:
            console.print(f"{e.processes} processes: effective batch {e.effective_batch_size} "
                          f"({start.batch_size} per process), lr {e.lr:g} (scaling {e.lr_scaling})", highlight=False)
