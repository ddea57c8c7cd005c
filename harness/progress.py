"""Progress where a live bar would print nothing until it ends (SLURM logs, pipes, ``> log``).

:func:`counted`: a counted wait (faces rendered, images decoded), so that no wait of more than
a few seconds is silent: a live bar on a terminal, and elsewhere a line with the count at the
start, every quarter and at the end. :class:`PeriodicLines`: a long loop (training steps) off a
terminal, one plain line at a steady interval with the count, the rate and the time left.
:func:`log_console`: the console of a run's log lines, which off a terminal prints each one
whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

Advance = Callable[[int], None]
_QUARTERS = (0.25, 0.5, 0.75)


class _PlainLog(Console):
    """A console whose :meth:`log` prints ``[HH:MM:SS] message`` as one soft-wrapped line:
    rich's own log line is a grid as wide as the console (80 columns off a terminal), which
    folds a long message, pads it with spaces and ends it with the caller's file:line."""

    def log(self, *objects: Any, sep: str = " ", end: str = "\n", **options: Any) -> None:
        """Print ``objects`` after the time, whole (``options``: those of :meth:`print`)."""
        options.pop("log_locals", None)
        options.pop("_stack_offset", None)
        stamp = Text(self.get_datetime().strftime("[%H:%M:%S]"))
        self.print(stamp, *objects, sep=sep, end=end, soft_wrap=True, **options)


def log_console() -> Console:
    """The console of a run's log lines, on stderr: rich's usual one on a terminal; elsewhere
    (``> log``, a pipe, a SLURM log) one that prints each log line whole, unwrapped and
    unpadded, so that a log can be read and grepped line by line."""
    console = Console(stderr=True, emoji=False)  # adacm:100: is a label setting, not an emoji
    return console if console.is_terminal else _PlainLog(stderr=True, emoji=False)


@contextmanager
def counted(
    description: str, total: int, unit: str = "images", enabled: bool = True
) -> Iterator[Advance]:
    """Report ``advance(n)`` calls against ``total`` on stderr while the block runs."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    console = log_console()
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        return
    start, done, marks = time.perf_counter(), 0, list(_QUARTERS)

    def say(what: str) -> None:
        elapsed = time.perf_counter() - start
        console.print(f"{description}: {what} ({elapsed:.1f} s)", highlight=False, soft_wrap=True)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        crossed = False
        while marks and done >= marks[0] * total:  # a step may cross more than one quarter
            marks.pop(0)
            crossed = True
        if crossed and done < total:
            say(f"{done}/{total} {unit}")

    say(f"0/{total} {unit}")
    yield advance
    say(f"{done}/{total} {unit}, done" if done == total else f"stopped at {done}/{total} {unit}")


def duration(seconds: float) -> str:
    """``2:05:09`` / ``4:31``: hours, minutes and seconds, as a log reader scans them."""
    minutes, secs = divmod(round(max(seconds, 0.0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class PeriodicLines:
    """One plain line every ``every_s`` seconds of a loop counted to ``total``, printed only
    where ``console`` is not a terminal (there a live bar shows the same): ``name: step
    340/2000 (17%) · 5.2 steps/s · 5:19 left · <info>``. The rate is over this process's share
    of the loop (a resumed run starts counting at ``start``), evaluations included, so the time
    left is what the wall clock will show."""

    def __init__(
        self,
        console: Console,
        name: str,
        total: int,
        start: int,
        every_s: float,
        unit: str = "step",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.name, self.total, self.unit = console, name, total, unit
        self.enabled = every_s > 0 and not console.is_terminal
        self.every_s, self.clock, self.start = every_s, clock, start
        self.started = self.last = clock()

    def update(self, done: int, info: str = "") -> None:
        """Print the line for ``done`` if ``every_s`` has passed since the last one."""
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = (done - self.start) / max(now - self.started, 1e-9)
        left = duration((self.total - done) / rate) if rate > 0 else "?"
        share = done / max(self.total, 1)
        line = (
            f"[{time.strftime('%H:%M:%S')}] {self.name}: {self.unit} {done}/{self.total} "
            f"({share:.0%}) · {rate:.3g} {self.unit}s/s · {left} left"
        )
        self.console.print(
            f"{line} · {info}" if info else line, highlight=False, markup=False, soft_wrap=True
        )
