"""The CLI's :class:`greendiff.workflows.Progress`: rich bars and one-line notes on a console."""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from greendiff.cli._render import fmt_duration, fmt_energy, fmt_mass, plain
from greendiff.display import plain_number
from greendiff.workflows._progress import Advance, ProgressEvent, SegmentStart, TimestepDone

_STYLES = {"warning": "yellow"}
_PHASES = {"eval": "evaluation", "wait": "paused"}  # a PhaseProgress's row label
_SEP = " · "  # between the fields of a row's info text
_BAR_MIN, _BAR_MAX = 10, 40  # a bar's width in cells: a sixth of the console, within these
_TIME_W = 8  # the time-remaining column: "-:--:--", "0:05:00", up to "99:59:59"
_LOG_PRIORITY = (0, 2, 3, 1, 4)  # a LogEvent's fields kept when narrow: loss, energy, CO2e, then img/s, projection


class RichProgress:
    """A bar per training segment (loss, images/s, energy, CO2e and the projected energy) or Taylor pass; a row
    under it while an in-training evaluation samples or a carbon-aware pause waits; a line per evaluation (its
    scores) and per pause (why, until when; how long it waited); the trainer's start record as a line about the
    model; notes as plain lines. Each row fits the console: its label, count and a bar always show, and the text
    beside them keeps its most important fields that fit (:func:`fit_fields`)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task = None
        self._total = self._done = 0
        self._phases: dict[str, object] = {}  # PhaseProgress rows shown now, by phase
        self._rows: dict[object, _Row] = {}  # every row's label, count and info fields, by task

    def on_start(self, label: str, total: int) -> None:
        self._bar = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), TextColumn("{task.fields[count]}"),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                             transient=label == "taylor")
        self._task = self._bar.add_task(label, total=total, info="", count=f"0/{total}")
        self._total, self._done, self._phases = total, 0, {}
        self._rows = {self._task: _Row(label, f"0/{total}")}
        self._fit()
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
            self._bar.update(self._task, completed=event.step)
            self._show(self._task, f"{event.step}/{self._total}", log_fields(event), _LOG_PRIORITY)

    def _advance(self, units: int, info: str) -> None:
        if self._bar is not None:
            self._done += units
            self._bar.update(self._task, completed=self._done)
            self._show(self._task, f"{self._done}/{self._total}", tuple(info.split(_SEP)) if info else None)

    def _log_info(self, event) -> str:
        """The bar's whole text for a LogEvent, as wide as it is (:func:`log_fields`)."""
        return _SEP.join(log_fields(event))

    def _show(self, task, count: str, fields: tuple[str, ...] | None = None, priority: tuple[int, ...] | None = None) -> None:
        """Set a row's count and info fields (``None``: keep them; ``priority``: see :func:`fit_fields`), then fit
        every row to the console."""
        row = self._rows[task]
        row.count = count
        if fields is not None:
            row.fields, row.priority = fields, priority
        self._fit()

    def _fit(self) -> None:
        """Every row's info text cut to the width its label, bar, count and time columns leave (the widest of
        each over the rows, as the table lays them out), so rich never shortens a label or a count."""
        width = self.console.width
        bar_w = max(_BAR_MIN, min(_BAR_MAX, width // 6))
        fixed = (max(cell_len(r.label) for r in self._rows.values()) + max(cell_len(r.count) for r in self._rows.values())
                 + bar_w + _TIME_W + 4)  # four one-cell gaps between the five columns
        self._bar.columns[1].bar_width = bar_w
        for task, row in self._rows.items():
            self._bar.update(task, count=row.count, info=fit_fields(row.fields, width - fixed, row.priority))

    def _phase(self, event) -> None:
        """A row under the bar for an evaluation's sampling or a pause's waiting, removed when it is done."""
        if self._bar is None:
            return
        if event.phase not in self._phases:
            label = _PHASES.get(event.phase, event.phase)
            self._phases[event.phase] = task = self._bar.add_task(label, total=event.total or None, info="", count="")
            self._rows[task] = _Row(label, "")
        count = (f"{fmt_duration(event.done)}/{fmt_duration(event.total)}" if event.phase == "wait"
                 else f"{event.done:.0f}/{event.total:.0f}")
        self._bar.update(self._phases[event.phase], completed=event.done, total=event.total or None)
        self._show(self._phases[event.phase], count, tuple(event.info.split(_SEP)) if event.info else ())

    def _end_phase(self, phase: str) -> None:
        task = self._phases.pop(phase, None)
        if task is not None and self._bar is not None:
            self._bar.remove_task(task)
            del self._rows[task]
            self._fit()

    def _header(self, start: SegmentStart) -> None:
        console = self._bar.console if self._bar is not None else self.console
        e = start.event
        console.print(plain(
            f"{e.model or 'UNet ' + start.preset}: {e.params:,} parameters, {e.macs_per_image / 1e6:.1f} M MACs "
            f"per image · precision {e.precision} ({e.precision_reason}) on {e.device} · {e.dataset}"), highlight=False)
        if e.processes > 1:
            console.print(f"{e.processes} processes: effective batch {e.effective_batch_size} "
                          f"({start.batch_size} per process), lr {plain_number(e.lr)} (scaling {e.lr_scaling})", highlight=False)


@dataclass
class _Row:
    """What one bar row shows: its ``label``, its ``count`` ("20/400") and its info ``fields`` in their order on
    screen, with their ``priority`` (:func:`fit_fields`)."""

    label: str
    count: str
    fields: tuple[str, ...] = ()
    priority: tuple[int, ...] | None = None


def log_fields(event) -> tuple[str, ...]:
    """A :class:`~greendiff.train.LogEvent`'s figures for the bar: loss, images/s, energy so far, CO2e so far, the
    projected energy (kept in a narrow console in the order :data:`_LOG_PRIORITY`). A rate or projection that
    includes the segment's first step (warm-up) says so.

    Example:
        >>> from greendiff.train import LogEvent
        >>> log_fields(LogEvent(20, 0.82814, 1e-4, 159.2, 5.29e-6, 2.96e-7, None, warmup=True,
        ...                     projected_energy_kwh=2.6e-4))
        ('loss 0.8281', '159 img/s incl. warm-up', '5.29 mWh', '0.296 mg CO2e', 'projected 260 mWh')
    """
    rate = f"{event.samples_per_s:.0f} img/s" + (" incl. warm-up" if event.warmup else "")
    projected = () if event.projected_energy_kwh is None else (
        f"projected {fmt_energy(event.projected_energy_kwh)}" + (" incl. warm-up" if event.projected_with_warmup else ""),)
    return (f"loss {event.loss:.4f}", rate, fmt_energy(event.energy_kwh), f"{fmt_mass(event.emissions_kg)} CO2e",
            *projected)


def fit_fields(fields: tuple[str, ...], width: int, priority: tuple[int, ...] | None = None) -> str:
    """``fields`` joined by " · " in ``width`` cells: the most important that fit (``priority``: their indices,
    most important first; ``None``: first to last), shown in their own order. A most important field too wide on
    its own is cut after its last whole word that fits, with "…" (never mid-word).

    Example:
        >>> fit_fields(("loss 0.8281", "159 img/s", "5.29 mWh"), 24, priority=(0, 2, 1))
        'loss 0.8281 · 5.29 mWh'
        >>> fit_fields(("paused for a cleaner grid",), 18)
        'paused for a…'
    """
    order = [i for i in (range(len(fields)) if priority is None else priority) if i < len(fields)]
    kept: list[int] = []
    for i in order:
        if cell_len(_SEP.join(fields[j] for j in sorted([*kept, i]))) > width:
            break
        kept.append(i)
    if kept or not order:
        return _SEP.join(fields[j] for j in sorted(kept))
    words = fields[order[0]].split(" ")
    while words and cell_len(" ".join(words) + "…") > width:
        words.pop()
    return " ".join(words) + "…" if words else ""


def evaluation_line(event) -> str:
    """One line for an in-training evaluation (:class:`~greendiff.train.EvalEvent`): its step, FID, KID, class
    accuracy, a fine-tune's validation loss and CLIP score (those it has), its own energy, and whether it is the best so far or the closing one.

    Example:
        >>> from greendiff.train import EvalEvent
        >>> evaluation_line(EvalEvent(40, 2e-3, 1.5e-4, {"fid": 31.237, "kid": 0.02134, "n": 500}, best=True))
        'evaluation at step 40: FID 31.24 · KID 0.0213 (500 images, 150 mWh) · best so far'
    """
    scores = event.scores
    parts = [f"{label} {scores[key]:{spec}}" for key, label, spec in
             (("fid", "FID", ".2f"), ("kid", "KID", ".4f"), ("class_accuracy", "class accuracy", ".1%"),
              ("val_loss", "validation loss", ".5f"), ("clip_score", "CLIP score", ".2f")) if key in scores]
    images = f"{scores['n']} images, " if "n" in scores else ""
    which = "closing evaluation" if event.final else "evaluation"
    return (f"{which} at step {event.step}: {' · '.join(parts) or 'no scores'} ({images}{fmt_energy(event.eval_energy_kwh)})"
            + (" · best so far" if event.best and not event.final else ""))
