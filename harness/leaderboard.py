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

import math
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import LabelProtocolError
from harness.labels import parse_protocol
from harness.spec import config_hash, row_label
from harness.store import atomic_write_text, load_results

METRIC_NAMES = {
    "top1": "top-1 accuracy (%)",
    "mean_class_acc": "mean class accuracy (%)",
    "macro_f1": "macro-F1 (%)",
}
BALANCED_TEST_SETS = ("affectnet7", "affectnet8")
BASELINE = "supervised"
EMPTY_CELL = "–"
MIXED_MARK = "†"


def headline_metric(dataset: str) -> str:
    """The figure a dataset's literature reports first."""
    return "mean_class_acc" if dataset in BALANCED_TEST_SETS else "top1"


def experiment_key(result: dict[str, Any]) -> str:
    """Identity of the experiment a run belongs to: the hash of its config minus the seed
    (and minus the keys ``config_hash`` ignores). Empty when the result has no config, which
    then never triggers the mixed-cell footnote."""
    config = result.get("config")
    if not isinstance(config, dict):
        return ""
    return config_hash({key: value for key, value in config.items() if key != "seed"})


def results_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: dataset, tag, method, method_label, labels, seed, config_hash,
    experiment (config hash without the seed), finished, and the three table metrics."""
    columns = [
        "dataset",
        "tag",
        "method",
        "method_label",
        "labels",
        "seed",
        "config_hash",
        "experiment",
        "finished",
        "command",
        *METRIC_NAMES,
    ]
    rows = []
    for result in results:
        metrics = result.get("metrics") or {}
        timing = result.get("timing") or {}
        rows.append(
            {
                "dataset": result["dataset"],
                "tag": result.get("tag") or "",
                "method": result.get("method") or result["method_label"],
                "method_label": result_row_label(result),
                "labels": result["labels"],
                "seed": result["seed"],
                "config_hash": result.get("config_hash", ""),
                "experiment": experiment_key(result),
                "finished": timing.get("finished") or "",
                "command": _command((result.get("provenance") or {}).get("command")),
                **{name: _number(metrics.get(name)) for name in METRIC_NAMES},
            }
        )
    return pd.DataFrame(rows, columns=columns)


def result_row_label(result: dict[str, Any]) -> str:
    """The row a result belongs to: its method variant, and for one configuration of a sweep
    what that configuration changes (``fixmatch (optim.lr=0.01)``), as stored in the result."""
    return row_label(result["method_label"], result.get("sweep"))


def _command(argv: Any) -> str:
    """The command line a run was started with (program name without its folder); empty when
    the result does not record one."""
    if not isinstance(argv, list) or not argv:
        return ""
    return shlex.join([Path(str(argv[0])).name, *map(str, argv[1:])])


def _number(value: Any) -> float:
    """A metric as a float; NaN where it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _label_order(text: str) -> tuple[int, float, str]:
    """Column order key; a setting this version cannot parse goes last rather than crash."""
    try:
        kind, value = parse_protocol(text).sort_key
    except LabelProtocolError:
        return (9, 0.0, text)
    return (kind, value, text)


def _row_order(frame: pd.DataFrame) -> list[str]:
    """Supervised variants first, then the rest; alphabetical within each group."""
    baseline = set(frame.loc[frame["method"] == BASELINE, "method_label"])
    return sorted(frame["method_label"].unique(), key=lambda label: (label not in baseline, label))


def _cell(mean: float, std: float, n: int) -> str:
    if n == 0:
        return EMPTY_CELL
    return f"{mean:.2f} ({n})" if n == 1 else f"{mean:.2f} ± {std:.2f} ({n})"


def metric_table(frame: pd.DataFrame, metric: str) -> tuple[str, list[str]]:
    """The markdown table of ``metric`` for one dataset section, and the cells (``method at
    labels``) that mix different experiments."""
    rows = _row_order(frame)
    columns = sorted(frame["labels"].unique(), key=_label_order)
    grouped = frame.dropna(subset=[metric]).groupby(["method_label", "labels"])
    stats = grouped[metric].agg(["mean", "std", "count"])
    mixed = frame.groupby(["method_label", "labels"])["experiment"].nunique()
    # Compare means as displayed, so that equal-looking cells are bold together.
    shown = stats["mean"].round(2)
    best = shown.groupby(level="labels").max()
    entries = stats.groupby(level="labels").size()

    table = pd.DataFrame(EMPTY_CELL, index=pd.Index(rows, name="method"), columns=columns)
    for (label, setting), row in stats.iterrows():
        cell = _cell(row["mean"], row["std"], int(row["count"]))
        if entries[setting] > 1 and shown[(label, setting)] == best[setting]:
            cell = f"**{cell}**"
        table.loc[label, setting] = cell
    notes = []
    for (label, setting), count in mixed.items():
        if count > 1:
            table.loc[label, setting] += f" {MIXED_MARK}"
            notes.append(f"{label} at {setting}")
    return table.to_markdown(colalign=["left", *["right"] * len(columns)]), notes


