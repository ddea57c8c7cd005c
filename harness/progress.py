"""Progress of a counted wait (faces rendered, images decoded), so that no wait of more than a
few seconds is silent: a live bar on a terminal, and elsewhere (SLURM logs, pipes, where a
bar would print nothing until it ends) a line with the count at the start, every quarter and
at the end."""

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
