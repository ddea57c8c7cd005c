"""Where a result came from: code version, packages, machine, command line, scheduler.

Everything here is best effort: a missing ``git``, a checkout that is not a git repository or
an uninstalled package gives ``None`` for that field, never an exception that would lose a run.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "fer-bench",  # the code version of an installed (non-editable) harness, which has no git
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pillow",
    "hydra-core",
    "omegaconf",
    "submitit",
    "scikit-learn",
    "pandas",
)
SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURMD_NODENAME",
    "SLURM_NODELIST",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_PARTITION",
    "SLURM_RESTART_COUNT",
)
HARNESS_DIR = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path = HARNESS_DIR) -> str | None:
    """Output of ``git -C cwd ...``, or None when git is missing, fails or hangs."""
    try:
        out = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: Path = HARNESS_DIR) -> dict[str, Any]:
    """Commit and dirty flag of the checkout the harness code lives in (None outside git).

    Dirty means tracked files differ from the commit; untracked files do not count, since new
    result files land in the checkout's ``results/`` while the grid runs.
    """
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """Python's version and the installed versions of the packages that shape a result."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def slurm_info(environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The SLURM job, array task, node and restart count from the environment (None outside
    SLURM)."""
    env = os.environ if environ is None else environ
    info = {key: env[key] for key in SLURM_VARIABLES if key in env}
    return info or None


def device_name() -> str:
    """The CUDA device's name, or ``cpu``."""
    try:
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.cuda.current_device())
    except RuntimeError:  # a broken driver must not cost the run
        pass
    return "cpu"


def collect_provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Everything needed to tell how and where a result was produced (plain JSON data)."""
    return {
        "git": git_state(),
        "packages": package_versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": device_name(),
        "torch_threads": torch.get_num_threads(),
        "command": list(sys.argv if argv is None else argv),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "slurm": slurm_info(),
    }
