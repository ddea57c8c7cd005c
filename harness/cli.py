"""The ``bench`` command: run a grid, tabulate results, list methods."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from harness.errors import BenchError

EXAMPLES = """examples:
  bench run --methods supervised --labels 10%,100%
  bench run --methods dta_snl,fixmatch --labels 10% --seeds 0,1,2
  bench run --methods 'dta_snl,dta_snl[snl=false]' --labels 25/class --dataset rafdb \\
      dataset.root=/data/RAF-DB optim.lr=0.01
  bench leaderboard
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``bench`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Benchmark semi-supervised facial expression recognition methods.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="train and evaluate a grid of methods × label settings × seeds",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--methods", required=True, help="comma list; variants as name[key=value,...]")
    run.add_argument(
        "--labels",
        default="10%",
        help="comma list of label protocols: 10%% (stratified fraction), 4000 (total, "
        "class-balanced), 25/class (per class)",
    )
    run.add_argument("--seeds", default="0", help="comma list or range, e.g. 0,1,2 or 0-4")
    run.add_argument("--dataset", default="synthfer", help="a config in configs/dataset/")
    run.add_argument("--launcher", default=None, help="a config in configs/launcher/ (local)")
    run.add_argument("--results-dir", default="results", type=Path)
    run.add_argument("--force", action="store_true", help="rerun runs whose result exists")
    run.add_argument("--dry-run", action="store_true", help="print the grid; run nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. optim.lr=0.01")

    board = sub.add_parser("leaderboard", help="regenerate results/leaderboard.md from results")
    board.add_argument("--results-dir", default="results", type=Path)
    board.add_argument(
        "--output", type=Path, default=None, help="default: <results-dir>/leaderboard.md"
    )

    sub.add_parser("methods", help="list the registered methods")
    return parser


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """``bench run``: plan the grid, skip finished runs, launch the rest."""
    from harness.launcher import build_launcher
    from harness.plan import build_plan
    from harness.store import has_result

    overrides = list(args.overrides)
    if args.launcher:
        overrides.append(f"launcher={args.launcher}")
    specs = build_plan(args.methods, args.labels, args.seeds, args.dataset, overrides)
    pending = [s for s in specs if args.force or not has_result(args.results_dir, s)]
    table = Table(title=f"{len(specs)} runs, {len(pending)} to run", show_lines=False)
    for column in ("run", "method", "labels", "seed", "status"):
        table.add_column(column)
    for spec in specs:
        status = "to run" if spec in pending else "done (skipped)"
        table.add_row(spec.run_id, spec.method_label, spec.labels, str(spec.seed), status)
    console.print(table)
    if args.dry_run or not pending:
        return 0
    launcher = build_launcher(pending[0].config["launcher"], console, not args.no_progress)
    outcomes = launcher.launch(pending, args.results_dir, args.force)
    failed = [o for o in outcomes if o.state == "failed"]
    for outcome in outcomes:
        colour = {"done": "green", "failed": "red"}.get(outcome.state, "yellow")
        console.print(f"[{colour}]{outcome.state:>9}[/] {outcome.run_id} {outcome.detail}")
    if failed:
        console.print(f"[red]{len(failed)} of {len(outcomes)} runs failed[/]")
        return 1
    console.print("results in", str(args.results_dir), "— tabulate them with `bench leaderboard`")
    return 0


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    """``bench leaderboard``: write the markdown tables and show them."""
    from harness.leaderboard import write_leaderboard

    path = write_leaderboard(args.results_dir, args.output)
    console.print(Markdown(path.read_text()))
    console.print(f"written to {path}")
    return 0


def cmd_methods(args: argparse.Namespace, console: Console) -> int:
    """``bench methods``: the registry, one line each."""
    from harness.registry import available_methods

    table = Table(title="registered methods")
    table.add_column("method")
    table.add_column("description")
    for info in available_methods().values():
        table.add_row(info.name, info.description)
    console.print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bench`` console script."""
    args = build_parser().parse_args(argv)
    console = Console()
    commands = {"run": cmd_run, "leaderboard": cmd_leaderboard, "methods": cmd_methods}
    try:
        return commands[args.command](args, console)
    except BenchError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
