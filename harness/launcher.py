"""Launchers: where the runs of a plan execute. All take RunSpecs and call ``run_spec``."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from harness.errors import BenchError, ConfigError
from harness.spec import RunSpec
from harness.worker import run_spec


@dataclass(frozen=True)
class RunOutcome:
    """What became of one submitted run."""

    run_id: str
    state: str  # "done" | "failed" | "submitted"
    detail: str = ""


class Launcher(Protocol):
    """Executes (or submits) a list of runs whose results do not exist yet."""

    def launch(
        self, specs: Sequence[RunSpec], results_dir: Path, force: bool
    ) -> list[RunOutcome]: ...


class LocalLauncher:
    """Runs the grid on this machine, one run after another, in this process.

    A failed run is reported and the grid goes on; the CLI exits non-zero at the end.
    """

    def __init__(self, config: dict[str, Any], console: Console, show_progress: bool = True):
        self.config = config
        self.console = console
        self.show_progress = show_progress

    def launch(self, specs: Sequence[RunSpec], results_dir: Path, force: bool) -> list[RunOutcome]:
        outcomes = []
        for index, spec in enumerate(specs, 1):
            self.console.rule(f"run {index}/{len(specs)}: {spec.run_id}")
            try:
                result = run_spec(spec, results_dir, force=force, show_progress=self.show_progress)
            except (BenchError, FloatingPointError) as err:
                self.console.print(f"[red]failed[/] {spec.run_id}: {err}")
                outcomes.append(RunOutcome(spec.run_id, "failed", str(err)))
                continue
            except Exception as err:  # a bug: keep the trace, go on with the grid
                self.console.print(f"[red]failed[/] {spec.run_id}: {err!r}")
                self.console.print(traceback.format_exc())
                outcomes.append(RunOutcome(spec.run_id, "failed", repr(err)))
                continue
            outcomes.append(
                RunOutcome(spec.run_id, "done", f"top-1 {result['metrics']['top1']:.2f}%")
            )
        return outcomes


def build_launcher(
    launcher_cfg: dict[str, Any], console: Console, show_progress: bool = True
) -> Launcher:
    """The launcher named by ``launcher.name``."""
    name = launcher_cfg.get("name")
    if name == "local":
        return LocalLauncher(launcher_cfg, console, show_progress)
    raise ConfigError(f"launcher {name!r} is not available; choose: local")
