"""The ``bench`` command: run a grid, follow its status, tabulate results, list methods."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from harness.arguments import parse_with_overrides
from harness.errors import BenchError

if TYPE_CHECKING:
    from harness.launchers.status import RunStatus
    from harness.result_filter import ResultFilter
    from harness.spec import RunSpec

EXAMPLES = """examples:
  bench run --methods supervised --labels 10%,100%
  bench run --methods dta_snl,fixmatch --labels 10% --seeds 0,1,2
  bench run --methods 'dta_snl,dta_snl[snl=false]' --labels 25/class --dataset rafdb \\
      --data-root '/data/RAF-DB (copy)' optim.lr=0.01
  bench run --launcher slurm launcher.partition=gpu launcher.gpus_per_node=1 train.device=cuda \\
      --methods fixmatch --labels 10% --seeds 0-4 --wait
  bench status --methods fixmatch --labels 10% --seeds 0-4
  bench leaderboard
  bench report                      # the leaderboard with its figures
  bench report --tag mine --methods fixmatch   # only those: results/filtered/leaderboard.md
  bench export --format csv         # results/export/runs.csv and summary.csv
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
    # The order of the calls is the order `bench --help` lists the subcommands in.
    _add_run_parser(sub)
    _add_status_parser(sub)
    _add_results_parsers(sub)
    sub.add_parser("methods", help="list the registered methods")
    _add_eval_parser(sub)
    _add_pretrain_parser(sub)
    _add_speed_parser(sub)
    return parser


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    """``bench run``: train and evaluate a grid."""
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


