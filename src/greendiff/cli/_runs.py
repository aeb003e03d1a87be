"""``greendiff runs list|show|export``: read the ledger."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.table import Table

from greendiff.cli._options import (
    COUNT, RUN_ID, LedgerPath, check_output, name_option, number_argument, number_option,
)
from greendiff.cli._render import fmt_energy, fmt_mass, plain, render_summary
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.ledger import Ledger, codecarbon_csv, flat_csv, json_summary, model_card_yaml
from greendiff.tracking import RunSummary, run_summary

logger = logging.getLogger(__name__)

runs_app = typer.Typer(help="List, show and export tracked runs.", no_args_is_help=True)


@runs_app.command("list")
def list_runs(
    limit: Annotated[int, number_option("--limit", "-n", bounds=COUNT, help="Show the newest N runs.")] = 20,
    ledger: LedgerPath = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Table of recent runs: status, duration, energy and CO2e."""
    if limit <= 0:
        raise UserInputError(f"--limit must be a positive number of runs, got {limit}")
    db = Ledger(ledger)
    rows = [(r, _listed_summary(db, r)) for r in db.list_runs(limit)]
    if as_json:
        typer.echo(json.dumps([{**{k: v for k, v in dataclasses.asdict(r).items() if k != "summary"},
                                "energy_kwh": s.energy_kwh if s else None,
                                "emissions_kg": s.emissions_kg if s else None} for r, s in rows], indent=2))
        return
    table = Table(title=plain(f"ledger {db.path}"), title_justify="left")
    for col in ("id", "name", "kind", "status", "started (UTC)", "duration", "energy", "CO2e", "methods"):
        table.add_column(col, justify="right" if col in ("id", "duration", "energy", "CO2e") else "left")
    for r, s in rows:
        figures = ([(s.started or "")[:19].replace("T", " "), f"{s.duration_s:.1f} s", fmt_energy(s.energy_kwh),
                    fmt_mass(s.emissions_kg), ", ".join(s.methods)] if s else ["", "", "?", "?", ""])
        table.add_row(str(r.id), plain(r.name), plain(r.kind), plain(r.status), *map(plain, figures))
    Console().print(table)


def _listed_summary(db: Ledger, record) -> RunSummary | None:
    """A run's summary for the list; a run that cannot be summarised at all is listed without figures,
    with a warning (a ledger always lists)."""
    try:
        return run_summary(db, record)
    except Exception as exc:  # noqa: BLE001 - one run's failure must not hide the others
        logger.warning("ledger run %s (%s): cannot be summarised (%s); listed without figures", record.id, record.name, exc)
        return None


@runs_app.command("show")
def show_run(
    run_id: Annotated[int, number_argument("run id", RUN_ID, help="Run id (see 'greendiff runs list').")],
    ledger: LedgerPath = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full summary as JSON.")] = False,
) -> None:
    """Energy per device and phase, CO2e, and every assumption of one run."""
    db = Ledger(ledger)
    summary = run_summary(db, db.get_run(run_id))
    if as_json:
        typer.echo(json_summary(summary.to_dict()))
    else:
        render_summary(summary, Console())


@runs_app.command("export")
def export_run(
    run_ids: Annotated[list[int], number_argument("run id", RUN_ID, help="Run ids (see 'greendiff runs list'); one or more.", show_default=False)],
    fmt: Annotated[Literal["codecarbon", "csv", "json", "model-card"], typer.Option("--format", "-f",
                   help="codecarbon (emissions.csv rows), csv (one flat row per run: totals, bands, sources, devices, "
                        "phases), json (full summaries), model-card (HF co2_eq_emissions YAML, one run).")] = "json",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    training_type: Annotated[str, name_option("--training-type", path=False, help="For model-card: pre-training or fine-tuning.")] = "pre-training",
    ledger: LedgerPath = None,
) -> None:
    """Export runs as CodeCarbon emissions.csv rows, a flat CSV, JSON, or a model-card YAML block."""
    db = Ledger(ledger)
    summaries = [run_summary(db, db.get_run(run_id)).to_dict() for run_id in run_ids]  # exports read the stored form
    if fmt == "model-card" and len(summaries) > 1:
        raise UserInputError("a model card describes one run: give one run id with -f model-card")
    if output is not None:
        check_output(output)
    append = fmt == "codecarbon" and output is not None and output.exists()
    if fmt == "codecarbon":
        text = "".join(codecarbon_csv(s, header=not append and i == 0) for i, s in enumerate(summaries))
    elif fmt == "csv":
        text = flat_csv(summaries)
    elif fmt == "model-card":
        text = model_card_yaml(summaries[0], training_type)
    else:
        text = (json_summary(summaries[0]) if len(summaries) == 1 else json.dumps(summaries, indent=2, sort_keys=True)) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        if append:  # a CodeCarbon file grows by rows, as CodeCarbon's own writer does
            with output.open("a") as f:
                f.write(text)
        else:
            atomic_write_text(output, text)
    except OSError as exc:
        raise UserInputError(f"cannot write {output}: {exc.strerror}") from None
    typer.echo(f"wrote {output}", err=True)
