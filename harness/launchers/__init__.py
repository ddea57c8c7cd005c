"""Launchers: where the runs of a plan execute. Every launcher ends in ``run_spec``.

``local`` runs them on this machine (in this process, or ``parallel: N`` at a time);
``slurm`` submits them to a SLURM cluster as job arrays and returns (:mod:`.slurm`);
:mod:`.status` tells where each run stands and :mod:`.follow` waits for runs to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from harness.errors import ConfigError
from harness.spec import RunSpec

LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class RunOutcome:
    """What became of one launched run."""

    run_id: str
    state: str  # "done" | "failed" | "submitted" | "stopped" (a stop signal; resumable)
    detail: str = ""
    reported: bool = False  # the launcher already printed ``detail`` (print each error once)


class Launcher(Protocol):
    """Executes (or submits) a list of runs whose results do not exist yet."""

    poll_s: float  # how often ``bench run --wait`` polls runs it follows (``launcher.poll_s``)

    def launch(
        self, specs: Sequence[RunSpec], results_dir: Path, force: bool
    ) -> list[RunOutcome]: ...

    def preview(self, specs: Sequence[RunSpec], results_dir: Path) -> str:
        """What ``launch`` would do, for ``--dry-run``."""
        ...


def build_launcher(
    launcher_cfg: dict[str, Any],
    console: Console,
    show_progress: bool = True,
) -> Launcher:
    """The launcher named by ``launcher.name`` (a config in ``configs/launcher/``)."""
    name = launcher_cfg.get("name")
    if name == "local":
        from harness.launchers.local import LocalLauncher

        return LocalLauncher(launcher_cfg, console, show_progress)
    if name == "slurm":
        from harness.launchers.slurm import SlurmLauncher

        return SlurmLauncher(launcher_cfg, console, show_progress)
    raise ConfigError(
        f"launcher {name!r} is not available; choose: {', '.join(LAUNCHERS)} "
        "(configs/launcher/<name>.yaml)"
    )
