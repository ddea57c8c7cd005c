"""``bench export --format csv|latex``: the results as tables for a paper or a notebook.

* ``runs.csv`` / ``runs.tex`` — one row per run. The CSV holds everything a result records
  that fits a cell: identity, every metric (EMA and student model, per-class accuracy, the
  confusion matrix as JSON), the best periodic evaluation, the method's mean diagnostics, the
  split, timing, provenance and every config key (``config.optim.lr``); the LaTeX table the
  columns a paper's appendix lists (method, setting, seed, the three metrics, time, device,
  commit).
* ``summary.csv`` / ``tables.tex`` — the leaderboard's aggregated tables: per section, metric,
  method and label setting the mean, std and number of seeds, the leaderboard's mark (best,
  close, not separated, untested, below) and the paired difference from supervised and from
  fixmatch (mean, 95 % CI, p, pairs). The numbers are those of ``leaderboard.md``, computed by
  the same code.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from harness.leaderboard import best_row, cell_stats, check_results_dir, standing
from harness.report.frame import (
    BASELINE,
    BEST_PREFIX,
    METRIC_NAMES,
    PAIRED_BASELINE,
    headline_metric,
    label_order,
    results_frame,
    row_order,
)
from harness.report.pairing import paired
from harness.result_filter import FILTERED_DIR, ResultFilter
from harness.stats import PairedDifference
from harness.store import atomic_write_text, load_results

FORMATS = ("csv", "latex")
MARKS = {"": "below", "≈": "close", "?": "untested"}


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """A nested dict as ``prefix.key.sub`` columns; lists as JSON text."""
    if isinstance(value, dict):
        columns: dict[str, Any] = {}
        for key, item in value.items():
            columns.update(_flat(f"{prefix}.{key}" if prefix else str(key), item))
        return columns
    if isinstance(value, list):
        return {prefix: json.dumps(value)}
    return {prefix: value}


def run_rows(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run with every field of its result that fits a cell (see module doc)."""
    rows = []
    for result in results:
        provenance = dict(result.get("provenance") or {})
        command = provenance.pop("command", None)
        row = {
            key: result.get(key)
            for key in ("run_id", "dataset", "tag", "method", "method_label", "labels", "seed")
        }
        row["config_hash"] = result.get("config_hash")
        for section in ("metrics", "student_metrics", "best", "diagnostics", "method_summary"):
            row.update(_flat(section, result.get(section) or {}))
        row.update(_flat("split", result.get("split") or {}))
        row.update(_flat("timing", result.get("timing") or {}))
        row.update(_flat("provenance", provenance))
        row["provenance.command"] = shlex.join(map(str, command)) if command else ""
        row["evaluations"] = json.dumps(
            [
                {k: e.get(k) for k in ("step", "top1", "mean_class_acc", "macro_f1")}
                for e in result.get("evaluations") or []
            ]
        )
        row.update(_flat("config", result.get("config") or {}))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = frame["labels"].map(lambda text: label_order(text))
    return (
        frame.assign(_order=order)
        .sort_values(["dataset", "tag", "method_label", "_order", "seed"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _paired_columns(prefix: str, diff: PairedDifference | None) -> dict[str, Any]:
    if diff is None:
        return {f"{prefix}_{k}": None for k in ("mean", "ci_low", "ci_high", "p", "pairs")}
    return {
        f"{prefix}_mean": diff.mean,
        f"{prefix}_ci_low": diff.low,
        f"{prefix}_ci_high": diff.high,
        f"{prefix}_p": diff.p,
        f"{prefix}_pairs": diff.n,
    }


def summary_rows(results: list[dict[str, Any]]) -> pd.DataFrame:
    """The aggregated tables in long form: one row per (section, metric, method, setting)."""
    frame = results_frame(results)
    rows = []
    for (dataset, tag, section), part in frame.groupby(["dataset", "tag", "section"], sort=True):
        headline = headline_metric(dataset)
        # The best evaluation's figure too, named as chosen on the test set (frame.py).
        for metric in dict.fromkeys((headline, "macro_f1", BEST_PREFIX + headline)):
            stats = cell_stats(part, metric)
            best = {s: best_row(stats, s) for s in stats.index.unique("labels")}
            # The leaderboard's order: its rows, then its columns.
            order = {label: i for i, label in enumerate(row_order(part))}
            cells = sorted(stats.index, key=lambda k: (order[k[0]], label_order(k[1])))
            for label, setting in cells:
                cell = stats.loc[(label, setting)]
                if best[setting] is None:
                    mark = "no claim"
                elif best[setting] == label:
                    mark = "best"
                else:
                    shown = standing(part, metric, setting, label, best[setting])
                    mark = MARKS.get(shown, "not separated")  # n.s. Δ…, k seeds
                row = {
                    "section": section,
                    "dataset": dataset,
                    "tag": tag,
                    "metric": metric,
                    "method_label": label,
                    "labels": setting,
                    "n": int(cell["count"]),
                    "mean": cell["mean"],
                    "std": cell["std"],
                    "mark": mark,
                }
                for baseline in (BASELINE, PAIRED_BASELINE):
                    diff = (
                        None
                        if label == baseline
                        else paired(part, metric, setting, label, baseline)
                    )
                    row.update(_paired_columns(f"vs_{baseline}", diff))
                rows.append(row)
    summary = pd.DataFrame(rows)
    for baseline in (BASELINE, PAIRED_BASELINE):
        column = f"vs_{baseline}_pairs"
        if column in summary:
            summary[column] = summary[column].astype("Int64")  # counts, blank where unpaired
    return summary


def _tex(text: str) -> str:
    """Plain text made safe for LaTeX."""
    table = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\^{}",
    }
    return "".join(table.get(ch, ch) for ch in str(text))


def _tex_cell(row: pd.Series) -> str:
    if row["n"] == 1:
        body = f"{row['mean']:.2f}\\,(1)"
    else:
        body = f"{row['mean']:.2f} $\\pm$ {row['std']:.2f}"
    if row["mark"] == "best":
        return f"\\textbf{{{body}}}"
    marks = {"close": r"$^{\approx}$", "not separated": r"$^{n.s.}$", "untested": r"$^{?}$"}
    return body + marks.get(row["mark"], "")


def latex_tables(summary: pd.DataFrame, results: list[dict[str, Any]]) -> str:
    """The aggregated tables as booktabs ``tabular`` environments, one per section and metric
    (bold: best mean; ≈: close; n.s.: not separated; ?: untested, as in the leaderboard)."""
    frame = results_frame(results)
    blocks = [
        "% Generated by `bench export --format latex` from the results "
        "(needs \\usepackage{booktabs}).",
        "% Cells: mean $\\pm$ std over seeds. Bold: best mean (two or more seeds); "
        "$^{\\approx}$: not significantly below it (paired t-test over seeds, p >= 0.05); "
        "$^{?}$: fewer than two seeds paired with it.",
    ]
    for (section, metric), part in summary.groupby(["section", "metric"], sort=False):
        sub = frame[frame["section"] == section]
        settings = sorted(part["labels"].unique(), key=label_order)
        table = pd.DataFrame("--", index=row_order(sub), columns=settings)
        for _, row in part.iterrows():
            table.loc[row["method_label"], row["labels"]] = _tex_cell(row)
        table.index = pd.Index([_tex(label) for label in table.index], name="method")
        table.columns = [_tex(setting) for setting in table.columns]
        table = table.reset_index()
        caption = f"{_tex(section)}: {_tex(METRIC_NAMES[metric])}"
        blocks += [
            "",
            f"% {caption}",
            table.to_latex(index=False, escape=False, column_format="l" + "r" * len(settings)),
        ]
    return "\n".join(blocks)


def latex_runs(runs: pd.DataFrame) -> str:
    """One row per run, the columns a paper's appendix lists, as a booktabs ``longtable``."""
    columns = {
        "dataset": "dataset",
        "method_label": "method",
        "labels": "labels",
        "seed": "seed",
        "metrics.top1": "top-1",
        "metrics.mean_class_acc": "mean class acc.",
        "metrics.macro_f1": "macro-F1",
        "timing.train_seconds": "train min",
        "provenance.device": "device",
        "provenance.git.commit": "commit",
    }
    table = runs.reindex(columns=list(columns)).rename(columns=columns)
    table["train min"] = table["train min"] / 60
    table["commit"] = table["commit"].fillna("").map(lambda c: str(c)[:7])
    for name in ("dataset", "method", "labels", "device"):
        table[name] = table[name].fillna("").map(_tex)
    return table.to_latex(
        index=False,
        escape=False,
        longtable=True,
        float_format="%.2f",
        column_format="lllr" + "r" * 4 + "ll",
    )


def write_export(
    results_dir: Path, fmt: str, output: Path | None = None, where: ResultFilter | None = None
) -> list[Path]:
    """Write the per-run and aggregated tables of ``results_dir`` in ``fmt`` (``csv`` or
    ``latex``) into ``output`` (default ``<results_dir>/export``); the files written. With a
    filter ``where``: of the results it selects, by default into
    ``<results_dir>/filtered/export``."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    where = where or ResultFilter()
    results = where.select(load_results(check_results_dir(results_dir)), f"{results_dir}/")
    base = Path(results_dir) / FILTERED_DIR if where else Path(results_dir)
    folder = Path(output) if output is not None else base / "export"
    folder.mkdir(parents=True, exist_ok=True)
    runs, summary = run_rows(results), summary_rows(results)
    if fmt == "csv":
        files = {"runs.csv": runs.to_csv(index=False), "summary.csv": summary.to_csv(index=False)}
    else:
        files = {"runs.tex": latex_runs(runs), "tables.tex": latex_tables(summary, results)}
    paths = []
    for name, text in files.items():
        atomic_write_text(folder / name, text)
        paths.append(folder / name)
    return paths
