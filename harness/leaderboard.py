"""``bench leaderboard``: every stored result → markdown tables of mean ± std over seeds.

One section per dataset, and one more per non-empty experiment ``tag`` on it. Each section has
two tables — the dataset's headline metric, then macro-F1 — with

* rows: method variants (``method_label``): the supervised baseline(s) first, as the lower bound
  the others are read against, then every other variant in alphabetical order;
* columns: label settings, per-class counts by K, then totals by N, then fractions by size;
* cells: ``mean ± std (n)`` over the n seeds (sample std, ddof=1); ``mean (1)`` for a single
  seed, which has no spread; ``–`` where there is no run. The best mean of a column (as shown,
  to two decimals; ties all bold) is **bold** when the column has two or more entries.

Each section lists the command lines its runs were started with (from their provenance). A
method run with variants (``dta_snl[snl=false]``) also gets an ablation table: the method and
its variants at the settings the variants were run at, each with its difference from the full
method.

The headline metric is top-1 accuracy, except on AffectNet, whose balanced test set makes mean
class accuracy the literature's figure. A cell that mixes runs whose configs differ beyond the
seed (not one experiment) is marked † with a footnote. The document depends on the results
only: its date is the newest result's finishing time, so regenerating it from the same results
gives the same bytes.
"""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import BenchError
from harness.health import FLAGS, attach_health
from harness.report.figure_index import recorded_figures
from harness.report.frame import (
    BASELINE,
    BEST_PREFIX,
    EMPTY_CELL,
    METRIC_NAMES,
    PAIRED_BASELINE,
    headline_metric,
    label_order,
    results_frame,
    row_order,
)
from harness.report.pairing import Pairing, paired
from harness.report.protocol import cost_lines, protocol_lines
from harness.report.published import published_lines
from harness.result_filter import FILTERED_DIR, ResultFilter
from harness.result_index import healths
from harness.stats import (
    MAX_SEEDS,
    PairedDifference,
    format_difference,
    seeds_to_separate,
)
from harness.store import atomic_write_text, load_results, paused_gc
from harness.tables import how_many

MIXED_MARK = "†"
PROVENANCE_MARK = "‡"
TIED_MARK = "≈"
UNTESTED_MARK = "?"
HEALTH_MARK = "⚠"
NOT_SEPARATED_MARK = "n.s."
CLOSE = 2.0  # points: a not-separated row whose 95% interval lies within ±CLOSE of the best


class ResultsDirError(BenchError):
    """``--results-dir`` names no folder."""


def _cell(mean: float, std: float, n: int) -> str:
    if n == 0:
        return EMPTY_CELL
    return f"{mean:.2f} ({n})" if n == 1 else f"{mean:.2f} ± {std:.2f} ({n})"


