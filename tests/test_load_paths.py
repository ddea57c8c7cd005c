"""What keeps the read commands fast on many results: method attributes read from source (no
torch import per status or leaderboard), and results read once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.registry import available_methods, method_attribute

REPO = Path(__file__).resolve().parents[1]


def test_method_attributes_read_from_source_match_the_classes() -> None:
    for info in available_methods().values():
        assert method_attribute(info.name, "adaptive_thresholds", False) == (
            info.cls.adaptive_thresholds
        ), info.name


def test_health_of_a_result_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from harness.health import has_adaptive_thresholds\n"
        "for m in ('supervised', 'fixmatch', 'flexmatch', 'freematch', 'adacm', 'dta_snl'):\n"
        "    has_adaptive_thresholds({'method': m, 'config': {'method': {'dta': True}}})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
