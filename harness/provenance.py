"""Where a result came from: code version, packages, machine, command, scheduler."""

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
    "fer-bench",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "hydra-core",
    "omegaconf",
    "submitit",
    "scikit-learn",
    "pandas",
    "pillow",
)
SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURMD_NODENAME",
    "SLURM_JOB_NODELIST",
    "SLURM_RESTART_COUNT",
    "SLURM_JOB_PARTITION",
)


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout the harness runs from (None outside git)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a result."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def collect_provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Everything needed to tell how and where a result was produced."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    slurm = {k: os.environ[k] for k in SLURM_VARIABLES if k in os.environ}
    return {
        "git": git_state(),
        "packages": package_versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "command": list(argv if argv is not None else sys.argv),
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "slurm": slurm or None,
    }
