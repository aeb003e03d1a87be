"""The CLI starts without torch: ``greendiff --help`` and every command's ``--help`` import neither torch nor
diffusers (1.6 s of the start-up before torch was imported lazily), each checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from greendiff.cli._app import app

HEAVY = ("torch", "diffusers", "torchvision")

#: Every command, and the commands of the ``runs`` and ``plan`` groups, as typer lists them.
COMMANDS = [[c.name] for c in app.registered_commands if not c.hidden] + [
    [g.name, c.name] for g in app.registered_groups for c in g.typer_instance.registered_commands if not c.hidden]

#: Calls ``main([*argv, "--help"])`` for each argv on stdin's list, and answers which heavy modules each one
#: brought in (the first command that imports torch is the one named).
_HELPS = """
import json, sys
from greendiff.cli._app import main
heavy = {heavy!r}
seen = {{}}
for argv in json.load(sys.stdin):
    try:
        main([*argv, "--help"])
    except SystemExit:
        pass
    seen[" ".join(argv) or "greendiff"] = [m for m in heavy if m in sys.modules]
print(json.dumps(seen), file=sys.stderr)
"""


def _python(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})


def test_importing_the_cli_does_not_import_torch():
    done = _python("-c", "import greendiff.cli._app, sys; print('torch' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_every_help_runs_without_importing_torch_or_diffusers():
    assert ["train"] in COMMANDS and ["runs", "list"] in COMMANDS and len(COMMANDS) > 15
    done = _python("-c", _HELPS.format(heavy=HEAVY), stdin=json.dumps([[], *COMMANDS]))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stderr.strip().splitlines()[-1])
    assert "Usage: " in done.stdout and len(seen) == len(COMMANDS) + 1
    assert {command: loaded for command, loaded in seen.items() if loaded} == {}


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_the_entry_point_imports_no_torch_module(argv):
    """``python -m greendiff`` as the ``greendiff`` script runs it, read with ``-X importtime``: every module it
    imported is named on stderr."""
    done = _python("-X", "importtime", "-m", "greendiff", *argv)
    assert done.returncode == 0 and "Usage: " in done.stdout, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "greendiff.cli._app" in imported
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []
