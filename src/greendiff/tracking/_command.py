"""Run any command as a measured child, the way a shell would, and leave nothing of it behind.

- Before anything is recorded, :func:`check_command` checks what a shell checks before it runs a
  program: found (else exit code 127), not a directory, executable, and a ``#!`` interpreter that
  exists. A failure is one line with the shell's exit code, 126 (found but cannot be executed) or 127
  (not found). An exec failure only the kernel can tell (an unknown binary format) surfaces when the
  child starts, as :class:`CommandError` from :func:`run_command`, with the same codes.
- The child runs in its own session and process group. SIGINT, SIGTERM and SIGHUP sent to greendiff
  are forwarded to the whole group (so a grandchild gets them too, and a terminal's Ctrl-C still
  reaches the command); a second SIGINT kills the group. greendiff waits for the child, then ends
  whatever the command left running in its group: SIGTERM, then SIGKILL after a grace period.
- Nothing is unpickled: the child is an ``exec``, the ledger is JSON.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from greendiff.errors import UserInputError

logger = logging.getLogger(__name__)

EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds the processes a command left in its group get between SIGTERM and SIGKILL.
GROUP_GRACE_S = 2.0


class CommandError(UserInputError):
    """A command that cannot be run; ``exit_code`` is the shell's (126 cannot execute, 127 not found)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class CommandResult:
    """How a measured command ended.

    Attributes:
        exit_code: The shell's view: the command's exit status, or 128 + N if signal N ended it.
        signals: The signals greendiff received and forwarded (empty if the command ended by itself).
        leftovers: Processes of the command's group still running after it exited, then ended.
    """

    exit_code: int
    signals: tuple[int, ...] = ()
    leftovers: int = 0

    @property
    def status(self) -> str:
        """The ledger status: ``interrupted`` if greendiff was signalled, else completed or failed."""
        return "interrupted" if self.signals else ("completed" if self.exit_code == 0 else "failed")


def _shown(program: str) -> str:
    return repr(program) if not program.isprintable() or not program or " " in program else program


def check_command(argv: Sequence[str]) -> None:
    """Raise :class:`CommandError` (with the shell's exit code) unless ``argv[0]`` can be started."""
    program = argv[0]
    shown = _shown(program)
    if "\0" in program:
        raise CommandError(f"{shown}: command not found (the name holds a NUL character)", EXIT_NOT_FOUND)
    if "/" not in program:
        found = shutil.which(program) if program else None
        if found is None:
            on_path = [d for d in os.get_exec_path() if program and os.path.isfile(os.path.join(d, program))]
            if on_path:
                raise CommandError(f"{shown}: permission denied ({os.path.join(on_path[0], program)} is not executable)",
                                   EXIT_CANNOT_EXECUTE)
            raise CommandError(f"{shown}: command not found (not on PATH)", EXIT_NOT_FOUND)
        program = found
    if not os.path.exists(program):
        raise CommandError(f"{shown}: no such file", EXIT_NOT_FOUND)
    if os.path.isdir(program):
        raise CommandError(f"{shown}: is a directory", EXIT_CANNOT_EXECUTE)
    if not os.access(program, os.X_OK):
        raise CommandError(f"{shown}: permission denied (not executable; chmod +x it)", EXIT_CANNOT_EXECUTE)
    _check_interpreter(program, shown)


def _check_interpreter(path: str, shown: str) -> None:
    """A ``#!`` line's interpreter must exist and be executable (the kernel's check, made in advance)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return  # executable but unreadable (mode 711): only exec can tell
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].split()
    interpreter = os.fsdecode(words[0]) if words else ""
    if not interpreter or not os.path.exists(interpreter):
        raise CommandError(f"{shown}: bad interpreter {_shown(interpreter)}: no such file", EXIT_NOT_FOUND)
    if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
        raise CommandError(f"{shown}: bad interpreter {_shown(interpreter)}: not executable", EXIT_CANNOT_EXECUTE)


class _Forwarder:
    """Signal handlers that pass SIGINT/SIGTERM/SIGHUP on to the child's process group."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.pgid: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Forwarder:
        self._previous = {s: signal.signal(s, self._handle) for s in FORWARDED_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, _frame) -> None:
        self.received.append(signum)
        if self.pgid is not None:
            second_interrupt = signum == signal.SIGINT and self.received.count(signal.SIGINT) > 1
            _signal_group(self.pgid, signal.SIGKILL if second_interrupt else signum)

    def attach(self, pgid: int) -> None:
        """The child has started: forward what arrived before it did."""
        self.pgid = pgid
        for signum in list(self.received):
            _signal_group(pgid, signum)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def end_group(pgid: int, grace_s: float = GROUP_GRACE_S) -> int:
    """End what is left of a process group whose leader has exited: SIGTERM, then SIGKILL after
    ``grace_s``. Returns how many processes were left."""
    left = len(group_members(pgid))
    if not left:
        return 0
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
    return left


def _start(argv: Sequence[str]) -> subprocess.Popen:
    try:
        return subprocess.Popen(list(argv), start_new_session=True)
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        raise CommandError(f"{_shown(argv[0])}: cannot execute: {exc.strerror or exc}", code) from None


def run_command(argv: Sequence[str], on_tick: Callable[[], None], tick_s: float,
                grace_s: float = GROUP_GRACE_S) -> CommandResult:
    """Run ``argv`` in its own process group, call ``on_tick`` every ``tick_s`` while it runs, forward
    signals to the group, and leave none of the group running. Raises :class:`CommandError` if the
    command cannot start. ``on_tick`` failing is logged once and does not stop the command."""
    with _Forwarder() as forwarder:
        proc = _start(argv)
        forwarder.attach(proc.pid)
        tick_failed = False
        while True:
            try:
                returncode = proc.wait(timeout=tick_s)
                break
            except subprocess.TimeoutExpired:
                try:
                    on_tick()
                except Exception as exc:  # e.g. the ledger briefly unwritable: keep waiting for the command
                    if not tick_failed:
                        logger.warning("could not record a sample while the command runs: %s", exc)
                    tick_failed = True
        leftovers = end_group(proc.pid, grace_s)
    if leftovers:
        logger.warning("ended %d process%s the command left running in its process group", leftovers,
                       "" if leftovers == 1 else "es")
    exit_code = returncode if returncode >= 0 else 128 - returncode
    return CommandResult(exit_code, tuple(forwarder.received), leftovers)
