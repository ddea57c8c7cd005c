"""Progress where a live bar would print nothing until it ends (SLURM logs, pipes, ``> log``).

:func:`counted`: a counted wait (faces rendered, images decoded), so that no wait of more than
a few seconds is silent: a live bar on a terminal, and elsewhere a line with the count at the
start, every quarter and at the end. :class:`PeriodicLines`: a long loop (training steps) off a
terminal, one plain line at a steady interval with the count, the rate and the time left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]
_QUARTERS = (0.25, 0.5, 0.75)


@contextmanager
def counted(
    description: str, total: int, unit: str = "images", enabled: bool = True
) -> Iterator[Advance]:
    """Report ``advance(n)`` calls against ``total`` on stderr while the block runs."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    console = Console(stderr=True)
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
        while marks and done >= marks[0] * total:
            marks.pop(0)
            if done < total:
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
