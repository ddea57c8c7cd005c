"""``--launcher local``: the grid on this machine, one run after another in this process, or
``launcher.parallel=N`` runs at a time in worker processes.

Ctrl-C stops a grid cleanly: each run in training finishes its step and saves a checkpoint of
it, no further run starts, and the same command resumes. A second Ctrl-C aborts at once (the
runs then resume from their last periodic checkpoint).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness.errors import BenchError, ConfigError
from harness.interrupts import ctrl_c_held, release_ctrl_c
from harness.launchers import RunOutcome
from harness.spec import RunSpec

NOT_STARTED = "not started: the grid was stopped (Ctrl-C)"


class StopOnCtrlC:
    """While active, the first SIGINT only sets :meth:`requested` (the engine then checkpoints
    and stops after its step); the second raises KeyboardInterrupt as usual. Does nothing
    outside the main thread, where Python cannot install signal handlers."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console
        self._requested = False
        self._previous: Any = None
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> StopOnCtrlC:
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._first)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)

    def requested(self) -> bool:
        """True once Ctrl-C was pressed."""
        return self._requested

    def _first(self, signum: int, frame: object) -> None:
        self._requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.console is not None:
            self.console.print(
                "[yellow]Ctrl-C: finishing the step in progress and saving a checkpoint; "
                "no further run starts (Ctrl-C again aborts at once)[/]"
            )


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


# A worker process's Ctrl-C state: the terminal sends SIGINT to the workers too.
_worker_ctrl_c: StopOnCtrlC | None = None


def _init_worker(threads: int) -> None:
    """Share the CPU cores among the parallel runs (a run's own ``train.threads`` still wins);
    take Ctrl-C the way a sequential grid does."""
    import torch

    import harness.worker  # noqa: F401  (see _parallel: run_one's imports, done before a Ctrl-C counts)

    global _worker_ctrl_c
    torch.set_num_threads(threads)
    _worker_ctrl_c = StopOnCtrlC().__enter__()  # for the life of the worker process
    release_ctrl_c()  # started under ctrl_c_held: from now on a Ctrl-C is a stop request


def _run_in_worker(spec: RunSpec, results_dir: Path, force: bool) -> RunOutcome:
    stop = _worker_ctrl_c.requested if _worker_ctrl_c is not None else None
    return run_one(spec, results_dir, force, False, stop)


def parallel_of(config: dict[str, Any]) -> int:
    """``launcher.parallel``, checked."""
    value = config.get("parallel", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"launcher.parallel (configs/launcher/local.yaml or launcher.parallel=N) must be a "
            f"whole number ≥ 1, got {value!r}"
        )
    return value


class LocalLauncher:
    """Runs the grid on this machine. A failed run is reported and the grid goes on; the CLI
    exits non-zero at the end.

    ``parallel: 1`` (the default) runs in this process, with progress bars. ``parallel: N``
    runs N at a time in fresh (spawned) processes, each with 1/N of the CPU threads.
    """

    def __init__(self, config: dict[str, Any], console: Console, show_progress: bool = True):
        self.config = config
        self.parallel = parallel_of(config)
        self.console = console
        self.show_progress = show_progress

    def preview(self, specs: Sequence[RunSpec], results_dir: Path) -> str:
        """What ``launch`` would do."""
        how = "in this process" if self.parallel == 1 else f"{self.parallel} at a time"
        return f"local: {len(specs)} runs on this machine, {how}; results in {results_dir}"

    def launch(self, specs: Sequence[RunSpec], results_dir: Path, force: bool) -> list[RunOutcome]:
        """Run every spec; the outcomes in the order of ``specs``."""
        if self.parallel == 1 or len(specs) == 1:
            return self._sequential(specs, results_dir, force)
        return self._parallel(specs, results_dir, force)

    def _sequential(
        self, specs: Sequence[RunSpec], results_dir: Path, force: bool
    ) -> list[RunOutcome]:
        outcomes = []
        with StopOnCtrlC(self.console) as ctrl_c:
            for index, spec in enumerate(specs, 1):
                if not ctrl_c.requested():
                    self.console.rule(f"run {index}/{len(specs)}: {spec.run_id}")
                outcome = run_one(spec, results_dir, force, self.show_progress, ctrl_c.requested)
                if outcome.state == "failed":
                    self.console.print(f"[red]failed[/] {spec.run_id}: {escape(outcome.detail)}")
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
        with (
            StopOnCtrlC(self.console) as ctrl_c,
            ProcessPoolExecutor(workers, context, _init_worker, (threads,)) as pool,
        ):
            with ctrl_c_held():  # submitting starts the worker processes
                futures = {
                    pool.submit(_run_in_worker, spec, Path(results_dir), force): spec
                    for spec in specs
                }
            for future in as_completed(futures):
                spec = futures[future]
                if ctrl_c.requested():  # start nothing more
                    for waiting in futures:
                        waiting.cancel()
                try:
                    outcome = future.result()
                except CancelledError:
                    outcome = RunOutcome(spec.run_id, "stopped", NOT_STARTED)
                except BrokenProcessPool as err:  # a worker was killed (e.g. out of memory)
                    outcome = RunOutcome(spec.run_id, "failed", f"worker process died: {err}")
                outcomes[spec.run_id] = outcome
                colour = "green" if outcome.state == "done" else "red"
                first_line = outcome.detail.splitlines()[0] if outcome.detail else ""
                self.console.print(
                    f"[{colour}]{outcome.state}[/] [{len(outcomes)}/{len(specs)}] "
                    f"{spec.run_id} {escape(first_line)}"
                )
        return [outcomes[spec.run_id] for spec in specs]
