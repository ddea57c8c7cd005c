"""Stop signals (Ctrl-C = SIGINT, and SIGTERM) and the processes a run starts.

A stop signal asks for a clean stop: every run in training finishes its step, saves a
checkpoint of exactly that step and ends; no further run starts. A second stop signal aborts
at once (runs then resume from their last periodic checkpoint). ``kill``, ``timeout``,
``docker stop`` and systemd send SIGTERM; a terminal's Ctrl-C sends SIGINT: both take the same
path. ``bench`` then exits with ``128 + the signal's number`` (130 for SIGINT, 143 for SIGTERM),
as a shell reports a command the signal ended.

The terminal sends Ctrl-C to every process of the foreground group: to a parallel grid's worker
processes and to their DataLoader workers too. A process that receives it in the middle of its
start-up (a spawned worker takes seconds to import torch) dies there, and its parent fails or,
when the child dies before reading its start-up data, blocks for ever writing it. Deciding what
a stop signal means is the job of the process that started the grid: its children start with
the stop signals blocked (the signal mask is inherited through fork and exec), and only those
that take part in a clean stop (the parallel grid's workers) release them once they are ready.
A stop sent to the grid's process alone (a script, a supervisor) reaches its workers through
a shared event (:class:`StopSignals` ``also``).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
# The first stop signal this process received: signals are process-wide, and so is this.
_first_stop: int | None = None


def exit_code(signum: int) -> int:
    """The exit status of a command a signal ended, as shells report it: 128 + its number."""
    return 128 + int(signum)


def stop_exit_code() -> int:
    """The exit status after a clean stop: 128 + the first stop signal this process received
    (130 when none was, e.g. a KeyboardInterrupt raised by Python's own handler)."""
    return exit_code(_first_stop if _first_stop is not None else signal.SIGINT)


def signal_name(signum: int) -> str:
    """``Ctrl-C`` for SIGINT, else the signal's name."""
    return SIGNAL_NAMES.get(signal.Signals(signum), signal.Signals(signum).name)


class StopAborted(KeyboardInterrupt):
    """A second stop signal: abort at once. A KeyboardInterrupt, so that no ``except
    Exception`` between the handler and the CLI can swallow it."""

    def __init__(self, signum: int, line: str | None = None) -> None:
        super().__init__(line or f"aborted by a second {signal_name(signum)}")
        self.signum = int(signum)
        self.line = line  # what to tell the user instead of the generic abort line


# The resource tracker's warning about semaphores that processes it serves did not release:
# after an abort (the grid's workers are SIGKILLed) it removes them, as it should, and its
# warning would add a multi-line message to the one line an abort prints.
_TRACKER_LEAK_WARNING = "ignore::UserWarning:multiprocessing.resource_tracker"


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now. It starts with the first spawned process
    otherwise, and unblocks SIGINT and SIGTERM when that is done, which would end a
    :func:`ctrl_c_held` block early."""
    if _TRACKER_LEAK_WARNING not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_LEAK_WARNING)  # its command line is built from these
    resource_tracker.ensure_running()


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Start child processes inside this block: they begin life with the stop signals (SIGINT,
    SIGTERM) blocked. In this process a stop signal sent meanwhile is only delayed to the end of
    the block, not lost."""
    start_resource_tracker()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def release_ctrl_c() -> None:
    """In a child started under :func:`ctrl_c_held` that has installed its own stop handling:
    take stop signals from now on (one sent during its start-up is delivered now)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))


class StopSignals:
    """While active, the first SIGINT or SIGTERM only records a stop request (the engine then
    checkpoints and stops after its step) and calls ``on_first``; a second one raises
    :class:`StopAborted` when ``escalate`` is set and is ignored otherwise (a grid's worker
    process, whose parent decides when to abort). ``also``: another source of stop requests
    (e.g. a grid parent's shared event). Does nothing outside the main thread, where Python
    cannot install signal handlers."""

    def __init__(
        self,
        on_first: Callable[[int], None] | None = None,
        escalate: bool = True,
        also: Callable[[], bool] | None = None,
    ) -> None:
        self.on_first = on_first
        self.escalate = escalate
        self.also = also
        self.signum: int | None = None  # the first stop signal received
        self._previous: dict[int, Any] = {}
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> StopSignals:
        if self._active:
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """True once a stop signal arrived (or ``also`` says so)."""
        return self.signum is not None or (self.also is not None and self.also())

    def exit_code(self) -> int | None:
        """128 + the first stop signal's number; None before any."""
        return None if self.signum is None else exit_code(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global _first_stop
        if _first_stop is None:
            _first_stop = signum
        if self.signum is None:
            self.signum = signum
            if self.on_first is not None:
                self.on_first(signum)
        elif self.escalate:
            raise StopAborted(signum)


def abort_line(err: KeyboardInterrupt) -> tuple[str, int]:
    """The one line ``bench`` prints when a stop signal aborts it, and its exit status
    (128 + that signal's number)."""
    signum = err.signum if isinstance(err, StopAborted) else signal.SIGINT
    if isinstance(err, StopAborted) and err.line:
        return err.line, exit_code(signum)
    return (
        f"aborted ({signal_name(signum)}): finished results are kept; runs in training resume "
        "from their last checkpoint with the same command",
        exit_code(signum),
    )