def _add_status_parser(sub: argparse._SubParsersAction) -> None:
    """``bench status``: the state of each run of a grid, or of every run."""
    status = sub.add_parser(
        "status",
        help="state of each run of a grid (or --all): done / running / pending / failed / missing",
        epilog="examples:\n  bench status --methods supervised,fixmatch --labels 10% --seeds 0,1\n"
        "  bench status --all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_grid_arguments(status, methods_required=False)
    status.add_argument("--all", action="store_true", help="every run the results folder knows of")


def _add_results_parsers(sub: argparse._SubParsersAction) -> None:
    """``bench leaderboard``, ``report`` and ``export``: tables (and figures) from results."""
    board = sub.add_parser("leaderboard", help="regenerate results/leaderboard.md from results")
    board.add_argument("--results-dir", default="results", type=Path)
    board.add_argument(
        "--output",
        type=Path,
        default=None,
        help="default: <results-dir>/leaderboard.md (filtered: <results-dir>/filtered/...)",
    )
    _add_filter_arguments(board)

    report = sub.add_parser(
        "report", help="the leaderboard with its figures (PNG, in figures/ beside it)"
    )
    report.add_argument("--results-dir", default="results", type=Path)
    report.add_argument(
        "--output",
        type=Path,
        default=None,
        help="default: <results-dir>/leaderboard.md (filtered: <results-dir>/filtered/...)",
    )
    _add_filter_arguments(report)

    export = sub.add_parser("export", help="per-run and aggregated tables as CSV or LaTeX")
    export.add_argument("--format", choices=("csv", "latex"), required=True)
    export.add_argument("--results-dir", default="results", type=Path)
    export.add_argument(
        "--output",
        type=Path,
        default=None,
        help="a folder; default: <results-dir>/export (filtered: <results-dir>/filtered/export)",
    )
    _add_filter_arguments(export)


def _add_filter_arguments(parser: argparse.ArgumentParser, grid: bool = False) -> None:
    """``--tag --methods --dataset --labels --seeds``: which results a reading command uses
    (each a comma list; a result must match every flag given). ``grid``: ``bench eval``'s,
    where methods, labels and seeds name a grid's cells, as for bench run."""
    parser.add_argument("--tag", default=None, help="only results with one of these tags")
    if grid:
        parser.add_argument("--methods", default=None, help="the grid, as for bench run")
        parser.add_argument("--labels", default="10%", help="as for bench run")
        parser.add_argument("--seeds", default="0", help="as for bench run")
        parser.add_argument("--dataset", default="synthfer", help="the dataset the runs trained on")
        return
    parser.add_argument(
        "--methods", default=None, help="only these methods (a name also selects its variants)"
    )
    parser.add_argument("--dataset", default=None, help="only results on these datasets")
    parser.add_argument("--labels", default=None, help="only these label settings, e.g. 10%%,25%%")
    parser.add_argument("--seeds", default=None, help="only these seeds, e.g. 0-2")


def _filter(args: argparse.Namespace) -> ResultFilter:
    """The results filter of a reading command's flags."""
    from harness.result_filter import ResultFilter

    return ResultFilter.parse(args.tag, args.methods, args.dataset, args.labels, args.seeds)


def _add_pretrain_parser(sub: argparse._SubParsersAction) -> None:
    """``bench pretrain``: the shared backbone pretraining on synthetic identities."""
    pretrain = sub.add_parser(
        "pretrain",
        help="train the backbone on synthetic face identities once (cached); runs use it "
        "with +pretrain=NAME",
        epilog="examples:\n  bench pretrain\n  bench pretrain backbone=resnet18 train.threads=4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pretrain.add_argument("--config", default="synth_faces", help="a config in configs/pretrain/")
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bars")
    pretrain.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. pretrain.steps=500")


def _add_speed_parser(sub: argparse._SubParsersAction) -> None:
    """``bench speed``: listed here for ``bench --help``; its flags are harness.throughput's."""
    speed = sub.add_parser(
        "speed",
        help="training throughput: bare model step vs data path vs engine step "
        "(prints a table; --output FILE keeps the JSON; `bench speed --help` for its flags)",
        add_help=False,  # main() hands its flags to harness.throughput's parser
    )
    speed.add_argument("speed_args", nargs=argparse.REMAINDER)


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    """``bench eval``: finished runs (a grid as ``bench run`` names it, or run ids) on another
    dataset's test split."""
    ev = sub.add_parser(
        "eval",
        help="evaluate finished runs' kept weights on another dataset's test split",
        epilog="examples:\n  bench eval --methods supervised,fixmatch --labels 10% --seeds 0-2 "
        "--tag mine --on rafdb --data-root /data/RAF-DB\n"
        "  bench eval --runs fixmatch__10pct__seed0__1a2b3c4d"
        " --on folder dataset.root=/data/ckplus dataset.name=ckplus\n"
        "classes are matched by expression name; exit 1: missing weights or unmappable classes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--on", required=True, help="the test dataset: a config in configs/dataset/")
    ev.add_argument("--runs", default=None, help="comma list of run ids (instead of the grid)")
    _add_filter_arguments(ev, grid=True)
    ev.add_argument(
        "--data-root",
        default=None,
        help="the test dataset's folder (dataset.root of --on), any path as it is, as for "
        "bench run",
    )
    ev.add_argument("--results-dir", default="results", type=Path)
    ev.add_argument("--force", action="store_true", help="evaluate again (the old result is kept)")
    ev.add_argument(
        "overrides", nargs="*", help="overrides of the test dataset's config, e.g. dataset.root=..."
    )


def _add_grid_arguments(parser: argparse.ArgumentParser, methods_required: bool) -> None:
    """The flags that name a grid: the same for ``run`` and ``status``."""
    parser.add_argument(
        "--methods", required=methods_required, help="comma list; variants as name[key=value,...]"
    )
    parser.add_argument(
        "--labels",
        default="10%",
        help="comma list of label protocols: 10%% (stratified fraction), 4000 (total, "
        "class-balanced), 25/class (per class), adacm:4000 (Ada-CM's published RAF-DB split; "
        "also 100, 400, 1000, 2000), perclass:10/15/15/15/15/15/15 (a count for each class)",
    )
    parser.add_argument("--seeds", default="0", help="comma list or range, e.g. 0,1,2 or 0-4")
    parser.add_argument("--dataset", default="synthfer", help="a config in configs/dataset/")
    parser.add_argument(
        "--launcher", default=None, help="a config in configs/launcher/: local (default), slurm"
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="the dataset folder (dataset.root), any path as it is: spaces, accents, brackets, "
        "commas, '=' need no Hydra quoting",
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
        help="Hydra overrides, e.g. optim.lr=0.01; a comma list sweeps: optim.lr=0.01,0.03; "
        """quote a value holding spaces, brackets, commas or '=': 'key="a value"'""",
    )


def _plan(args: argparse.Namespace) -> list[RunSpec]:
    """The RunSpecs of the grid named by the command line."""
    from harness.config import add_config_dir
    from harness.plan import build_plan

    for folder in args.config_dir:
        add_config_dir(folder)
    overrides = [*args.overrides, *_root_override(args.data_root)]
    if args.launcher:
        overrides.append(f"launcher={args.launcher}")
    return build_plan(args.methods, args.labels, args.seeds, args.dataset, overrides)


def _root_override(data_root: str | None) -> list[str]:
    """``--data-root PATH`` as the override ``dataset.root=PATH``: absolute, quoted for Hydra
    (spaces, brackets, commas, '=' need no quoting by the user)."""
    if data_root is None:
        return []
    from harness.config import quote_value

    return [f"dataset.root={quote_value(os.path.abspath(os.path.expanduser(data_root)))}"]


def _check_weights_files(specs: Sequence[RunSpec]) -> None:
    """Refuse, before anything runs, a ``backbone.weights`` that is not a file: each run would
    fail on it after loading its data (on SLURM, a job each). A pretraining replaces it."""
    from harness.errors import ConfigError

    for spec in specs:
        path = spec.config["backbone"].get("weights")
        if path and not spec.config.get("pretrain") and not Path(path).expanduser().is_file():
            raise ConfigError(
                f"backbone.weights={path}: no such file; give a local checkpoint file "
                "(.pth/.pt/.safetensors) holding the backbone's state_dict"
            )


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """``bench run``: plan the grid, skip finished and queued runs, launch the rest."""
    from harness.launchers import build_launcher
    from harness.launchers.status import grid_statuses, needs_launch
    from harness.steplog import check_tensorboard

    specs = _plan(args)
    check_tensorboard(any(spec.config["train"]["tensorboard"] for spec in specs))
    statuses = grid_statuses(specs, args.results_dir)
    pending = [s for s, st in zip(specs, statuses, strict=True) if needs_launch(st, args.force)]
    to_run = {s.run_id for s in pending}
    _check_weights_files(pending)
    notes = [_plan_note(st, s.run_id in to_run) for s, st in zip(specs, statuses, strict=True)]
    print_plan(console, specs, notes, len(pending))
    print_cost(console, pending, args.results_dir)
    print_warnings(console, pending)
    launcher = build_launcher(specs[0].config["launcher"], console, not args.no_progress)
    if args.dry_run:
        if pending:
            # soft_wrap: a batch script is copied as it is, never folded at the console's width
            console.print(
                launcher.preview(pending, args.results_dir),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        return 0
    outcomes = launcher.launch(pending, args.results_dir, args.force) if pending else []
    submitted = {o.run_id for o in outcomes if o.state == "submitted"}
    # --wait follows what was just submitted and what an earlier `bench run` left queued.
    watch = [s for s, st in zip(specs, statuses, strict=True) if s.run_id in submitted or st.live]
    if args.wait and watch:
        from harness.launchers.follow import follow

        followed = {
            o.run_id: o
            for o in follow(watch, args.results_dir, console, not args.no_progress, launcher.poll_s)
        }
        outcomes = [followed.pop(o.run_id, o) for o in outcomes] + list(followed.values())
    if not outcomes:
        return 0
    failed = [o for o in outcomes if o.state == "failed"]
    for outcome in outcomes:
        colour = {"done": "green", "failed": "red"}.get(outcome.state, "yellow")
        detail = escape(outcome.detail.splitlines()[0] if outcome.detail else "")
        if outcome.reported and outcome.state == "failed":
            detail = "(the error is printed above)"  # each error once
        console.print(f"[{colour}]{outcome.state:>9}[/] {outcome.run_id} {detail}", soft_wrap=True)
    if failed:
        console.print(f"[red]{len(failed)} of {len(outcomes)} runs failed[/]")
        return 1
    if any(o.state == "stopped" for o in outcomes):
        console.print(
            "[yellow]stopped[/]: finished results are kept; the same command resumes the rest"
        )
        from harness.interrupts import stop_exit_code

        return stop_exit_code()  # 130 after Ctrl-C, 143 after SIGTERM, as shells report them
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
    from harness.tables import how_many, print_table

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
    title = f"{how_many(len(specs), 'run')}{sweep}, {to_run} to run"
    print_table(console, title, columns, rows, caption)


def print_cost(console: Console, pending: Sequence[RunSpec], results_dir: Path) -> None:
    """The expected device time of the runs to run, from ``bench speed``'s saved figures."""
    from harness.cost import cost_lines

    for line in cost_lines(pending, results_dir=results_dir):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def print_warnings(console: Console, specs: Sequence[RunSpec]) -> None:
    """The EMA-horizon warning of the runs about to train: each distinct warning once for the
    grid, with the number of runs it concerns (not once per run, in every run's log)."""
    from harness.ema import ema_horizon_warning

    counts: dict[str, int] = {}
    for spec in specs:
        warning = ema_horizon_warning(spec.config["ema"], int(spec.config["train"]["steps"]))
        if warning:
            counts[warning] = counts.get(warning, 0) + 1
    for warning, count in counts.items():
        runs = f"{count} of the runs to train" if count < len(specs) else "every run to train"
        console.print(
            f"[bold yellow]warning[/] ({runs}): {escape(warning)}", highlight=False, soft_wrap=True
        )


def _plan_note(status: RunStatus, to_run: bool) -> str:
    """The status column of ``bench run``'s grid table."""
    job = f" (job {status.job_id})" if status.job_id else ""
    if status.holder:  # trained by another process now: refused at once, not after its load
        job = f" ({status.holder})"
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
    """``bench leaderboard``: write the markdown file; print each section's headline table
    and where the file is (the whole file is hundreds of lines)."""
    from harness.leaderboard import write_board
    from harness.report.figure_index import index_path

    path, summary = write_board(args.results_dir, args.output, where=_filter(args))
    console.print(summary, markup=False, highlight=False, soft_wrap=True)
    figures = "" if index_path(path.parent).is_file() else "; `bench report` draws the figures"
    console.print(
        f"\nwritten to {path} (every section's protocol, macro-F1, paired differences, "
        f"ablations and cost{figures})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """``bench report``: the leaderboard, its figures, and where they were written."""
    from harness.report.build import write_report

    path, figures = write_report(args.results_dir, args.output, _filter(args))
    console.print(f"{len(figures)} figures in {path.parent / 'figures'}")
    console.print(f"written to {path}")
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    """``bench export``: the per-run and aggregated tables, as CSV or LaTeX files."""
    from harness.report.export import write_export

    for path in write_export(args.results_dir, args.format, args.output, _filter(args)):
        console.print(f"written to {path}")
    return 0


def cmd_speed(args: argparse.Namespace, console: Console) -> int:
    """Run the throughput benchmark (:mod:`harness.throughput`) with the remaining flags."""
    from harness.throughput import main as throughput_main

    return throughput_main(args.speed_args, prog="bench speed")


def cmd_methods(args: argparse.Namespace, console: Console) -> int:
    """``bench methods``: the registry, one line each."""
    from harness.registry import available_methods
    from harness.tables import print_table

    rows = [[info.name, info.description] for info in available_methods().values()]
    print_table(console, "registered methods", ("method", "description"), rows)
    return 0


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    """``bench eval``: see :mod:`harness.evaluate`."""
    from harness.evaluate import run_eval_command

    args.overrides = [*args.overrides, *_root_override(args.data_root)]
    return run_eval_command(args, console)


def cmd_pretrain(args: argparse.Namespace, console: Console) -> int:
    """``bench pretrain``: build (or reuse) the pretrained backbone and report its figures."""
    from harness.pretrain import pretrain_command

    pretrain_command(args.config, list(args.overrides), console, not args.no_progress)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bench`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["speed"]:
        # Its flags, --help included, belong to harness.throughput's own parser.
        args = argparse.Namespace(command="speed", speed_args=argv[1:])
    else:
        args = parse_with_overrides(build_parser(), argv)
    console = Console(emoji=False)  # adacm:100: is a label setting, not 💯
    commands = {
        "run": cmd_run,
        "status": cmd_status,
        "leaderboard": cmd_leaderboard,
        "report": cmd_report,
        "export": cmd_export,
        "methods": cmd_methods,
        "eval": cmd_eval,
        "pretrain": cmd_pretrain,
        "speed": cmd_speed,
    }
    try:
        return commands[args.command](args, console)
    except BenchError as err:
        # escape: a message quoting name[key=value] is not rich markup.
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as err:  # a second stop signal, or Ctrl-C before any run started
        from harness.interrupts import abort_line

        line, code = abort_line(err)
        console.print(f"[yellow]{line}[/]", highlight=False)
        return code


if __name__ == "__main__":
    sys.exit(main())
