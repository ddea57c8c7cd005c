"""The harness under load (issue 24 §5): the read commands on 10,000 results, and a grid of
1,000 runs planned and split into SLURM arrays.

Makes N results in a temporary folder (``cli_latency.fake_results``: copies of a committed
synthfer result with method, label setting, seed and run id varied, each with the committed
result's compact step log beside it, as the health column reads it), then runs each command as a
fresh subprocess pinned to one core (``taskset -c 0`` where it exists) and reports its wall time
and its CPU time (user + system of the child, from ``getrusage``). On a machine shared with other
work the wall time includes waiting for the core; the CPU time is what the command costs.

    python benchmarks/load.py --results 10000 --runs 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_latency import ROOT, fake_results

GOALS = {"bench status --all": 2.0, "bench leaderboard": 5.0}


def run(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds of ``bench <args>`` on one core, and its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [*pin, sys.executable, "-m", "harness.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"bench {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return wall, cpu, proc.stdout


def grid_args(runs: int) -> list[str]:
    """A grid of ``runs`` runs: supervised at two label settings, runs/2 seeds each."""
    return ["--methods", "supervised", "--labels", "10%,25%", "--seeds", f"0-{runs // 2 - 1}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    template_path = min((ROOT / "results").glob("synthfer/*.json"))
    template = json.loads(template_path.read_text())
    steps = template_path.with_suffix(".steps.jsonl.gz")  # its compact step log (health reads it)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        fake_results(template, args.results, results)
        for result in (results / template["dataset"]).glob("*.json"):
            shutil.copyfile(steps, result.with_suffix(".steps.jsonl.gz"))
        where = ["--results-dir", str(results)]
        commands = {
            "bench status --all": ["status", "--all", *where],
            "bench leaderboard": ["leaderboard", *where, "--output", str(Path(tmp) / "lb.md")],
            f"bench run --launcher slurm --dry-run ({args.runs} runs)": [
                "run", *grid_args(args.runs), "--launcher", "slurm", "--dry-run",
                "--results-dir", str(Path(tmp) / "empty"),
            ],
        }  # fmt: skip
        for name, command in commands.items():
            measured = [run(command, Path(tmp)) for _ in range(args.repeat)]
            # The first status builds the results index (results/runs/index.json); the median
            # is over the later ones, as a user sees every status after the first.
            later = measured[1:] or measured
            wall = statistics.median(m[0] for m in later)
            cpu = statistics.median(m[1] for m in later)
            first = measured[0][1]
            note = ""
            if "--dry-run" in command:
                arrays = re.search(r"SLURM: (\d+) runs in (\d+) array", measured[0][2])
                note = f"{arrays[1]} runs in {arrays[2]} array(s)" if arrays else "no SLURM plan"
            elif name in GOALS:
                note = f"goal < {GOALS[name]:.0f} s: {'met' if cpu < GOALS[name] else 'NOT met'}"
            rows.append((name, first, wall, cpu, note))
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, pinned to one core, "
        f"Python {platform.python_version()}; {args.results:,} results; median of {args.repeat}\n"
    )
    print("| command | CPU, first run | wall | CPU | |\n|---|---:|---:|---:|---|")
    for name, first, wall, cpu, note in rows:
        print(f"| `{name}` | {first:.2f} s | {wall:.2f} s | {cpu:.2f} s | {note} |")


if __name__ == "__main__":
    main()
