"""``--launcher local``: the grid on this machine, one run after another in this process, or
``launcher.parallel=N`` runs at a time in worker processes.

A stop signal (Ctrl-C = SIGINT, or SIGTERM), sent to the process group or to this process
alone, stops a grid cleanly: each run in training finishes its step and saves a checkpoint of
it, no further run starts, and the same command resumes. A second one aborts at once (the
runs then resume from their last periodic checkpoint); see :mod:`harness.interrupts`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness.errors import BenchError
from harness.interrupts import (
    StopSignals,
    ctrl_c_held,
    release_ctrl_c,
    signal_name,
    start_resource_tracker,
)
from harness.launchers import RunOutcome
from harness.settings import read_settings, setting
from harness.spec import RunSpec
from harness.tables import how_many

NOT_STARTED = "not started: the grid was stopped (stop signal)"


def _announce(console: Console) -> Callable[[int], None]:
    """What the grid's process says at the first stop signal."""

    def say(signum: int) -> None:
        console.print(
            f"[yellow]{signal_name(signum)}: finishing the step in progress and saving a "
            "checkpoint; no further run starts (a second stop signal aborts at once)[/]"
        )

    return say


def run_one(
    spec: RunSpec,
    results_dir: Path,
    force: bool,
    show_progress: bool,
    stop_requested: Callable[[], bool] | None = None,
) -> RunOutcome:
    """Run one spec and say how it went; a failure is an outcome, not an exception, so that
    the rest of the grid goes on. ``stop_requested``: see :func:`harness.engine.fit`."""
    if stop_requested is not None and stop_requested():
        return RunOutcome(spec.run_id, "stopped", NOT_STARTED)
    # Here, not at the top: `bench run --dry-run` and `bench status` need no torch (~3 s).
    from harness.engine import TrainingStopped
    from harness.worker import run_spec

    try:
        result = run_spec(
            spec,
            results_dir,
            force=force,
            show_progress=show_progress,
            stop_requested=stop_requested,
        )
    except TrainingStopped as err:
        return RunOutcome(spec.run_id, "stopped", f"at step {err.step}, checkpoint saved")
    except (BenchError, FloatingPointError) as err:
        return RunOutcome(spec.run_id, "failed", str(err))
    except Exception as err:  # a bug: keep the trace, go on with the grid
        return RunOutcome(spec.run_id, "failed", f"{err!r}\n{traceback.format_exc()}")
    return RunOutcome(spec.run_id, "done", f"top-1 {result['metrics']['top1']:.2f}%")


# A worker process's stop state: its own signals (a terminal's Ctrl-C reaches the workers too)
# and the parent's event (a stop sent to the parent alone).
_worker_stop: StopSignals | None = None


def _init_worker(threads: int, parent_stop: Any) -> None:
    """Share the CPU cores among the parallel runs (a run's own ``train.threads`` still wins);
    take stop requests from the parent's ``parent_stop`` event, in a process group of its own.

    The own group lets an abort end the worker together with everything it started
    (:func:`_kill_workers`): a killed worker's render or decode pool would otherwise live on,
    waiting on a queue whose other end it holds itself. A terminal's Ctrl-C then reaches only
    the parent, which passes it on through the event; a stop signal sent to the worker itself
    still counts, and a repeated one is ignored (the parent decides when to abort).
    """
    import torch

    import harness.worker  # noqa: F401  (see _parallel: run_one's imports, done before a stop counts)

    global _worker_stop
    torch.set_num_threads(threads)
    os.setpgrp()
    # For the life of the worker process.
    _worker_stop = StopSignals(escalate=False, also=parent_stop.is_set).__enter__()
    release_ctrl_c()  # started under ctrl_c_held: from now on a stop signal is a stop request


def _run_in_worker(spec: RunSpec, results_dir: Path, force: bool) -> RunOutcome:
    stop = _worker_stop.requested if _worker_stop is not None else None
    return run_one(spec, results_dir, force, False, stop)


def _kill_workers() -> None:
    """Abort: end this process's worker processes and everything they started, at once
    (SIGKILL: SIGTERM is a stop request to them). Their runs resume from their last periodic
    checkpoint."""
    for child in multiprocessing.active_children():
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the worker's own group (_init_worker)
        except (ProcessLookupError, PermissionError):  # still starting: no group yet
            child.kill()


@dataclass(frozen=True)
class LocalSettings:
    """``configs/launcher/local.yaml``, read strictly (:func:`harness.settings.read_settings`)."""

    parallel: int = setting(low=1)
    poll_s: float = setting(low=0, low_open=True)


def _outcome_of(future: Future[RunOutcome], spec: RunSpec) -> RunOutcome:
    """The outcome of a parallel run's future, whatever became of it."""
    try:
        return future.result()
    except CancelledError:
        return RunOutcome(spec.run_id, "stopped", NOT_STARTED)
    except BrokenProcessPool as err:  # a worker was killed (e.g. out of memory)
        return RunOutcome(spec.run_id, "failed", f"worker process died: {err}")


