"""The ``greendiff`` command: typer app, and the one place user errors become exit code 2."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
from collections.abc import Mapping

import typer

from greendiff import __version__
from greendiff.cli._compress import distill_command, distill_steps_command, prune_command
from greendiff.cli._demo import demo
from greendiff.cli._eval import eval_command
from greendiff.cli._hardware import hardware_command
from greendiff.cli._measure import measure
from greendiff.cli._options import _UsageError
from greendiff.cli._plan import plan_app, profile_command
from greendiff.cli._render import note_line
from greendiff.cli._report import report_command
from greendiff.cli._runs import runs_app
from greendiff.cli._finetune import finetune_command
from greendiff.cli._train import sample_command, train_command
from greendiff.cli._tune import tune_command
from greendiff.cli._vae import vae_app
from greendiff.errors import UserInputError
from greendiff.workflows import Interrupted

# typer >= 0.20 vendors click; take its exception classes from typer's own hierarchy (_UsageError: _options).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

# typer >= 0.29 prints each option's Python annotation as its value type: "<bool>" after on/off flags (which
# take no value), "<str>", "<path>", "<list[str]>". Flags show none; other values a name as click's own help
# does (TEXT, PATH, INTEGER, NUMBER, ...), unless the option names its own metavar (FILE, RUN, KEY=VAL).
_TYPE_NAMES = {"str": "TEXT", "path": "PATH", "int": "INTEGER", "float": "NUMBER", "datetime": "TIME", "time": "TIME"}
_annotation_type = typer.core._TyperParameter.display_type
_option_type = typer.core.TyperOption.display_type_rich


def _type_name(self, ctx):
    label = _annotation_type(self, ctx).strip("<>")
    many = label.startswith("list[") and label.endswith("]")
    label = label[5:-1] if many else label
    name = _TYPE_NAMES.get(label, f"[{label}]" if "|" in label else label.upper())
    return name + ("..." if many else "")


def _flag_shows_no_type(self, ctx):
    return None if getattr(self, "is_flag", False) and not self.metavar else _option_type(self, ctx)


typer.core._TyperParameter.display_type = _type_name
typer.core.TyperOption.display_type_rich = _flag_shows_no_type

app = typer.Typer(
    name="greendiff",
    help="Train diffusion models with a fraction of the energy and carbon, and prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("measure", help="Run any command and record its energy and CO2e in the ledger.",
            context_settings={"allow_interspersed_args": False})(measure)
app.command("train", help="Train a diffusion model with the green recipe (or the baseline), energy per phase.")(train_command)
app.command("finetune", help="Fine-tune a local text-to-image pipeline (LoRA, DreamBooth or full), energy per phase.")(finetune_command)
app.command("sample", help="Sample images from a trained run's EMA weights, with their energy.")(sample_command)
app.command("eval", help="Score a trained run with FID, KID, precision/recall (offline); energy measured.")(eval_command)
app.command("prune", help="Prune a trained model's channels (Diff-Pruning), fine-tune it, compare with the parent.")(prune_command)
app.command("distill", help="Train a smaller student from a teacher (knowledge distillation), teacher energy counted.")(distill_command)
app.command("distill-steps", help="Progressive distillation: halve the sampling steps per round, quality and energy at each.")(distill_steps_command)
app.command("tune", help="Energy-aware hyperparameter search (Optuna): best quality per kWh, pruning, Pareto, workers.")(tune_command)
app.command("profile", help="Profile a training config for a few steps; forecast the run's energy and time, with a band.")(profile_command)
app.add_typer(plan_app, name="plan", help="Choose where and when to run: regions ranked, the lowest-carbon window.")
app.command("hardware", help="Energy and time per training sample on each device; GPU power-limit sweeps; estimates for other GPUs.")(hardware_command)
app.command("report", help="A self-contained HTML report of runs: energy, power, intensity, emissions, quality, statement.")(report_command)
app.command("demo", help="Measure a short built-in CPU workload and print its energy/carbon summary.")(demo)
app.add_typer(runs_app, name="runs", help="List, show and export tracked runs from the ledger.")
app.add_typer(vae_app, name="vae", help="Train a small VAE on your images for latent diffusion (train --vae), metered.")


LOG_PREFIX = "greendiff: "
_MIN_TEXT_COLUMNS = 20  # a wrapped line holds at least this much text after the prefix's indent


def terminal_columns(env: Mapping[str, str] = os.environ) -> int | None:
    """The width to wrap log lines at: ``$COLUMNS`` when set (a positive whole number), else the width of the
    terminal stderr is on; None when stderr is no terminal (a log file keeps one line per message)."""
    text = env.get("COLUMNS", "").strip()
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return os.get_terminal_size(sys.__stderr__.fileno()).columns
    except (OSError, ValueError, AttributeError):  # not a terminal, closed, or no stderr at all
        return None


class WrappingFormatter(logging.Formatter):
    """``greendiff: <message>``, wrapped at the terminal's width (:func:`terminal_columns`, read per record:
    a resized terminal is followed) with later lines indented under the message; a word longer than a line
    (a path, a URL) stays whole. A traceback, if any, follows unwrapped."""

    def __init__(self, prefix: str = LOG_PREFIX, columns=terminal_columns) -> None:
        super().__init__()
        self.prefix, self.columns = prefix, columns

    def format(self, record: logging.LogRecord) -> str:
        text = self.wrap(note_line(record.getMessage()))  # a library note gets the CLI's hint, as in the summary
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text

    def wrap(self, message: str) -> str:
        """``message`` with the prefix, each of its lines wrapped (unwrapped when there is no width)."""
        columns = self.columns()
        indent = " " * len(self.prefix)
        lines = message.splitlines() or [""]
        if columns is None:
            return self.prefix + ("\n" + indent).join(lines)
        width = max(columns, len(self.prefix) + _MIN_TEXT_COLUMNS)
        wrapped = [textwrap.fill(line, width, initial_indent=self.prefix if i == 0 else indent, subsequent_indent=indent,
                                 break_long_words=False, break_on_hyphens=False) or (self.prefix if i == 0 else "")
                   for i, line in enumerate(lines)]
        return "\n".join(wrapped)


class StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, so a live progress display that redirects
    stderr prints the line above itself instead of being torn by it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"greendiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log meter and provider decisions."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    handler = StderrHandler()
    handler.setFormatter(WrappingFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    """Entry point. User mistakes: one line on stderr, exit code 2, never a traceback."""
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = os.environ.get("RANK", "0") != "0"  # in a multi-process job only rank 0 reports
    try:
        from greendiff.parallel import thread_setting

        thread_setting()  # GREENDIFF_THREADS is checked before any command creates anything
        result = app(args=argv, prog_name="greendiff", standalone_mode=False, obj={"argv": argv})
    except UserInputError as exc:
        if not quiet:
            print("greendiff: error: " + "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc)), file=sys.stderr)
        return 2
    except _UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "greendiff"
        print(f"greendiff: error: {exc.format_message()} (see '{command} --help')", file=sys.stderr)
        return 2
    except _ClickException as exc:
        print(f"greendiff: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except Interrupted as exc:  # Ctrl-C or SIGTERM outside a training loop; the workflow said how to resume
        return exc.exit_code
    except typer.Abort:
        print("greendiff: aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
