"""``greendiff report RUN [RUN...] -o report.html``: one self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from greendiff.cli._options import LedgerPath, check_output
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text

Opt = typer.Option


def report_command(
    runs: Annotated[list[str], typer.Argument(help="Ledger ids (see 'greendiff runs list') or run directories.", show_default=False)],
    output: Annotated[Path, Opt("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    reference: Annotated[Optional[str], Opt("--reference", help="The run the others are compared with (default: the first).")] = None,
    metric: Annotated[str, Opt("--metric", help="Quality metric of the evaluations: fid or kid.")] = "fid",
    title: Annotated[str, Opt("--title", help="Page title.")] = "greendiff report",
    force: Annotated[bool, Opt("--force", help="Compare runs of different datasets anyway.")] = False,
    ledger: LedgerPath = None,
) -> None:
    """One self-contained HTML report: per run, energy and power per device, grid intensity, emissions by
    device and phase, every assumption, loss and quality against kWh, samples, config; across runs, quality
    against kWh, a Pareto chart, savings against a reference and the config differences; an emissions
    statement and the model-card YAML."""
    from greendiff.ledger import Ledger
    from greendiff.report import build_report, collect

    if metric not in ("fid", "kid"):
        raise UserInputError(f"--metric must be fid or kid, got {metric!r}")
    check_output(output, (".html", ".htm"))
    db = Ledger(ledger)
    data = [collect(ref, db) for ref in runs]
    if len({i for d in data for i in d.ledger_ids}) < sum(len(d.ledger_ids) for d in data):
        raise UserInputError("the same run is given twice")
    console = Console(stderr=True)
    datasets = {d.dataset for d in data if d.dataset}
    if len(datasets) > 1:
        message = "the runs use different data (" + "; ".join(f"{d.label}: {d.dataset}" for d in data) + ")"
        if not force:
            raise UserInputError(message + "; their quality does not compare. Use --force to report them together")
        console.print(f"warning: {message}; compared anyway (--force)", style="yellow", highlight=False)
    chosen = data[0]
    if reference is not None:
        ref = collect(reference, db)
        matches = [d for d in data if d.ledger_ids == ref.ledger_ids]
        if not matches:
            raise UserInputError(f"--reference {reference} is not one of the runs reported")
        chosen = matches[0]
    page = build_report(data, chosen, metric, title)
    try:
        atomic_write_text(output, page)
    except OSError as exc:
        raise UserInputError(f"cannot write {output}: {exc.strerror}") from None
    console.print(f"wrote {output} ({len(page) / 1024:.0f} KiB, {len(data)} run{'s' if len(data) != 1 else ''}); "
                  "open it in any browser, offline", highlight=False)
