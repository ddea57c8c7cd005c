"""How long the read-only ``bench`` commands take on a results folder of N results.

Makes N result files in a temporary folder (copies of a committed synthfer result with the
method, label setting, seed and run id varied, so every command reads them as real ones), then
times each command as a fresh subprocess (Python start and imports included, as a user sees
it) and prints the median of ``--repeat`` runs as a markdown table.

    python benchmarks/cli_latency.py --results 100 10000 --repeat 3

Run it from the checkout (or with fer-bench installed); ``OMP_NUM_THREADS`` is set to 1 for
the commands unless already set.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("supervised", "fixmatch", "flexmatch", "freematch", "adacm", "dta_snl")
LABELS = ("5%", "10%", "25%", "100%")


def fake_results(template: dict, count: int, results_dir: Path) -> None:
    """``count`` valid results: methods × label settings × seeds, seeds growing as needed."""
    folder = results_dir / template["dataset"]
    folder.mkdir(parents=True)
    for index in range(count):
        method = METHODS[index % len(METHODS)]
        labels = LABELS[(index // len(METHODS)) % len(LABELS)]
        seed = index // (len(METHODS) * len(LABELS))
        result = copy.deepcopy(template)
        run_id = f"{method}__{labels.replace('%', 'pct')}__seed{seed}__{index:08x}"
        result.update(run_id=run_id, method=method, method_label=method, labels=labels, seed=seed)
        result["metrics"]["top1"] = 50 + (index % 37) / 3
        (folder / f"{run_id}.json").write_text(json.dumps(result, indent=1))


def commands(results_dir: Path) -> dict[str, list[str]]:
    """The read-only commands, on ``results_dir``."""
    where = ["--results-dir", str(results_dir)]
    grid = ["--methods", "supervised,fixmatch", "--labels", "10%,25%", "--seeds", "0-2"]
    return {
        "bench methods": ["methods"],
        "bench status --all": ["status", "--all", *where],
        "bench status (12-run grid)": ["status", *grid, *where],
        "bench run --dry-run (12-run grid)": ["run", *grid, "--dry-run", *where],
        "bench leaderboard": ["leaderboard", *where, "--output", str(results_dir / "lb.md")],
    }


def time_command(args: list[str], cwd: Path, repeat: int) -> float:
    """Median wall-clock seconds of ``bench <args>`` as a subprocess; fails loudly on rc != 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.setdefault("OMP_NUM_THREADS", "1")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True
        )
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"bench {' '.join(args)} failed:\n{proc.stdout.decode()[-2000:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, nargs="+", default=[100, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    template_path = min((ROOT / "results").glob("synthfer/*.json"))
    template = json.loads(template_path.read_text())
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.results:
            results_dir = Path(tmp) / f"results-{count}"
            fake_results(template, count, results_dir)
            for name, command in commands(results_dir).items():
                rows.setdefault(name, []).append(time_command(command, Path(tmp), args.repeat))
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} usable cores, Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}; median of {args.repeat}\n"
    )
    header = " | ".join(f"{n:,} results" for n in args.results)
    print(f"| command | {header} |\n|---|{'---:|' * len(args.results)}")
    for name, seconds in rows.items():
        print(f"| `{name}` | {' | '.join(f'{s:.2f} s' for s in seconds)} |")


if __name__ == "__main__":
    main()
