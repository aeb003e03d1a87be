"""What a study cost and found: per-trial rows, totals, the pruning saving, the Pareto front, exports.

Pure functions of the study's trials (Optuna ``FrozenTrial``s); energy of a trial whose worker died
comes from the ledger through the ``ledger_energy`` collaborator.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from greendiff.display import ENERGY_UNITS, energy_text, fixed_point, plain_number, scale_for
from greendiff.tune._pruner import metric_text
from greendiff.tune._study import StudySpec, TrialRecord, exported_config


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    values: tuple[float, ...]  # (metric,) or (metric, training kWh); the last report for a pruned trial
    params: dict[str, Any]
    energy_kwh: float  # the trial's whole run, evaluations included
    eval_kwh: float
    emissions_kg: float
    steps: int | None
    note: str = ""  # stop or failure reason
    energy_source: str = "trial"  # trial | ledger (worker died) | none
    final: dict = field(default_factory=dict)
    base: bool = False  # the base config's own values (the study's first trial)
    pruned_after: int | None = None  # the evaluation after which the pruner stopped it; None: not pruned

    def to_dict(self) -> dict:
        """The row as ``tune --report --json`` writes it."""
        out = dataclasses.asdict(self)
        del out["pruned_after"]  # shown in the note; not one of the report's keys
        return out


def trial_rows(study, ledger_energy: Callable[[dict], tuple[float, float] | None] = lambda _: None) -> list[TrialRow]:
    """One row per trial. ``ledger_energy(ledger_attr) -> (kWh, kgCO2e)`` for trials without an
    outcome (their worker died mid-run): the ledger kept what was measured until then."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        if record is not None:
            energy, eval_kwh, kg, source = record.energy_kwh, record.eval_kwh, record.emissions_kg, "trial"
            steps, note = record.steps, record.stop_reason
        else:
            found = ledger_energy(t.user_attrs["ledger"]) if "ledger" in t.user_attrs else None
            energy, kg = found if found else (0.0, 0.0)
            eval_kwh, steps, note, source = 0.0, None, "", "ledger" if found else "none"
        note = t.user_attrs.get("fail_reason", note)
        if t.values is not None:
            values = tuple(t.values)
        elif t.intermediate_values:
            values = (t.intermediate_values[max(t.intermediate_values)],)
        else:
            values = ()
        rows.append(TrialRow(t.number, t.state.name, values, dict(t.params), energy, eval_kwh, kg, steps, note, source,
                             (record.final if record else None) or {}, bool(t.user_attrs.get("base")),
                             record.pruned_after if record else None))
    return rows


def budget_note(energy_kwh: float, budget_kwh: float) -> str:
    """How a trial's measured energy (its whole run: evaluations, the final checkpoint and export included)
    stands against its budget: the share used, or by how much it passed it.

    The overrun is in two significant digits, so a trial just past its budget never reads "over budget by 0%".

    Example:
        >>> budget_note(4.1e-5, 5e-5), budget_note(3.1e-4, 5e-5), budget_note(2.0082e-5, 2e-5)
        ('82% of the budget used', 'over budget by 520%', 'over budget by 0.41%')
    """
    ratio = energy_kwh / budget_kwh
    return f"over budget by {fixed_point((ratio - 1) * 100, 2)}%" if ratio > 1 else f"{ratio:.0%} of the budget used"


