"""``greendiff runs list|show|export``: read the ledger. A run is named by its ledger id or its run directory."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional, get_args

import typer
from rich.console import Console

from greendiff.cli._options import COUNT, LedgerPath, check_output, name_option, number_option
from greendiff.cli._render import fmt_energy, fmt_mass, plain, render_summary, table
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.display import duration_text
from greendiff.ledger import (
    TRAINING_TYPES, Ledger, append_codecarbon_csv, codecarbon_csv, flat_csv, model_card_markdown, model_card_yaml,
)
from greendiff.tracking import RunSummary, public_json, run_summary

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

runs_app = typer.Typer(help="List, show and export tracked runs.", no_args_is_help=True)

RUN_HELP = "A ledger id (see 'greendiff runs list') or a run directory."
#: Below this many columns, ``runs list`` shows the essential columns only (kind and methods go).
WIDE_COLUMNS = 120


def _summaries(refs: Sequence[str], db: Ledger, console: Console) -> list[RunSummary]:
    """The summaries of the runs ``refs`` name (``greendiff.report.run_segments``): a run directory is the whole
    run (its segments combined), a ledger id that ledger run. What each covers, when more than one ledger run is
    concerned, goes to ``console`` ("2 segments (ledger runs 7, 8)")."""
    from greendiff.report import run_segments  # torch: imported when a run is read, not for --help

    out = []
    for ref in refs:
        segments = run_segments(ref, db)
        note = segments.note()
        if note is not None:
            console.print(plain(f"{ref}: {note}"), highlight=False)
        out.append(segments.summary(db))
    return out


@runs_app.command("list")
def list_runs(
    limit: Annotated[int, number_option("--limit", "-n", bounds=COUNT, help="Show the newest N runs.")] = 20,
    ledger: LedgerPath = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (energy in kWh, CO2e in kg).")] = False,
) -> None:
    """Table of recent runs: status, start, duration, energy and CO2e (kind and methods on wide terminals)."""
    if limit <= 0:
        raise UserInputError(f"--limit must be a positive number of runs, got {limit}")
    db = Ledger(ledger)
    rows = [(r, _listed_summary(db, r)) for r in db.list_runs(limit)]
    if as_json:
        typer.echo(json.dumps([{**{k: v for k, v in dataclasses.asdict(r).items() if k != "summary"},
                                "energy_kwh": s.energy_kwh if s else None,
                                "emissions_kg": s.emissions_kg if s else None} for r, s in rows], indent=2))
        return
    console = Console()
    wide = console.width >= WIDE_COLUMNS
    started_col = "started (UTC)" if wide else "started"  # narrow: the day only, so that names keep their room
    columns = ("id", "name", *(("kind",) if wide else ()), "status", started_col, "time", "energy", "CO2e",
               *(("methods",) if wide else ()))
    listing = table(*columns, title=plain(f"ledger {db.path}"), figures=("id", started_col, "time", "energy", "CO2e"),
                    words=("status",))
    for r, s in rows:
        started = (s.started or "")[:16 if wide else 10].replace("T", " ") if s else ""
        figures = [duration_text(s.duration_s), fmt_energy(s.energy_kwh), fmt_mass(s.emissions_kg)] if s else ["", "?", "?"]
        cells = [str(r.id), plain(r.name), *([plain(r.kind)] if wide else []), plain(r.status), started, *figures,
                 *([plain(", ".join(s.methods) if s else "")] if wide else [])]
        listing.add_row(*cells)
    console.print(listing)


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
    run: Annotated[str, typer.Argument(metavar="RUN", help=RUN_HELP, show_default=False)],
    ledger: LedgerPath = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full summary as JSON (energy in kWh, CO2e in kg).")] = False,
) -> None:
    """Energy per device and phase, CO2e, and every assumption of one run."""
    db = Ledger(ledger)
    console = Console()
    (summary,) = _summaries([run], db, Console(stderr=True) if as_json else console)
    if as_json:
        typer.echo(public_json(summary))
    else:
        render_summary(summary, console)


Format = Literal["codecarbon", "csv", "json", "model-card", "statement"]
FORMATS: tuple[str, ...] = get_args(Format)


#: Files ``-f model-card`` writes a whole model card to (metadata between ``---`` fences, then a body);
#: to stdout or a YAML file it writes the metadata block alone.
CARD_SUFFIXES, YAML_SUFFIXES = (".md", ".markdown"), (".yaml", ".yml")


def export_text(fmt: Format, summaries: list[RunSummary], training_type: str, card: bool = False) -> str:
    """The text of an export of ``summaries`` in ``fmt`` (the tools' schemas read the stored form; JSON is
    :func:`greendiff.tracking.public_json`, one object for one run, a list for several). ``card``: a model
    card as the Hub's tools load it (a README.md with the emissions statement as its body), not its YAML alone."""
    if fmt in ("model-card", "statement") and len(summaries) > 1:
        raise UserInputError(f"-f {fmt} describes one run: give one run")
    stored = [s.to_dict() for s in summaries]
    if fmt == "codecarbon":
        return codecarbon_csv(stored)
    if fmt == "csv":
        return flat_csv(stored)
    from greendiff.report import emissions_statement

    if fmt == "model-card":
        if not card:
            return model_card_yaml(stored[0], training_type)
        body = f"# {summaries[0].name}\n\n## Environmental impact\n\n{emissions_statement(summaries[0])}\n"
        return model_card_markdown(stored[0], training_type, body)
    if fmt == "statement":
        return emissions_statement(summaries[0]) + "\n"
    return public_json(summaries[0] if len(summaries) == 1 else summaries) + "\n"


@runs_app.command("export")
def export_run(
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help=f"{RUN_HELP} One or more.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT",
                   help="codecarbon (emissions.csv rows), csv (one flat row per run: totals, bands, sources, devices, "
                        "phases), json (full summaries), model-card (one run: a card the Hub loads to a .md file, "
                        "its YAML metadata to stdout or a .yaml file), statement (a paragraph for a paper, one "
                        "run).")] = "json",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    training_type: Annotated[str, name_option("--training-type", path=False,
                             help=f"For model-card: {' or '.join(TRAINING_TYPES)}.")] = "pre-training",
    ledger: LedgerPath = None,
) -> None:
    """Export runs as CodeCarbon emissions.csv rows, a flat CSV, JSON, a model-card block or a statement."""
    if fmt not in FORMATS:
        raise UserInputError(f"-f/--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    card = output is not None and output.suffix.lower() in CARD_SUFFIXES
    if fmt == "model-card" and output is not None and output.suffix.lower() not in (*CARD_SUFFIXES, *YAML_SUFFIXES):
        raise UserInputError(f"--output for -f model-card must end in .md (a model card the Hub loads) or .yaml "
                             f"(its metadata block alone), got {output}")
    if output is not None:
        check_output(output)
    db = Ledger(ledger)
    summaries = _summaries(runs, db, Console(stderr=True))
    text = export_text(fmt, summaries, training_type, card and fmt == "model-card")
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        backup = (append_codecarbon_csv(output, [s.to_dict() for s in summaries]) if fmt == "codecarbon"
                  else atomic_write_text(output, text))
    except OSError as exc:
        raise UserInputError(f"cannot write {output}: {exc.strerror}") from None
    if backup is not None:  # as CodeCarbon does with a file of another format
        typer.echo(f"{output} has other columns than CodeCarbon's: moved to {backup}", err=True)
    typer.echo(f"wrote {output}", err=True)
