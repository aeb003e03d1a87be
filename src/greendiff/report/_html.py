"""One self-contained HTML file: every chart inline SVG, every image a data URI, nothing fetched."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone

from greendiff import __version__
from greendiff.carbon import place_name
from greendiff.ledger import model_card_yaml
from greendiff.report._collect import RunData
from greendiff.display import ENERGY_UNITS, MASS_UNITS, band_text, duration_text, energy_text, fixed_point, mass_text, scale_for
from greendiff.report._statement import emissions_statement
from greendiff.report._svg import Series, bar_chart, line_chart, scatter_chart
from greendiff.tracking import RunSummary
from greendiff.units import G_PER_KG, joules_to_kwh

# Inline, before anything else runs: counts errors (script, resource, console.error), then checks every chart drew marks.
_CHECK = """<script>
document.documentElement.dataset.errors = "0";
function greendiffError() { var d = document.documentElement.dataset; d.errors = String(Number(d.errors) + 1); }
window.addEventListener("error", greendiffError, true);  /* script errors, and (capturing) resources that failed */
window.addEventListener("unhandledrejection", greendiffError);
(function (original) { console.error = function () { greendiffError(); original.apply(console, arguments); }; })(console.error);
window.addEventListener("DOMContentLoaded", function () {
  var charts = document.querySelectorAll("svg[data-chart]"), drawn = 0;
  charts.forEach(function (svg) {
    var box = svg.getBBox(), marks = svg.querySelectorAll("polyline, circle, rect:not([fill='white'])").length;
    if (box.width > 0 && box.height > 0 && marks > 0) { drawn += 1; }
  });
  document.documentElement.dataset.chartsTotal = String(charts.length);
  document.documentElement.dataset.chartsDrawn = String(drawn);
});
</script>"""

_CSS = """<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #212121; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #2e7d32; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.kpi { display: inline-block; margin: 0 2em 0.8em 0; } .kpi b { font-size: 1.5em; display: block; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } svg { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
blockquote { border-left: 4px solid #2e7d32; margin: 1em 0; padding: 0.5em 1em; background: #f1f8e9; }
.note { color: #616161; font-size: 0.9em; } .good { color: #2e7d32; } .bad { color: #c62828; }
img.samples { image-rendering: pixelated; width: 256px; border: 1px solid #ccc; }
@media print { h2 { break-before: page; } }
</style>"""


def _e(text: object) -> str:
    return html.escape(str(text))


_kwh, _kg = energy_text, mass_text  # the one formatter of human figures (fixed-point, scaled, unit printed)


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th class="{"num" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{c}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(runs: list[RunData], ignore: tuple[str, ...] = ("run.name", "run.output_dir")) -> list[tuple[str, list[str]]]:
    """Config keys whose values differ between the runs, with each run's value ("—" where absent)."""
    def shown(value: object) -> str:
        return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    flat = [flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f} - set(ignore))
    rows = [(k, [shown(f[k]) if k in f else "—" for f in flat]) for k in keys]
    return [(k, values) for k, values in rows if len(set(values)) > 1]


def pareto(points: list[tuple[str, float, float]]) -> list[str]:
    """Labels of the points no other point beats on both coordinates (both lower is better)."""
    return [a for a, x, y in points
            if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for b, x2, y2 in points if b != a)]


def final_metric(run: RunData, metric: str) -> float | None:
    evals = run.evaluations(metric)
    return evals[-1][1] if evals else None


def _saving(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "—"
    change = value / reference - 1
    return f'<span class="{"good" if change < 0 else "bad" if change > 0 else ""}">{change:+.1%}</span>'


#: Phases a recipe comparison leaves out: previews (``sample``) and evaluations (``eval``) run at a cadence the
#: user sets, not the recipe (greendiff's baseline previews 64 images every 500 steps, diffusers' script 16
#: every 10 epochs), so they would decide a comparison of recipes.
NOT_TRAINING_PHASES = ("sample", "eval")


def training_kwh(summary: RunSummary) -> float:
    """The run's energy without its previews and evaluations (:data:`NOT_TRAINING_PHASES`): the steps, plus
    setup, checkpoints and whatever fell outside any phase."""
    left_out_j = sum(p.energy_j for p in summary.phases if p.name in NOT_TRAINING_PHASES)
    return max(0.0, summary.energy_kwh - joules_to_kwh(left_out_j))


def comparison(runs: list[RunData], reference: RunData, metric: str) -> str:
    ref_fid, ref_train = final_metric(reference, metric), training_kwh(reference.summary)
    rows = []
    for r in runs:
        s, trained = r.summary, training_kwh(r.summary)
        fid = final_metric(r, metric)
        rows.append([_e(r.label) + (" (reference)" if r is reference else ""), _e(r.dataset), _e(r.record.kind),
                     _kwh(s.energy_kwh), _kwh(trained), _kg(s.emissions_kg), "—" if fid is None else f"{fid:.4g}",
                     _saving(s.energy_kwh, reference.summary.energy_kwh), _saving(trained, ref_train),
                     _saving(s.emissions_kg, reference.summary.emissions_kg), _saving(fid, ref_fid)])
    parts = ["<h2>Comparison</h2>",
             f'<p class="note">Changes are against {_e(reference.label)}; lower is better for energy, CO2e and '
             f"{_e(metric.upper())}. <b>Training</b> energy leaves out previews and evaluations, whose cadence is a "
             "setting rather than the recipe (greendiff's baseline previews 64 images every 500 steps, diffusers' "
             "script 16 every 10 epochs): compare recipes on it.</p>",
             _table(["run", "data", "kind", "energy", "training energy", "CO2e", metric.upper(), "energy vs ref",
                     "training vs ref", "CO2e vs ref", f"{metric.upper()} vs ref"], rows, set(range(3, 11)))]
    curves = [Series(r.label, [x for x, _ in r.evaluations(metric)], [y for _, y in r.evaluations(metric)])
              for r in runs if r.evaluations(metric)]
    charts = []
    if curves:
        charts.append(line_chart(curves, f"{metric.upper()} against energy", "energy used (kWh)", metric.upper(),
                                 markers=True, y_from_zero=False))
    points = [(r.label, r.summary.emissions_kg, final_metric(r, metric)) for r in runs if final_metric(r, metric) is not None]
    if points:
        unit, size = scale_for([kg for _, kg, _ in points], MASS_UNITS)
        charts.append(scatter_chart([(label, kg / size, y) for label, kg, y in points],
                                    f"Pareto: final {metric.upper()} against emissions", f"{unit} CO2e",
                                    metric.upper(), highlight=pareto(points)))
    if charts:
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
    differences = config_differences(runs)
    parts.append("<h3>Config differences</h3>")
    if differences:
        parts.append(_table(["key", *[r.label for r in runs]], [[_e(k), *map(_e, values)] for k, values in differences]))
    else:
        parts.append("<p>The runs' configs are the same.</p>")
    return "\n".join(parts)


def run_section(run: RunData, metric: str) -> str:
    s = run.summary
    parts = [f'<h2 id="run-{run.record.id}">{_e(run.label)}</h2>',
             f'<p class="note">{_e(run.record.kind)} · {_e(s.status)} · started {_e(s.started)} UTC · '
             f'{s.duration_s:.1f} s · {_e(run.record.command)}</p>',
             *([f'<p class="note">{_e(segments)}</p>'] if (segments := run.segments and run.segments.note()) else []),
             f'<div class="kpi">energy<b>{_kwh(s.energy_kwh)}</b>'
             f'{band_text(s.energy_kwh_low, s.energy_kwh_high, ENERGY_UNITS, s.energy_kwh)}</div>',
             f'<div class="kpi">emissions<b>{_kg(s.emissions_kg)} CO2e</b>'
             f'{band_text(s.emissions_kg_low, s.emissions_kg_high, MASS_UNITS, s.emissions_kg)}</div>',
             f'<div class="kpi">grid intensity<b>{s.intensity.mean_g_per_kwh:.0f} g/kWh</b>{_e(s.intensity.resolution or s.intensity.kind)}</div>',
             f'<div class="kpi">PUE<b>{s.pue.value:.2f}</b>&nbsp;</div>']
    charts = []
    if run.power_w:
        charts.append(line_chart([Series(k, [t for t, _ in v], [w for _, w in v]) for k, v in run.power_w.items()],
                                 "Power per device", "minutes since start", "W", step=True))
    if run.intensity:
        charts.append(line_chart([Series("grid", [t for t, _ in run.intensity], [g for _, g in run.intensity])],
                                 "Grid intensity", "minutes since start", "gCO2e/kWh", step=True))
    charts += _emission_bars(s)
    if run.losses():
        charts.append(line_chart([Series("loss", [x for x, _ in run.losses()], [y for _, y in run.losses()])],
                                 "Loss against energy", "energy used (kWh)", "loss", y_from_zero=False))
    if run.evaluations(metric):
        evals = run.evaluations(metric)
        charts.append(line_chart([Series(metric, [x for x, _ in evals], [y for _, y in evals])],
                                 f"{metric.upper()} against energy", "energy used (kWh)", metric.upper(), markers=True,
                                 y_from_zero=False))
    parts.append('<div class="charts">' + "".join(charts) + "</div>")
    if run.intensity_note:
        parts.append(f'<p class="note">Intensity: {_e(run.intensity_note)}</p>')
    if run.sample_png:
        data = base64.b64encode(run.sample_png).decode()
        parts.append(f'<h3>Samples ({_e(run.sample_name)})</h3><img class="samples" alt="sample grid" '
                     f'src="data:image/png;base64,{data}">')
    ca = run.carbon_aware
    if ca:
        parts.append("<h3>Carbon-aware training</h3>" + _table(["", "value"], [
            ["policy", _e(ca["policy"])], ["pauses", str(ca["pauses"])], ["waited", duration_text(ca["waited_h"] * 3600)],
            ["emissions as run", _kg(ca["emissions_g"] / G_PER_KG)], ["straight through", _kg(ca["straight_through_g"] / G_PER_KG)],
            ["saved", _carbon_aware_saving(ca)],
            ["deadline", _e(ca["deadline"] or "none") + ("" if ca["met_deadline"] is None else " (met)" if ca["met_deadline"] else " (MISSED)")]]))
    parts.append("<h3>Assumptions and sources</h3>" + _table(["what", "value", "source"], _assumption_rows(s)))
    parts.append("<h3>Emissions statement</h3><blockquote>" + _e(emissions_statement(s)) + "</blockquote>")
    parts.append("<h3>Model card (Hugging Face <code>co2_eq_emissions</code>)</h3><pre>" + _e(model_card_yaml(s.to_dict())) + "</pre>")
    if run.config_text:
        parts.append("<h3>Resolved config</h3><pre>" + _e(run.config_text) + "</pre>")
    return "\n".join(parts)


def _emission_bars(s: RunSummary) -> list[str]:
    """Emissions by device and by phase (with what fell outside any phase), in one unit scaled to the run."""
    unit, size = scale_for([s.emissions_kg], MASS_UNITS)
    devices = [(d.key, d.emissions_g / G_PER_KG) for d in s.devices]
    charts = [bar_chart([k for k, _ in devices], [kg / size for _, kg in devices], "Emissions by device", f"{unit} CO2e")]
    phases = [(p.name, p.emissions_g / G_PER_KG) for p in s.phases]
    rest = s.emissions_kg - sum(kg for _, kg in phases)
    if phases and rest > 1e-12:
        phases.append(("outside phases (setup, idle)", rest))
    if phases:
        charts.append(bar_chart([k for k, _ in phases], [kg / size for _, kg in phases], "Emissions by phase", f"{unit} CO2e"))
    return charts


def _assumption_rows(s: RunSummary) -> list[list[str]]:
    codes = ", ".join(f"{k} {v}" for k, v in (s.location or {}).items() if v)
    rows = [["location", _e(place_name(s.location) or "unknown"), _e(codes)],
            ["grid intensity", f'{s.intensity.mean_g_per_kwh:.1f} gCO2e/kWh', _e(s.intensity.source)],
            ["PUE", f'{s.pue.value:.2f}', _e(s.pue.source)]]
    for d in s.devices:
        rows.append([f"energy of {_e(d.key)}", f"{_kwh(d.energy_kwh)} ± {d.uncertainty_frac:.0%}",
                     _e(f"{d.name}: {d.method}" + (f" ({d.note})" if d.note else ""))])
    rows += [["uncertainty", "", _e(s.uncertainty or "")]]
    rows += [["note", "", _e(n)] for n in [*s.notes, *s.intensity.notes]]
    return rows


def build_report(runs: list[RunData], reference: RunData | None = None, metric: str = "fid",
                 title: str = "greendiff report") -> str:
    """The whole page: a comparison (when there are several runs), then a section per run."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    contents = "".join(f'<li><a href="#run-{r.record.id}">{_e(r.label)}</a> — {_e(r.dataset)}</li>' for r in runs)
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="note">{len(runs)} run{"s" if len(runs) != 1 else ""} · made {now} by greendiff {__version__} · '
            "self-contained: opens offline</p>", f"<ul>{contents}</ul>"]
    if len(runs) > 1:
        body.append(comparison(runs, reference or runs[0], metric))
    body += [run_section(r, metric) for r in runs]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title>{_CHECK}{_CSS}</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _carbon_aware_saving(books: dict) -> str:
    """The carbon-aware saving as a person reads it; a run that never paused saved nothing (it ran straight
    through), whatever rounding left in the books."""
    if not books["pauses"]:
        return "none: no pause, the run went straight through"
    return f"{_kg(books['saved_g'] / G_PER_KG)} ({fixed_point(books['saved_frac'] * 100)} %)"