def trial_note(note: str, energy_kwh: float, budget_kwh: float, pruned_after: int | None = None) -> str:
    """A trial's short note: how it ended (pruned, stopped at the budget, or its stop or failure reason), with
    its measured energy against the budget (``budget_kwh`` > 0) for a trial that stopped at the budget or
    passed it, so a label never says "budget" where the measured energy says otherwise.

    Example:
        >>> trial_note("energy budget: 60.0 mWh used, the next step would pass 50.0 mWh", 3.1e-4, 5e-5)
        'stopped at the budget, over budget by 520%'
        >>> trial_note("pruned by the median pruner after evaluation 2", 2e-5, 5e-5, pruned_after=2)
        'pruned after evaluation 2'
    """
    over = budget_kwh > 0 and energy_kwh > budget_kwh
    if note.startswith(("energy budget", "carbon budget")):
        head = "stopped at the budget"
    elif pruned_after is not None:
        head = f"pruned after evaluation {pruned_after}"
    else:
        head = note if len(note) <= 60 else note[:57] + "..."
    if budget_kwh > 0 and (over or head == "stopped at the budget"):
        return f"{head}, {budget_note(energy_kwh, budget_kwh)}" if head else budget_note(energy_kwh, budget_kwh)
    return head


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Complete trials no other complete trial beats on both objectives, by increasing kWh."""
    done = [r for r in rows if r.state == "COMPLETE" and len(r.values) == 2]
    front = [r for r in done if not any(o.values[0] <= r.values[0] and o.values[1] <= r.values[1] and o.values != r.values
                                        for o in done)]
    return sorted(front, key=lambda r: (r.values[1], r.values[0]))


def best_row(spec: StudySpec, rows: list[TrialRow]) -> TrialRow | None:
    """Budget mode: the lowest metric among complete trials. Pareto mode: the lowest metric on the front."""
    candidates = pareto_front(rows) if spec.mode == "pareto" else [r for r in rows if r.state == "COMPLETE"]
    return min(candidates, key=lambda r: r.values[0], default=None)


@dataclass(frozen=True)
class StateTotals:
    """Trials in one state, and their energy and CO2e."""

    trials: int = 0
    energy_kwh: float = 0.0
    emissions_kg: float = 0.0


@dataclass(frozen=True)
class StudySummary:
    """Energy and CO2e of a whole search by trial state, what pruning saved, and what it found.

    Args:
        no_pruning_estimate_kwh: the search's energy had every pruned trial run to the end (None: no complete trial).
        pruning_saving_frac: the share of that estimate pruning saved.
        unmeasured_trials: trials with no energy on record here.
        pareto_front: trial numbers on the front (Pareto mode; None in budget mode).
    """

    trials: int
    by_state: dict[str, StateTotals]
    energy_kwh: float
    emissions_kg: float
    eval_kwh: float
    no_pruning_estimate_kwh: float | None
    pruning_saving_frac: float | None
    unmeasured_trials: list[int]
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    pareto_front: list[int] | None
    base_trial: int | None
    base_value: float | None

    def to_dict(self) -> dict:
        """The summary as ``tune --report --json`` writes it."""
        return dataclasses.asdict(self)


def summarize_study(spec: StudySpec, rows: list[TrialRow]) -> StudySummary:
    """Energy and CO2e of the whole search by trial state, and what pruning saved.

    The no-pruning estimate runs every pruned trial to the end: in budget mode a complete trial uses
    its budget plus a final evaluation, so each pruned trial is charged the mean energy of the
    complete ones instead of what it used."""
    by_state: dict[str, StateTotals] = {}
    for r in rows:
        s = by_state.get(r.state, StateTotals())
        by_state[r.state] = StateTotals(s.trials + 1, s.energy_kwh + r.energy_kwh, s.emissions_kg + r.emissions_kg)
    total_kwh = sum(r.energy_kwh for r in rows)
    complete = [r for r in rows if r.state == "COMPLETE"]
    pruned = [r for r in rows if r.state == "PRUNED"]
    mean_complete = sum(r.energy_kwh for r in complete) / len(complete) if complete else None
    without = None
    if mean_complete is not None:
        without = total_kwh - sum(r.energy_kwh for r in pruned) + mean_complete * len(pruned)
    best = best_row(spec, rows)
    base = next((r for r in rows if r.base and r.state == "COMPLETE"), None)
    return StudySummary(
        trials=len(rows), by_state=by_state, energy_kwh=total_kwh, emissions_kg=sum(r.emissions_kg for r in rows),
        eval_kwh=sum(r.eval_kwh for r in rows), no_pruning_estimate_kwh=without,
        pruning_saving_frac=(1 - total_kwh / without) if without else None,
        unmeasured_trials=[r.number for r in rows if r.energy_source == "none" and r.state not in ("WAITING",)],
        best_trial=best.number if best else None, best_value=best.values[0] if best else None,
        best_params=best.params if best else None,
        pareto_front=[r.number for r in pareto_front(rows)] if spec.mode == "pareto" else None,
        base_trial=base.number if base else None, base_value=base.values[0] if base else None)


def export_toml(spec: StudySpec, row: TrialRow, study_name: str, metric: str) -> str:
    """The trainer config of ``row`` as TOML ``greendiff train --config`` accepts, with a header
    saying where it came from (quantities as :mod:`greendiff.display` prints them)."""
    from greendiff.train import to_toml

    values = _decode_params(spec, row.params)
    config = exported_config(spec, values, row.steps)
    head = (f"# tuned by greendiff tune: study {study_name!r}, trial {row.number} ({spec.mode} mode)\n"
            f"# {metric} {metric_text(row.values[0])} with {energy_text(row.energy_kwh)}"
            + (f" (trial budget {energy_text(spec.trial_budget_kwh)}, {row.steps} steps)" if spec.mode == "budget" else "")
            + f"\n# train it: greendiff {'finetune' if config.finetune.enabled else 'train'} --config THIS_FILE\n")
    return head + to_toml(config)


def _decode_params(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored values -> trainer values (categorical lists were stored as "8,16")."""
    from greendiff.tune._space import _decode

    out = {}
    for p in spec.params:
        if p.key in params:
            out[p.key] = _decode(params[p.key], p.choices) if p.kind == "categorical" else params[p.key]
    return out


def pareto_svg(rows: list[TrialRow], metric: str, width: int = 560, height: int = 380) -> str:
    """A self-contained SVG: every complete trial (grey), the front (green, joined), the energy axis in the unit
    of its largest value (``training energy (mWh)``) and the metric, every number in fixed-point."""
    done = [r for r in rows if r.state == "COMPLETE" and len(r.values) == 2]
    front = pareto_front(rows)
    left, right, top, bottom = 70, 20, 20, 50
    xs = [r.values[1] for r in done] or [0.0, 1.0]
    ys = [r.values[0] for r in done] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1e-12), (y1 if y1 > y0 else y0 + 1e-12)
    unit, size = scale_for([x0, x1], ENERGY_UNITS)

    def px(r: TrialRow) -> tuple[float, float]:
        return (left + (r.values[1] - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (r.values[0] - y0) / (y1 - y0) * (height - top - bottom))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">training energy ({unit})</text>',
             f'<text x="16" y="{(top + height - bottom) / 2}" text-anchor="middle" transform="rotate(-90 16 {(top + height - bottom) / 2})">{html.escape(metric.upper())}</text>']
    for value, x in ((x0, left), (x1, width - right)):
        parts.append(f'<text x="{x}" y="{height - bottom + 16}" text-anchor="middle">{plain_number(value / size)}</text>')
    for value, y in ((y0, height - bottom), (y1, top)):
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{plain_number(value)}</text>')
    if len(front) > 1:
        parts.append('<polyline fill="none" stroke="#2e7d32" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in map(px, front)) + '"/>')
    on_front = {r.number for r in front}
    for r in done:
        x, y = px(r)
        color = "#2e7d32" if r.number in on_front else "#9e9e9e"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>trial {r.number}: '
                     f'{html.escape(metric)} {metric_text(r.values[0])}, {energy_text(r.values[1])}</title></circle>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
