"""Ctrl-C and the processes a run starts.

The terminal sends Ctrl-C (SIGINT) to every process of the foreground group: to a parallel
grid's worker processes and to their DataLoader workers too. A process that receives it in the
middle of its start-up (a spawned worker takes seconds to import torch) dies there, and its
parent fails or, when the child dies before reading its start-up data, blocks for ever writing
it. Deciding what a Ctrl-C means is the job of the process that started the grid: its children
start with SIGINT blocked (the signal mask is inherited through fork and exec), and only those
that take part in a clean stop (the parallel grid's workers) release it once they are ready.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Start child processes inside this block: they begin life with Ctrl-C blocked. In this
    process a Ctrl-C pressed meanwhile is only delayed to the end of the block, not lost."""
    # multiprocessing starts its resource tracker with the first spawned process, and unblocks
    # SIGINT when that is done, which would end this block early: start it now.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def release_ctrl_c() -> None:
    """In a child started under :func:`ctrl_c_held` that has installed its own Ctrl-C handling:
    take Ctrl-C from now on (one pressed during its start-up is delivered now)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
