"""``--launcher local``: the grid on this machine, one run after another in this process, or
``launcher.parallel=N`` runs at a time in worker processes."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness.errors import BenchError, ConfigError
from harness.launchers import RunOutcome
from harness.spec import RunSpec
from harness.worker import run_spec


def run_one(spec: RunSpec, results_dir: Path, force: bool, show_progress: bool) -> RunOutcome:
    """Run one spec and say how it went; a failure is an outcome, not an exception, so that
    the rest of the grid goes on."""
    try:
        result = run_spec(spec, results_dir, force=force, show_progress=show_progress)
    except (BenchError, FloatingPointError) as err:
        return RunOutcome(spec.run_id, "failed", str(err))
    except Exception as err:  # a bug: keep the trace, go on with the grid
        return RunOutcome(spec.run_id, "failed", f"{err!r}\n{traceback.format_exc()}")
    return RunOutcome(spec.run_id, "done", f"top-1 {result['metrics']['top1']:.2f}%")


def _init_worker(threads: int) -> None:
    """Share the CPU cores among the parallel runs (a run's own ``train.threads`` still wins)."""
    import torch

    torch.set_num_threads(threads)


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
        for index, spec in enumerate(specs, 1):
            self.console.rule(f"run {index}/{len(specs)}: {spec.run_id}")
            outcome = run_one(spec, results_dir, force, self.show_progress)
            if outcome.state == "failed":
                self.console.print(f"[red]failed[/] {spec.run_id}: {escape(outcome.detail)}")
            outcomes.append(outcome)
        return outcomes

    def _parallel(
        self, specs: Sequence[RunSpec], results_dir: Path, force: bool
    ) -> list[RunOutcome]:
        workers = min(self.parallel, len(specs))
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.console.print(f"{len(specs)} runs, {workers} at a time ({threads} threads each)")
        outcomes: dict[str, RunOutcome] = {}
        # spawn: a fresh interpreter per worker, never a fork of a process holding torch threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, context, _init_worker, (threads,)) as pool:
            futures = {
                pool.submit(run_one, spec, Path(results_dir), force, False): spec for spec in specs
            }
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    outcome = future.result()
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