def ablation_table(frame: pd.DataFrame, method: str, metric: str) -> str:
    """The markdown ablation table of ``method`` for one dataset section: rows the method and
    its variants (``method[key=value]``), and for each label setting a variant was run at, the
    cell and ``Δ`` = the variant's mean minus the full method's."""
    part = frame[frame["method"] == method]
    variants = part[part["method_label"] != method]
    settings = sorted(variants["labels"].unique(), key=_label_order)
    stats = part.dropna(subset=[metric]).groupby(["method_label", "labels"])[metric]
    stats = stats.agg(["mean", "std", "count"])
    # The full method first: its name is a prefix of every variant's.
    rows = sorted(part["method_label"].unique())
    columns = [column for setting in settings for column in (setting, f"Δ {setting}")]
    table = pd.DataFrame(EMPTY_CELL, index=pd.Index(rows, name="variant"), columns=columns)
    for (label, setting), row in stats.iterrows():
        if setting not in settings:
            continue
        table.loc[label, setting] = _cell(row["mean"], row["std"], int(row["count"]))
        if label != method and (method, setting) in stats.index:
            difference = row["mean"] - stats.loc[(method, setting), "mean"]
            table.loc[label, f"Δ {setting}"] = f"{difference:+.2f}"
    return table.to_markdown(colalign=["left", *["right"] * len(columns)])


def _section_key(dataset: str, tag: str) -> str:
    return f"{dataset} [{tag}]" if tag else dataset


def _section(part: pd.DataFrame, dataset: str) -> str:
    """Headline and macro-F1 tables of one dataset (and tag), with their footnotes."""
    headline = headline_metric(dataset)
    lines: list[str] = []
    for metric in dict.fromkeys((headline, "macro_f1")):
        table, notes = metric_table(part, metric)
        lines += [f"### {METRIC_NAMES[metric]}", "", table, ""]
        if notes:
            lines += [
                f"{MIXED_MARK} Not one experiment: these cells average runs whose configs "
                f"differ beyond the seed ({'; '.join(notes)}). Rerun them with one config, or "
                "keep experiments apart with `tag=...`.",
                "",
            ]
    commands = sorted(command for command in part["command"].unique() if command)
    if commands:
        lines += ["Produced by:", "", *[f"- `{command}`" for command in commands], ""]
    ablated = sorted(part.loc[part["method_label"] != part["method"], "method"].unique())
    for method in ablated:
        lines += [
            f"### Ablations of {method} — {METRIC_NAMES[headline]}",
            "",
            ablation_table(part, method, headline),
            "",
            f"Δ: the variant's mean minus full {method}'s at the same label setting.",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _sections(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(dataset, tag, markdown body) per section, sorted by dataset then tag ("" first)."""
    return [
        (dataset, tag, _section(part, dataset))
        for (dataset, tag), part in frame.groupby(["dataset", "tag"], sort=True)
    ]


def leaderboard_tables(results: list[dict[str, Any]]) -> dict[str, str]:
    """Section name (``dataset``, or ``dataset [tag]``) → its markdown: the headline-metric
    table then the macro-F1 table, each under a ``###`` heading, with any footnote."""
    frame = results_frame(results)
    return {_section_key(dataset, tag): body for dataset, tag, body in _sections(frame)}


def render_leaderboard(results: list[dict[str, Any]]) -> str:
    """The whole markdown document (deterministic for the same results)."""
    lines = ["# fer-bench leaderboard", ""]
    if not results:
        lines += ["Generated by `bench leaderboard` from 0 results: run `bench run` first."]
        return "\n".join(lines) + "\n"
    frame = results_frame(results)
    newest = max(frame["finished"]) or "unknown"
    lines += [
        f"Generated by `bench leaderboard` from {len(frame)} results (newest finished {newest}).",
        "",
        "Cells: mean ± sample std over seeds (number of seeds); `mean (1)` for one seed; "
        "the best mean per column in **bold**. Figures are the final (EMA) model on the test "
        "set, never the best evaluation. Rows: supervised first, then alphabetical.",
        "",
    ]
    for dataset, tag, body in _sections(frame):
        headline = METRIC_NAMES[headline_metric(dataset)]
        lines += [f"## {_section_key(dataset, tag)} — headline: {headline}", "", body]
    return "\n".join(lines).rstrip() + "\n"


def write_leaderboard(results_dir: Path, output: Path | None = None) -> Path:
    """Regenerate ``<results_dir>/leaderboard.md`` (or ``output``) from the stored results."""
    path = Path(output) if output is not None else Path(results_dir) / "leaderboard.md"
    atomic_write_text(path, render_leaderboard(load_results(results_dir)))
    return path
