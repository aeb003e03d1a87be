"""The ``greendiff`` command: typer app, and the one place user errors become exit code 2."""

from __future__ import annotations

import logging
import sys

import typer

from greendiff import __version__
from greendiff.cli._compress import distill_command, distill_steps_command, prune_command
from greendiff.cli._demo import demo
from greendiff.cli._eval import eval_command
from greendiff.cli._hardware import hardware_command
from greendiff.cli._measure import measure
from greendiff.cli._options import _UsageError
from greendiff.cli._plan import plan_app, profile_command
from greendiff.cli._report import report_command
from greendiff.cli._runs import runs_app
from greendiff.cli._train import sample_command, train_command
from greendiff.cli._tune import tune_command
from greendiff.errors import UserInputError
from greendiff.workflows import Interrupted

# typer >= 0.20 vendors click; take its exception classes from typer's own hierarchy (_UsageError: _options).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"greendiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log meter and provider decisions."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="greendiff: %(message)s")


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
