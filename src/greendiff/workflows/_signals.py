"""SIGTERM handled like Ctrl-C while a job trains."""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """SIGTERM handled like Ctrl-C while training (a scheduler, ``docker stop`` or systemd sends TERM): the
    first TERM sets the flag the trainer polls (:meth:`should_interrupt`: it is a trainer callback), so it checkpoints and returns
    ``interrupted``; the first Ctrl-C still raises ``KeyboardInterrupt`` at once. Once one arrived, further
    TERM/INT are ignored until the checkpoint is written. The previous handlers come back on exit.
    ``exit_code``: 128 + the signal (143 for TERM, 130 for INT).

    Example:
        >>> with StopSignals() as stops:
        ...     stops.requested()
        False
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}
        self._depth = 0  # re-entrant: a workflow holds it until the run's books are closed, the segment again

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def requested(self) -> bool:
        return self.signum is not None

    def should_interrupt(self) -> bool:
        """The trainer's callback hook: polled before every step (and during pauses)."""
        return self.requested()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            return  # a second signal while the first one's checkpoint is written
        self.signum = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(signum) is not signal.SIG_IGN:  # a background job's ignored INT stays ignored
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = {}
