"""The CLI's :class:`greendiff.workflows.Progress`: rich bars and one-line notes on a console."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from greendiff.cli._render import fmt_duration, fmt_energy, fmt_mass, plain
from greendiff.display import plain_number
from greendiff.workflows._progress import Advance, ProgressEvent, SegmentStart, TimestepDone

_STYLES = {"warning": "yellow"}
_PHASES = {"eval": "evaluation", "wait": "paused"}  # a PhaseProgress's row label


class RichProgress:
    """A bar per training segment (loss, images/s, energy, CO2e and the projected energy) or Taylor pass; a row
    under it while an in-training evaluation samples or a carbon-aware pause waits; a line per evaluation (its
    scores) and per pause (why, until when; how long it waited); the trainer's start record as a line about the
    model; notes as plain lines."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task = None
        self._total = self._done = 0
        self._phases: dict[str, object] = {}  # PhaseProgress rows shown now, by phase

    def on_start(self, label: str, total: int) -> None:
        self._bar = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), TextColumn("{task.fields[count]}"),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                             transient=label == "taylor")
        self._task = self._bar.add_task(label, total=total, info="", count=f"0/{total}")
        self._total, self._done, self._phases = total, 0, {}
        self._bar.start()

    def on_end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def note(self, text: str, style: str | None = None) -> None:
        self.console.print(plain(text), style=_STYLES.get(style or "", style), highlight=False)

    def on_log(self, event: ProgressEvent) -> None:
        kind = type(event).__name__  # the trainer's events by name: torch is not imported for --help
        if isinstance(event, SegmentStart):
            self._header(event)
        elif isinstance(event, Advance):
            self._advance(event.units, event.info)
        elif isinstance(event, TimestepDone):
            self._advance(1, f"timestep {event.t}")
        elif kind == "PhaseProgress":
            self._phase(event)
        elif kind == "EvalEvent":
            self._end_phase("eval")
            self.note(evaluation_line(event))
        elif kind == "PauseStartEvent":
            self.note(f"carbon-aware pause at step {event.step}: {event.reason}; resuming at "
                      f"{event.until:%Y-%m-%d %H:%M} UTC (in {fmt_duration((event.until - event.began).total_seconds())})")
        elif kind == "PauseEvent":
            self._end_phase("wait")
            waited = fmt_duration(event.waited_s)
            self.note(f"carbon-aware pause interrupted after {waited}" if event.interrupted else
                      f"carbon-aware pause over after {waited}: training resumes at step {event.step}")
        elif kind == "LogEvent" and self._bar is not None:
            self._bar.update(self._task, completed=event.step, count=f"{event.step}/{self._total}",
                             info=self._log_info(event))

    def _advance(self, units: int, info: str) -> None:
        if self._bar is not None:
            self._done += units
            self._bar.update(self._task, completed=self._done, count=f"{self._done}/{self._total}",
                             **({"info": info} if info else {}))

    def _log_info(self, event) -> str:
        """The bar's text for a LogEvent: the trainer's figures as they are. A rate or projection that includes the
        segment's first step (warm-up) says so."""
        rate = f"{event.samples_per_s:.0f} img/s" + (" incl. warm-up" if event.warmup else "")
        projected = "" if event.projected_energy_kwh is None else (
            f" · projected {fmt_energy(event.projected_energy_kwh)}" + (" incl. warm-up" if event.projected_with_warmup else ""))
        return (f"loss {event.loss:.4f} · {rate} · {fmt_energy(event.energy_kwh)} · "
                f"{fmt_mass(event.emissions_kg)} CO2e{projected}")

    def _phase(self, event) -> None:
        """A row under the bar for an evaluation's sampling or a pause's waiting, removed when it is done."""
        if self._bar is None:
            return
        if event.phase not in self._phases:
            self._phases[event.phase] = self._bar.add_task(_PHASES.get(event.phase, event.phase), total=event.total or None,
                                                           info=event.info, count="")
        count = (f"{fmt_duration(event.done)}/{fmt_duration(event.total)}" if event.phase == "wait"
                 else f"{event.done:.0f}/{event.total:.0f}")
        self._bar.update(self._phases[event.phase], completed=event.done, total=event.total or None, count=count,
                         info=event.info)

    def _end_phase(self, phase: str) -> None:
        task = self._phases.pop(phase, None)
        if task is not None and self._bar is not None:
            self._bar.remove_task(task)

    def _header(self, start: SegmentStart) -> None:
        console = self._bar.console if self._bar is not None else self.console
        e = start.event
        console.print(plain(
            f"UNet {start.preset}: {e.params:,} parameters, {e.macs_per_image / 1e6:.1f} M MACs "
            f"per image · precision {e.precision} ({e.precision_reason}) on {e.device} · {e.dataset}"), highlight=False)
        if e.processes > 1:
            console.print(f"{e.processes} processes: effective batch {e.effective_batch_size} "
                          f"({start.batch_size} per process), lr {plain_number(e.lr)} (scaling {e.lr_scaling})", highlight=False)


def evaluation_line(event) -> str:
    """One line for an in-training evaluation (:class:`~greendiff.train.EvalEvent`): its step, FID, KID and
    class accuracy (those it has), its own energy, and whether it is the best so far or the closing one.

    Example:
        >>> from greendiff.train import EvalEvent
        >>> evaluation_line(EvalEvent(40, 2e-3, 1.5e-4, {"fid": 31.237, "kid": 0.02134, "n": 500}, best=True))
        'evaluation at step 40: FID 31.24 · KID 0.0213 (500 images, 150 mWh) · best so far'
    """
    scores = event.scores
    parts = [f"{label} {scores[key]:{spec}}" for key, label, spec in
             (("fid", "FID", ".2f"), ("kid", "KID", ".4f"), ("class_accuracy", "class accuracy", ".1%")) if key in scores]
    images = f"{scores['n']} images, " if "n" in scores else ""
    which = "closing evaluation" if event.final else "evaluation"
    return (f"{which} at step {event.step}: {' · '.join(parts) or 'no scores'} ({images}{fmt_energy(event.eval_energy_kwh)})"
            + (" · best so far" if event.best and not event.final else ""))
