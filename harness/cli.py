"""The ``bench`` command: run a grid, follow its status, tabulate results, list methods."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from harness.errors import BenchError

if TYPE_CHECKING:
    from harness.launchers.status import RunStatus
    from harness.spec import RunSpec

EXAMPLES = """examples:
  bench run --methods supervised --labels 10%,100%
  bench run --methods dta_snl,fixmatch --labels 10% --seeds 0,1,2
  bench run --methods 'dta_snl,dta_snl[snl=false]' --labels 25/class --dataset rafdb \\
      dataset.root=/data/RAF-DB optim.lr=0.01
  bench run --launcher slurm launcher.partition=gpu launcher.gpus_per_node=1 train.device=cuda \\
      --methods fixmatch --labels 10% --seeds 0-4 --wait
  bench status --methods fixmatch --labels 10% --seeds 0-4
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
    _add_grid_arguments(run, methods_required=True)
    run.add_argument("--force", action="store_true", help="rerun runs whose result exists")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the grid and what the launcher would do (SLURM: the batch scripts); "
        "run nothing",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="--launcher slurm: follow the jobs until all end; exit 1 if any failed",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    status = sub.add_parser(
        "status",
        help="state of each run of a grid (or --all): done / running / pending / failed / missing",
        epilog="examples:\n  bench status --methods supervised,fixmatch --labels 10% --seeds 0,1\n"
        "  bench status --all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_grid_arguments(status, methods_required=False)
    status.add_argument("--all", action="store_true", help="every run the results folder knows of")

    board = sub.add_parser("leaderboard", help="regenerate results/leaderboard.md from results")
    board.add_argument("--results-dir", default="results", type=Path)
    board.add_argument(
        "--output", type=Path, default=None, help="default: <results-dir>/leaderboard.md"
    )

    sub.add_parser("methods", help="list the registered methods")
    return parser


def _add_grid_arguments(parser: argparse.ArgumentParser, methods_required: bool) -> None:
    """The flags that name a grid: the same for ``run`` and ``status``."""
    parser.add_argument(
        "--methods", required=methods_required, help="comma list; variants as name[key=value,...]"
    )
    parser.add_argument(
        "--labels",
        default="10%",
        help="comma list of label protocols: 10%% (stratified fraction), 4000 (total, "
        "class-balanced), 25/class (per class)",
    )
    parser.add_argument("--seeds", default="0", help="comma list or range, e.g. 0,1,2 or 0-4")
    parser.add_argument("--dataset", default="synthfer", help="a config in configs/dataset/")
    parser.add_argument(
        "--launcher", default=None, help="a config in configs/launcher/: local (default), slurm"
    )
    parser.add_argument("--results-dir", default="results", type=Path)
    parser.add_argument(
        "--config-dir",
        action="append",
        type=Path,
        default=[],
        help="a folder of your own config options (dataset/NAME.yaml, launcher/NAME.yaml, ... "
        "as the built-in ones, with names of their own); may be repeated",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides, e.g. optim.lr=0.01; a comma list sweeps: optim.lr=0.01,0.03",
    )


def _plan(args: argparse.Namespace) -> list[RunSpec]:
    """The RunSpecs of the grid named by the command line."""
    from harness.config import add_config_dir
    from harness.plan import build_plan

    for folder in args.config_dir:
        add_config_dir(folder)
    overrides = list(args.overrides)
    if args.launcher:
        overrides.append(f"launcher={args.launcher}")
    return build_plan(args.methods, args.labels, args.seeds, args.dataset, overrides)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """``bench run``: plan the grid, skip finished and queued runs, launch the rest."""
    from harness.launchers import build_launcher
    from harness.launchers.status import grid_statuses, needs_launch

    specs = _plan(args)
    statuses = grid_statuses(specs, args.results_dir)
    pending = [s for s, st in zip(specs, statuses, strict=True) if needs_launch(st, args.force)]
    to_run = {s.run_id for s in pending}
    notes = [_plan_note(st, s.run_id in to_run) for s, st in zip(specs, statuses, strict=True)]
    print_plan(console, specs, notes, len(pending))
    launcher = build_launcher(specs[0].config["launcher"], console, not args.no_progress)
    if args.dry_run:
        if pending:
            console.print(
                launcher.preview(pending, args.results_dir), highlight=False, markup=False
            )
        return 0
    outcomes = launcher.launch(pending, args.results_dir, args.force) if pending else []
    submitted = {o.run_id for o in outcomes if o.state == "submitted"}
    # --wait follows what was just submitted and what an earlier `bench run` left queued.
    watch = [s for s, st in zip(specs, statuses, strict=True) if s.run_id in submitted or st.live]
    if args.wait and watch:
        from harness.launchers.follow import follow

        poll_s = float(specs[0].config["launcher"].get("poll_s", 5.0))
        followed = {
            o.run_id: o
            for o in follow(watch, args.results_dir, console, not args.no_progress, poll_s)
        }
        outcomes = [followed.pop(o.run_id, o) for o in outcomes] + list(followed.values())
    if not outcomes:
        return 0
    failed = [o for o in outcomes if o.state == "failed"]
    for outcome in outcomes:
        colour = {"done": "green", "failed": "red"}.get(outcome.state, "yellow")
        detail = escape(outcome.detail.splitlines()[0] if outcome.detail else "")
        console.print(f"[{colour}]{outcome.state:>9}[/] {outcome.run_id} {detail}", soft_wrap=True)
    if failed:
        console.print(f"[red]{len(failed)} of {len(outcomes)} runs failed[/]")
        return 1
    if any(o.state == "stopped" for o in outcomes):
        console.print(
            "[yellow]stopped[/]: finished results are kept; the same command resumes the rest"
        )
        return 130  # the shell's code for an interrupted command
    if any(o.state == "submitted" for o in outcomes):
        console.print("follow them with `bench status` (same grid flags, or --all)")
    else:
        console.print(
            "results in", str(args.results_dir), "— tabulate them with `bench leaderboard`"
        )
    return 0


def print_plan(
    console: Console, specs: Sequence[RunSpec], notes: Sequence[str], to_run: int
) -> None:
    """``bench run``'s grid: one row per run, with the images its label setting labels (in
    total and per class) and what each configuration of a sweep changes."""
    from harness.plan_view import labelled_images, protocol_meaning
    from harness.spec import row_label
    from harness.tables import print_table

    configurations = len({s.sweep for s in specs})
    sweep = f", {configurations} configurations swept" if configurations > 1 else ""
    images = labelled_images(specs)
    columns = ("run", "method", "labels", "labelled", images.per_class_header, "seed", "status")
    rows = [
        [
            spec.run_id,
            row_label(spec.method_label, spec.sweep),
            protocol_meaning(spec.labels),
            *images.cells(spec),
            str(spec.seed),
            note,
        ]
        for spec, note in zip(specs, notes, strict=True)
    ]
    caption = f"labelled images unknown: {images.problem}" if images.problem else ""
    print_table(console, f"{len(specs)} runs{sweep}, {to_run} to run", columns, rows, caption)


def _plan_note(status: RunStatus, to_run: bool) -> str:
    """The status column of ``bench run``'s grid table."""
    job = f" (job {status.job_id})" if status.job_id else ""
    if status.state == "done":
        return "to run again (--force)" if to_run else "done (skipped)"
    if status.live:
        return f"{status.state}{job}: skipped"
    if status.state == "failed":
        return f"failed{job}: to run again"
    return "to run"


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    """``bench status``: the state of each run, and why the failed ones failed."""
    from harness.errors import ConfigError
    from harness.launchers.status import all_statuses, grid_statuses, print_failures, print_statuses

    if args.all == bool(args.methods):
        raise ConfigError(
            "bench status needs either the grid's flags (--methods ... [--labels --seeds "
            "--dataset key=value ...], as given to bench run) or --all"
        )
    if args.all:
        statuses = all_statuses(args.results_dir)
    else:
        statuses = grid_statuses(_plan(args), args.results_dir)
    print_statuses(console, statuses)
    print_failures(console, statuses)
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
    commands = {
        "run": cmd_run,
        "status": cmd_status,
        "leaderboard": cmd_leaderboard,
        "methods": cmd_methods,
    }
    try:
        return commands[args.command](args, console)
    except BenchError as err:
        # escape: a message quoting name[key=value] is not rich markup.
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