def cell_stats(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """mean, std, count of ``metric`` per (method_label, labels)."""
    grouped = frame.dropna(subset=[metric]).groupby(["method_label", "labels"])[metric]
    return grouped.agg(["mean", "std", "count"])


def best_row(stats: pd.DataFrame, setting: str) -> str | None:
    """The row with the best mean (as shown, to two decimals) at ``setting``; among equal
    means the one with more seeds. None when that row has a single seed (no claim) or the
    column has fewer than two entries (nothing to beat)."""
    column = stats.xs(setting, level="labels")
    if len(column) < 2:
        return None
    ranked = column.assign(shown=column["mean"].round(2)).sort_values(
        ["shown", "count"], ascending=False, kind="stable"
    )
    best = ranked.index[0]
    return best if ranked.iloc[0]["count"] >= 2 else None


def standing(frame: pd.DataFrame, metric: str, setting: str, label: str, best: str) -> str:
    """The mark of a non-best row: close (not separated from the best, and its 95% interval
    within ±:data:`CLOSE` points), not separated (with the Δ and the seeds a paired t-test
    would need to separate it at the observed spread), untested (fewer than two seeds paired
    with it), or none (significantly below)."""
    return _standing(paired(frame, metric, setting, label, best))


def _standing(diff: PairedDifference | None) -> str:
    """:func:`standing` of the paired difference from the best row."""
    if diff is None or not diff.tested:
        return UNTESTED_MARK
    if diff.significant and diff.mean < 0:
        return ""
    if diff.low >= -CLOSE and diff.high <= CLOSE:
        return TIED_MARK
    needed = seeds_to_separate(diff)
    seeds = (
        ""
        if needed is None
        else f", >{MAX_SEEDS} seeds"
        if needed > MAX_SEEDS
        else f", {needed} seeds"
    )
    return f"{NOT_SEPARATED_MARK} Δ{diff.mean:+.1f}{seeds}"


def provenance_mixes(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(method_label, labels) → what its runs mix (``2 commits``, ``torch threads 1, 2``,
    ``devices cpu, NVIDIA H100``, ``2 pretrained backbone files (1ce16d96, 30439b96)``) for
    the cells whose seeds ran at different commits, on different devices, with different
    thread counts or from different pretrained files; a cell of one provenance is absent."""
    mixes = {}
    for key, cell in frame.groupby(["method_label", "labels"]):
        parts = []
        commits = sorted(set(cell["commit"]) - {""})
        if len(commits) > 1:
            parts.append(f"{len(commits)} commits ({', '.join(commits)})")
        devices = sorted(set(cell["device"]) - {""})
        if len(devices) > 1:
            parts.append(f"devices {', '.join(devices)}")
        threads = sorted({int(t) for t in cell["threads"].dropna()})
        if len(threads) > 1:
            parts.append(f"torch threads {', '.join(map(str, threads))}")
        files = sorted(set(cell["pretrain_file"]) - {""})
        if len(files) > 1:
            parts.append(f"{len(files)} pretrained backbone files ({', '.join(files)})")
        if parts:
            mixes[key] = "; ".join(parts)
    return mixes


def metric_table(frame: pd.DataFrame, metric: str) -> tuple[str, list[str]]:
    """The markdown table of ``metric`` for one dataset section, and the cells (``method at
    labels``) that mix different experiments.

    The best mean of a column is **bold** when it has two or more seeds; every other row is
    then marked ``≈`` when a paired t-test over seeds does not put it significantly below
    the bold one (p ≥ 0.05), ``?`` when it shares fewer than two seeds with it (untested),
    and nothing when it is significantly below. Cells mixing experiments are marked †, cells
    mixing commits, devices, thread counts or pretrained backbone files ‡.
    """
    rows = row_order(frame)
    columns = sorted(frame["labels"].unique(), key=label_order)
    stats = cell_stats(frame, metric)
    mixed = frame.groupby(["method_label", "labels"])["experiment"].nunique()
    provenance = provenance_mixes(frame)
    best = {setting: best_row(stats, setting) for setting in stats.index.unique("labels")}
    pairing = Pairing(frame, metric)

    table = pd.DataFrame(EMPTY_CELL, index=pd.Index(rows, name="method"), columns=columns)
    for (label, setting), row in stats.iterrows():
        cell = _cell(row["mean"], row["std"], int(row["count"]))
        if best[setting] == label:
            cell = f"**{cell}**"
        elif best[setting] is not None:
            mark = _standing(pairing.paired(setting, label, best[setting]))
            cell = f"{cell} {mark}".rstrip()
        table.loc[label, setting] = cell
    notes = []
    for (label, setting), count in mixed.items():
        if count > 1:
            table.loc[label, setting] += f" {MIXED_MARK}"
            notes.append(f"{label} at {setting}")
    for label, setting in provenance:
        if table.loc[label, setting] != EMPTY_CELL:
            table.loc[label, setting] += f" {PROVENANCE_MARK}"
    for (label, setting), marks in health_marks(frame).items():
        if table.loc[label, setting] != EMPTY_CELL:
            table.loc[label, setting] += f" {HEALTH_MARK} {marks}"
    return table.to_markdown(colalign=["left", *["right"] * len(columns)]), notes


def health_marks(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(row, label setting) → ``collapsed 2/3; never pseudo-labelled 3/3``: how many of the
    cell's runs each health rule flagged (harness/health.py), for the cells with any."""
    marks = {}
    for (label, setting), cell in frame.groupby(["method_label", "labels"]):
        counts = Counter(flag for flags in cell["health"] for flag in flags)
        if counts:
            marks[(label, setting)] = "; ".join(
                f"{flag} {counts[flag]}/{len(cell)}" for flag in FLAGS if flag in counts
            )
    return marks


def health_lines(frame: pd.DataFrame, results: list[dict[str, Any]]) -> list[str]:
    """The runs a health rule flagged, one line each with its reasons, under the tables."""
    flagged = [  # ``results`` are the frame's runs, in its order
        f"- `{result['run_id']}`: {'; '.join(result['health']['reasons'])}"
        for result, flags in zip(results, frame["health"], strict=True)
        if flags
    ]
    if not flagged:
        return []
    return [
        f"{HEALTH_MARK} Runs whose health flags a failure (rules: docs/health.md):",
        "",
        *flagged,
        "",
    ]


def paired_table(frame: pd.DataFrame, metric: str, baseline: str, skip: set[str]) -> str | None:
    """Markdown table of every row's paired difference from ``baseline`` (a method label) at
    each label setting ``baseline`` ran at: ``mean Δ [95 % CI] p (pairs)``. Rows in ``skip``
    (and the baseline) are left out; None when no row pairs with the baseline."""
    settings = sorted(
        frame.loc[frame["method_label"] == baseline, "labels"].unique(), key=label_order
    )
    rows = [label for label in row_order(frame) if label != baseline and label not in skip]
    table = pd.DataFrame(EMPTY_CELL, index=pd.Index(rows, name="method"), columns=settings)
    pairing = Pairing(frame, metric)
    for label in rows:
        for setting in settings:
            diff = pairing.paired(setting, label, baseline)
            if diff is not None:
                table.loc[label, setting] = format_difference(diff)
    table = table.loc[(table != EMPTY_CELL).any(axis=1), (table != EMPTY_CELL).any(axis=0)]
    if table.empty:
        return None
    return table.to_markdown(colalign=["left", *["right"] * len(table.columns)])


def ablation_table(frame: pd.DataFrame, method: str, metric: str) -> str:
    """The markdown ablation table of ``method`` for one dataset section: rows the method and
    its variants (``method[key=value]``), and for each label setting a variant was run at, the
    cell and ``Δ``: the variant minus the full method, paired by seed (mean, 95 % CI, p,
    pairs)."""
    part = frame[frame["method"] == method]
    variants = part[part["method_label"] != method]
    settings = sorted(variants["labels"].unique(), key=label_order)
    stats = cell_stats(part, metric)
    # The full method first: its name is a prefix of every variant's.
    rows = sorted(part["method_label"].unique())
    columns = [column for setting in settings for column in (setting, f"Δ {setting}")]
    table = pd.DataFrame(EMPTY_CELL, index=pd.Index(rows, name="variant"), columns=columns)
    pairing = Pairing(part, metric)
    for (label, setting), row in stats.iterrows():
        if setting not in settings:
            continue
        table.loc[label, setting] = _cell(row["mean"], row["std"], int(row["count"]))
        diff = pairing.paired(setting, label, method) if label != method else None
        if diff is not None:
            table.loc[label, f"Δ {setting}"] = format_difference(diff)
    return table.to_markdown(colalign=["left", *["right"] * len(columns)])


def _paired_tables(part: pd.DataFrame, metric: str) -> list[str]:
    """The paired-difference tables of one metric: against supervised, then against
    fixmatch where it ran (leaving out the supervised rows, already compared)."""
    lines: list[str] = []
    supervised = set(part.loc[part["method"] == BASELINE, "method_label"])
    for baseline, skip in ((BASELINE, set()), (PAIRED_BASELINE, supervised)):
        table = paired_table(part, metric, baseline, skip)
        if table is not None:
            lines += [f"#### {METRIC_NAMES[metric]}: paired Δ vs {baseline}", "", table, ""]
    return lines


def _section(
    part: pd.DataFrame, dataset: str, results: list[dict[str, Any]], extra: list[str]
) -> str:
    """One dataset (and tag): protocol, headline and macro-F1 tables with their paired
    differences and footnotes, cost, ablations, ``extra`` lines (figures), commands."""
    headline = headline_metric(dataset)
    lines: list[str] = [*protocol_lines(results, provenance_mixes(part)), ""]
    for metric in dict.fromkeys((headline, "macro_f1", BEST_PREFIX + headline)):
        table, notes = metric_table(part, metric)
        lines += [f"### {METRIC_NAMES[metric]}", "", table, ""]
        if metric.startswith(BEST_PREFIX):
            lines += [BEST_NOTE, ""]
            lines += published_lines(part, dataset)
            continue  # a figure chosen on the test set gets no paired tests
        if notes:
            lines += [
                f"{MIXED_MARK} Not one experiment: these cells average runs whose configs "
                f"differ beyond the seed ({'; '.join(notes)}). Rerun them with one config, or "
                "keep experiments apart with `tag=...`.",
                "",
            ]
        lines += _paired_tables(part, metric)
    lines += health_lines(part, results)
    ablated = sorted(part.loc[part["method_label"] != part["method"], "method"].unique())
    for method in ablated:
        lines += [
            f"### Ablations of {method} — {METRIC_NAMES[headline]}",
            "",
            ablation_table(part, method, headline),
            "",
            f"Δ: the variant minus full {method}, paired by seed (mean [95 % CI] p (pairs)).",
            "",
        ]
    lines += [*cost_lines(part), "", *extra]
    commands = sorted(command for command in part["command"].unique() if command)
    if commands:
        lines += ["", "Produced by:", "", *[f"- `{command}`" for command in commands], ""]
    return "\n".join(lines).rstrip() + "\n"


def _sections(
    frame: pd.DataFrame, results: list[dict[str, Any]], extras: dict[str, list[str]]
) -> list[tuple[str, str, str]]:
    """(dataset, section name, markdown body) per section, sorted by dataset, tag ("" first)
    and name: one section per dataset, tag and protocol (``frame.section_names``)."""
    sections = []
    for (dataset, _, key), part in frame.groupby(["dataset", "tag", "section"], sort=True):
        chosen = [results[i] for i in part.index]
        sections.append((dataset, key, _section(part, dataset, chosen, extras.get(key, []))))
    return sections


def leaderboard_tables(results: list[dict[str, Any]]) -> dict[str, str]:
    """Section name (``dataset``, ``dataset [tag]``, and what differs where one dataset and
    tag hold several protocols: ``frame.section_names``) → its markdown: protocol, the
    headline-metric table then the macro-F1 table, each under a ``###`` heading and followed
    by its paired differences, cost, ablations."""
    frame = results_frame(results)
    return {key: body for _, key, body in _sections(frame, results, {})}


def sections_of(
    results: list[dict[str, Any]], frame: pd.DataFrame | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each section's results, sections in document order (``frame``: their
    :func:`results_frame`, where the caller has it)."""
    frame = results_frame(results) if frame is None else frame
    sections: dict[str, list[dict[str, Any]]] = {key: [] for key in _section_keys(frame)}
    for result, name in zip(results, frame["section"], strict=True):
        sections[name].append(result)
    return sections


def section_keys(results: list[dict[str, Any]]) -> list[str]:
    """The section names of ``results``, in document order."""
    return _section_keys(results_frame(results))


def _section_keys(frame: pd.DataFrame) -> list[str]:
    """:func:`section_keys` of a results frame."""
    keys = (
        frame[["dataset", "tag", "section"]]
        .drop_duplicates()
        .sort_values(["dataset", "tag", "section"])
    )
    return list(keys["section"])


BEST_NOTE = (
    "The best of each run's periodic test-set evaluations, as Ada-CM and LEAF report: chosen "
    "on the test set (there is no validation split), so optimistic; the tables above, of the "
    "final EMA model, are the honest figures."
)

LEGEND = (
    "Cells: mean ± sample std over seeds (number of seeds); `mean (1)` for one seed. "
    "The numbers are the final (EMA) model's on the test set; the last table of a section, "
    "the best evaluation's, is labelled as chosen on the test set. "
    "Rows: supervised first, then alphabetical.\n\n"
    "Every seed draws one labelled split that all methods share, so methods are compared "
    "**paired by seed** (the per-seed differences, on the same split): mean Δ, its 95 % "
    "Student-t confidence interval and the two-sided paired t-test's p, with the number of "
    "pairs. **Bold**: the best mean of a column, when it has two or more seeds (with one seed, "
    f"no claim). `{TIED_MARK}` close: not significantly below the bold cell (paired t-test, "
    f"p ≥ 0.05) and the 95 % interval of the difference within ±{CLOSE:g} points. "
    f"`{NOT_SEPARATED_MARK} Δ-23.2, 5 seeds`: not separated from the bold cell either, but not "
    "shown close: the mean paired difference, and the seeds a paired t-test would need to "
    "separate that difference at its observed spread (power 0.8, two-sided 0.05; a planning "
    f"figure, itself uncertain with few seeds). `{UNTESTED_MARK}`: fewer than two "
    "seeds shared with the bold cell, not tested. Unmarked: significantly below the best. "
    f"`{MIXED_MARK}`: the cell mixes configs; `{PROVENANCE_MARK}`: its runs come from different "
    "commits, devices, thread counts or pretrained backbone files (listed in the protocol); "
    "seeds that started from different backbone files are not paired. No correction for multiple "
    "comparisons: a p near 0.05 among many rows is weak evidence. "
    f"`{HEALTH_MARK} collapsed 2/3`: 2 of the cell's 3 runs broke that health rule "
    "(collapsed, never pseudo-labelled, thresholds never moved, EMA behind; docs/health.md); "
    "the runs are listed under each section's tables."
)


def render_leaderboard(
    results: list[dict[str, Any]],
    extras: dict[str, list[str]] | None = None,
    frame: pd.DataFrame | None = None,
) -> str:
    """The whole markdown document (deterministic for the same results). ``extras``: section
    name → markdown lines added to that section (the figures of ``bench report``); ``frame``:
    the results' :func:`results_frame`, where the caller has it."""
    lines = ["# fer-bench leaderboard", ""]
    if not results:
        lines += ["Generated by `bench leaderboard` from 0 results: run `bench run` first."]
        return "\n".join(lines) + "\n"
    frame = results_frame(results) if frame is None else frame
    newest = max(frame["finished"]) or "unknown"
    command = "bench report" if extras else "bench leaderboard"
    lines += [
        f"Generated by `{command}` from {len(frame)} results (newest finished {newest}).",
        "",
        LEGEND,
        "",
    ]
    for dataset, key, body in _sections(frame, results, extras or {}):
        headline = METRIC_NAMES[headline_metric(dataset)]
        lines += [f"## {key} — headline: {headline}", "", body]
    return "\n".join(lines).rstrip() + "\n"


def default_board(results_dir: Path, where: ResultFilter | None = None) -> Path:
    """Where the leaderboard goes without ``--output``: ``<results_dir>/leaderboard.md``, or
    ``<results_dir>/filtered/leaderboard.md`` for a filtered one."""
    folder = Path(results_dir) / FILTERED_DIR if where else Path(results_dir)
    return folder / "leaderboard.md"


def check_results_dir(results_dir: Path) -> Path:
    """``results_dir`` when it is a folder; a clear error otherwise (a mistyped
    ``--results-dir`` must not yield an empty board and exit 0)."""
    path = Path(results_dir)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise ResultsDirError(
            f"results folder {path} {what} (--results-dir names the folder bench run wrote to)"
        )
    return path


def cross_dataset_tables(cross_results: list[dict[str, Any]]) -> str:
    """``bench eval``'s results: per training set, rows ``method at labels`` (``[tag]`` when
    set), columns the runs' own test set then each other test set, cells the test set's
    headline metric as ``mean ± std (n)`` over seeds. Empty when there are none."""
    from harness.cross import cross_frame

    frame = cross_frame(cross_results)
    lines: list[str] = []
    for train, part in frame.groupby("train_dataset", sort=True):
        own = f"{train} (own test set)"
        part = part.assign(
            row=part["method_label"] + " at " + part["labels"] + part["tag"].map(_tag_suffix),
            column=[own if r.in_domain else r.test_dataset for r in part.itertuples()],
            value=[getattr(r, headline_metric(r.test_dataset)) for r in part.itertuples()],
        )
        columns = [own, *sorted(set(part["column"]) - {own})]
        stats = part.groupby(["row", "column"])["value"].agg(["mean", "std", "count"])
        table = pd.DataFrame(
            EMPTY_CELL, index=pd.Index(sorted(part["row"].unique()), name="run"), columns=columns
        )
        for (row, column), stat in stats.iterrows():
            table.loc[row, column] = _cell(stat["mean"], stat["std"], int(stat["count"]))
        short = {c: METRIC_NAMES[headline_metric(c.split(" (")[0])].split(" (")[0] for c in columns}
        table.columns = [f"{c}: {short[c]}" for c in columns]
        lines += [f"### trained on {train}", "", table.to_markdown(), ""]
    if not lines:
        return ""
    head = [
        "## Cross-dataset (`bench eval`)",
        "",
        "The final EMA model of each run on other test sets, each test set's headline metric; "
        "classes matched by expression name over the classes both sides have "
        "(`results/<train>/cross/*.json` say which test images were excluded and which model "
        "classes masked). The first column is the same runs on their own test set.",
        "",
    ]
    return "\n".join(head + lines)


def _tag_suffix(tag: str) -> str:
    return f" [{tag}]" if tag else ""


def write_leaderboard(
    results_dir: Path,
    output: Path | None = None,
    extras: dict[str, list[str]] | None = None,
    where: ResultFilter | None = None,
) -> Path:
    """Regenerate ``<results_dir>/leaderboard.md`` (or ``output``) from the stored results
    (and the cross-dataset results of ``bench eval``, in a section after them). With a
    filter ``where``, only the results it selects, by default into
    ``<results_dir>/filtered/leaderboard.md`` (the results' own board is left as it is).
    Without ``extras`` (``bench leaderboard``), the figure links ``bench report`` recorded
    beside the board are kept (:mod:`harness.report.figure_index`)."""
    return write_board(results_dir, output, extras, where)[0]


def write_board(
    results_dir: Path,
    output: Path | None = None,
    extras: dict[str, list[str]] | None = None,
    where: ResultFilter | None = None,
) -> tuple[Path, str]:
    """:func:`write_leaderboard`, and the short summary ``bench leaderboard`` prints
    (:func:`leaderboard_summary`) from the same results."""
    from harness.cross import load_cross_results

    where = where or ResultFilter()
    results_dir = check_results_dir(results_dir)
    path = Path(output) if output is not None else default_board(results_dir, where)
    with paused_gc():
        known = healths(results_dir)
        results = where.select(load_results(results_dir), f"{results_dir}/")
        # What was read lives to the end: left out of the collections while the board is made,
        # each of which would rescan its millions of objects (a third of the time at 10,000).
        gc.freeze()
    try:
        results = attach_health(results_dir, results, known=known)
        frame = results_frame(results)  # once: on 10,000 results it takes a second
        if extras is None:
            extras = recorded_figures(path.parent, sections_of(results, frame))
        text = render_leaderboard(results, extras, frame)
        summary = leaderboard_summary(results, frame)
    finally:
        gc.unfreeze()
    if where:  # say so under the title: this board is not every result
        title, _, rest = text.partition("\n")
        text = f"{title}\n\nOnly the results selected by `{where.flags()}`.\n{rest}"
    cross = cross_dataset_tables(where.apply(load_cross_results(results_dir)))
    atomic_write_text(path, text + ("\n" + cross.rstrip() + "\n" if cross else ""))
    return path, summary


def leaderboard_summary(results: list[dict[str, Any]], frame: pd.DataFrame | None = None) -> str:
    """What ``bench leaderboard`` prints instead of the whole file: each section's name, run
    count and headline table (the file's own, marks included). ``frame``: the results'
    :func:`results_frame`, where the caller has it."""
    if not results:
        return "0 results: run `bench run` first."
    frame = results_frame(results) if frame is None else frame
    blocks = []
    for (dataset, _, key), part in frame.groupby(["dataset", "tag", "section"], sort=True):
        metric = headline_metric(dataset)
        table, _ = metric_table(part, metric)
        runs = how_many(len(part), "run")
        blocks.append(f"{key} — {METRIC_NAMES[metric]}, {runs}\n{table}")
    return "\n\n".join(blocks)
