"""A grid larger than the cluster's MaxArraySize is split into arrays that fit it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from harness.launchers import partition, slurm
from harness.launchers.partition import array_size, parse_max_array_size
from harness.plan import build_plan

# A piece of `scontrol show config` as SLURM 23.02 prints it.
SCONTROL = """Configuration data as of 2026-12-07T21:00:00
AccountingStorageType   = accounting_storage/none
MaxArraySize            = 1001
MaxJobCount             = 10000
"""


def test_max_array_size_is_read_from_scontrol() -> None:
    assert parse_max_array_size(SCONTROL) == 1001
    assert parse_max_array_size("MaxJobCount = 10000\n") is None


@pytest.mark.parametrize(
    ("configured", "cluster", "expected"),
    [(1000, 1001, 1000), (1000, 300, 300), (1000, None, 1000)],
)
def test_the_smaller_of_the_setting_and_the_cluster_limit_wins(
    configured: int, cluster: int | None, expected: int
) -> None:
    assert array_size(configured, cluster) == expected


def test_a_1000_run_grid_is_split_to_fit_the_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    specs = build_plan("supervised", "10%,25%", "0-499", "synthfer", ["launcher=slurm"])
    assert len(specs) == 1000
    launcher = slurm.SlurmLauncher(specs[0].config["launcher"], Console(), show_progress=False)
    monkeypatch.setattr(slurm, "cluster_max_array_size", lambda: 300)
    preview = launcher.preview(specs, tmp_path)
    assert preview.startswith("SLURM: 1000 runs in 4 array(s)")
    assert preview.count("--array=0-249%") == 4, "four arrays of 250 tasks, none above 300"
    monkeypatch.setattr(slurm, "cluster_max_array_size", lambda: None)
    assert launcher.preview(specs, tmp_path).startswith("SLURM: 1000 runs in 1 array(s)")
    # Asked of the real scontrol where one answers (CI starts slurm/cluster.sh), else None.
    answer = (
        subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
        if shutil.which("scontrol")
        else None
    )
    found = answer and re.search(r"^MaxArraySize\s*=\s*(\d+)", answer.stdout, re.MULTILINE)
    assert partition.cluster_max_array_size.__wrapped__() == (int(found[1]) if found else None)