class LocalLauncher:
    """Runs the grid on this machine. A failed run is reported and the grid goes on; the CLI
    exits non-zero at the end.

    ``parallel: 1`` (the default) runs in this process, with progress bars. ``parallel: N``
    runs N at a time in fresh (spawned) processes, each with 1/N of the CPU threads.
    """

    def __init__(self, config: dict[str, Any], console: Console, show_progress: bool = True):
        self.config = config
        settings = read_settings(
            LocalSettings,
            config,
            "launcher",
            missing_hint=": configs/launcher/local.yaml sets every one",
            ignore=("name",),
        )
        self.parallel = settings.parallel
        self.poll_s = settings.poll_s
        self.console = console
        self.show_progress = show_progress

    def preview(self, specs: Sequence[RunSpec], results_dir: Path) -> str:
        """What ``launch`` would do."""
        how = "in this process" if self.parallel == 1 else f"{self.parallel} at a time"
        runs = how_many(len(specs), "run")
        return f"local: {runs} on this machine, {how}; results in {results_dir}"

    def launch(self, specs: Sequence[RunSpec], results_dir: Path, force: bool) -> list[RunOutcome]:
        """Run every spec; the outcomes in the order of ``specs``."""
        if self.parallel == 1 or len(specs) == 1:
            return self._sequential(specs, results_dir, force)
        return self._parallel(specs, results_dir, force)

    def _report(self, outcome: RunOutcome, count: int, total: int) -> None:
        """One line as a parallel run ends; the failure's whole text (a bug's traceback) too."""
        colour = {"done": "green", "stopped": "yellow"}.get(outcome.state, "red")
        first, *rest = outcome.detail.splitlines() or [""]
        self.console.print(
            f"[{colour}]{outcome.state}[/] [{count}/{total}] {outcome.run_id} {escape(first)}",
            soft_wrap=True,
        )
        if outcome.state == "failed" and rest:
            self.console.print(escape("\n".join(rest)), soft_wrap=True)

    def _sequential(
        self, specs: Sequence[RunSpec], results_dir: Path, force: bool
    ) -> list[RunOutcome]:
        outcomes = []
        with StopSignals(_announce(self.console)) as ctrl_c:
            for index, spec in enumerate(specs, 1):
                if not ctrl_c.requested():
                    self.console.rule(f"run {index}/{len(specs)}: {spec.run_id}")
                outcome = run_one(spec, results_dir, force, self.show_progress, ctrl_c.requested)
                if outcome.state == "failed":
                    self.console.print(f"[red]failed[/] {spec.run_id}: {escape(outcome.detail)}")
                    outcome = replace(outcome, reported=True)
                outcomes.append(outcome)
        return outcomes

    def _parallel(
        self, specs: Sequence[RunSpec], results_dir: Path, force: bool
    ) -> list[RunOutcome]:
        # The engine (torch, timm) is imported before the pool starts, as it was when the CLI
        # imported it at start-up. Without this, a Ctrl-C sent as the workers started made both
        # runs of a 2-run grid "not started" in 2 of 6 tries (0 of 6 with it; the test
        # tests/test_cli.py::test_ctrl_c_while_worker_processes_start...).
        import harness.worker  # noqa: F401

        workers = min(self.parallel, len(specs))
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.console.print(f"{len(specs)} runs, {workers} at a time ({threads} threads each)")
        outcomes: dict[str, RunOutcome] = {}
        # spawn: a fresh interpreter per worker, never a fork of a process holding torch threads.
        context = multiprocessing.get_context("spawn")
        start_resource_tracker()  # before the event below registers with it
        parent_stop = context.Event()
        announce = _announce(self.console)

        def on_first(signum: int) -> None:
            # The workers hear of a stop sent to this process alone. Safe in a signal handler:
            # this process never holds the event's lock otherwise (it never reads the event).
            parent_stop.set()
            announce(signum)

        pool = ProcessPoolExecutor(workers, context, _init_worker, (threads, parent_stop))
        try:
            with StopSignals(on_first) as stop:
                with ctrl_c_held():  # submitting starts the worker processes
                    futures = {
                        pool.submit(_run_in_worker, spec, Path(results_dir), force): spec
                        for spec in specs
                    }
                for future in as_completed(futures):
                    spec = futures[future]
                    if stop.requested():  # start nothing more
                        for waiting in futures:
                            waiting.cancel()
                    outcomes[spec.run_id] = outcome = _outcome_of(future, spec)
                    self._report(outcome, len(outcomes), len(specs))
                    if outcome.state == "failed":
                        outcomes[spec.run_id] = replace(outcome, reported=True)
        except KeyboardInterrupt:  # a second stop signal: abort now, without waiting for runs
            _kill_workers()
            pool.shutdown(cancel_futures=True)  # quick: no worker is left to wait for
            raise
        pool.shutdown()
        return [outcomes[spec.run_id] for spec in specs]
