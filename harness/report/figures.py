"""Figures of a leaderboard section, made from stored results and step logs — never by training.

Per section (``figures/<section>/`` beside ``leaderboard.md``):

* ``accuracy_vs_labels.png`` — the headline metric against the label setting, per method: the
  mean over seeds with a ±1 std bar, and every seed as a dot;
* ``ema_top1_vs_step.png`` — the EMA model's test top-1 at each periodic evaluation (every
  result holds them), mean over seeds with the min–max band, one panel per label setting;
* ``pseudo_labels_vs_step.png`` and ``thresholds_vs_step.png`` — mask rate, pseudo-label
  accuracy and per-class thresholds against step, from the runs' step logs (the compact copy
  beside each result, else ``runs/<run>/metrics.jsonl``). Runs without a step log (those made
  before copies were kept) get what their results hold instead:
  ``pseudo_labels_mean.png`` (whole-run means) and ``thresholds_final.png`` (the thresholds at
  the last step);
* ``confusion_<setting>.png`` — per method, the confusion matrix summed over seeds, each row
  normalised to 100 % so that a rare class reads as clearly as a common one.

Only the methods themselves (not their variants: those have the ablation table) are drawn.
matplotlib is imported here only, through its object-oriented API (no pyplot state, the Agg
canvas), so reports render on a headless node and the rest of the harness starts without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.report.frame import (
    BASELINE,
    METRIC_NAMES,
    headline_metric,
    label_order,
    results_frame,
)
from harness.report.pairing import Pairing
from harness.spec import slug
from harness.stats import PairedDifference
from harness.steplog import run_step_log

Result = dict[str, Any]
DPI = 110
MIN_WIDTH = 7.5  # inches


def section_slug(key: str) -> str:
    """A folder name for a section: ``synthfer [long run]`` → ``synthfer-long_run``."""
    return slug(key.replace(" [", "-").rstrip("]"))


def _figure(width: float, height: float) -> Any:
    """A figure at least :data:`MIN_WIDTH` wide, so a title over one panel is not cut off."""
    from matplotlib.figure import Figure

    return Figure(figsize=(max(MIN_WIDTH, width), height), dpi=DPI, layout="constrained")


def _colours(names: list[str]) -> dict[str, Any]:
    """A colour per name, from tab10 in the order given."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(names)}


def _methods(results: list[Result]) -> list[str]:
    """The methods (no variants) of a section: supervised first, then alphabetical."""
    names = {r["method_label"] for r in results if r["method_label"] == r["method"]}
    return sorted(names, key=lambda name: (name != "supervised", name))


def _settings(results: list[Result]) -> list[str]:
    return sorted({r["labels"] for r in results}, key=label_order)


def _legend(fig: Any, axes: Any) -> None:
    """One legend for the figure, below the axes (it never hides data or the title)."""
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        # As many columns as fit the figure's width (~1.4 in an entry), so none is cut off.
        columns = max(1, min(len(labels), int(fig.get_figwidth() / 1.4)))
        fig.legend(handles, labels, loc="outside lower center", ncols=columns, frameon=False)


def protocol_of(result: Result) -> str:
    """The run's protocol (harness/plan.py): ``shared`` unless its config says ``paper``."""
    return str((result.get("config") or {}).get("protocol") or "shared")


def majority_rate(results: list[Result], metric: str) -> float | None:
    """What always predicting the test set's largest class scores on ``metric`` (%): its
    share of the test images for top-1, 100/C for the class-balanced measures; None when no
    result holds a confusion matrix."""
    for r in results:
        matrix = (r.get("metrics") or {}).get("confusion_matrix")
        if matrix:
            if metric != "top1":
                return 100.0 / len(matrix) if metric == "mean_class_acc" else None
            sizes = [sum(row) for row in matrix]
            return 100.0 * max(sizes) / sum(sizes)
    return None


def accuracy_vs_labels(results: list[Result], metric: str, path: Path) -> Path:
    """Mean ± std of ``metric`` per label setting and method, with every seed as a dot; one
    line per method and protocol (never joining points of two protocols), and the rate of
    always predicting the majority class."""
    methods, settings = _methods(results), _settings(results)
    protocols = sorted({protocol_of(r) for r in results})
    series = [(m, p) for m in methods for p in protocols]
    colours = _colours(methods)
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    x = {setting: i for i, setting in enumerate(settings)}
    width = 0.3 / max(1, len(series))
    for k, (method, protocol) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        runs = [r for r in results if r["method_label"] == method and protocol_of(r) == protocol]
        frame = pd.DataFrame(
            {"labels": r["labels"], "value": (r.get("metrics") or {}).get(metric)} for r in runs
        ).dropna()
        if frame.empty:
            continue
        stats = frame.groupby("labels")["value"].agg(["mean", "std", "count"])
        stats = stats.loc[sorted(stats.index, key=label_order)]
        xs = [x[s] + offset for s in stats.index]
        ax.errorbar(
            xs,
            stats["mean"],
            yerr=stats["std"].fillna(0),
            marker="o" if protocol == "shared" else "s",
            linestyle="-" if protocol == "shared" else "--",
            capsize=3,
            color=colours[method],
            label=method if len(protocols) == 1 else f"{method} ({protocol})",
        )
        ax.scatter(
            [x[s] + offset for s in frame["labels"]],
            frame["value"],
            s=10,
            color=colours[method],
            alpha=0.45,
            zorder=3,
        )
    majority = majority_rate(results, metric)
    if majority is not None:
        ax.axhline(majority, color="grey", lw=1, ls=":", label=f"majority class ({majority:.1f})")
    ax.set_xticks(range(len(settings)), settings)
    ax.set_xlabel("labelled images (label setting)")
    ax.set_ylabel(METRIC_NAMES[metric])
    ax.set_title(f"{METRIC_NAMES[metric]} by label setting\n(mean ± std over seeds; dots: seeds)")
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    fig.savefig(path)
    return path


def paired_difference_rows(
    results: list[Result], metric: str, baseline: str
) -> list[tuple[str, str, str, PairedDifference]]:
    """(method, protocol, label setting, its paired difference from ``baseline``) for each
    method and setting with two or more pairs: seeds paired as the leaderboard's tables pair
    them (:mod:`harness.report.pairing`), one protocol at a time."""
    frame = results_frame(results)
    frame["protocol"] = [protocol_of(r) for r in results]
    # The methods themselves, as the other figures draw them; a row keeps its sweep suffix
    # (``fixmatch (optim.lr=0.01)``) and pairs with the baseline's row of the same suffix.
    frame["own"] = [r["method_label"] == r["method"] for r in results]
    frame["suffix"] = [
        label.removeprefix(r["method_label"])
        for label, r in zip(frame["method_label"], results, strict=True)
    ]
    measured = frame[frame[metric].notna()]
    baseline_runs = measured[measured["method"] == baseline]
    rows = []
    for protocol in sorted(set(measured["protocol"])):
        runs = measured[measured["protocol"] == protocol]
        # The baseline of the shared protocol serves every protocol (it has no paper recipe).
        base = baseline_runs[baseline_runs["protocol"] == "shared"]
        if base.empty:
            base = runs[runs["method"] == baseline]
        pairing = Pairing(pd.concat([runs[runs["method"] != baseline], base]), metric)
        methods = runs[runs["own"] & (runs["method"] != baseline)]
        base_labels = set(base["method_label"])
        for label, suffix in sorted(
            set(zip(methods["method_label"], methods["suffix"], strict=True))
        ):
            other = baseline + suffix if baseline + suffix in base_labels else baseline
            for setting in sorted(set(runs["labels"]), key=label_order):
                diff = pairing.paired(setting, label, other)
                if diff is not None and diff.n >= 2:
                    rows.append((label, protocol, setting, diff))
    return rows


def paired_differences(
    results: list[Result], metric: str, baseline: str, path: Path
) -> Path | None:
    """Each method's paired difference from ``baseline`` per label setting
    (:func:`paired_difference_rows`: mean over seeds with its 95% t interval), drawn at ``path``;
    None when no method has two pairs."""
    rows = paired_difference_rows(results, metric, baseline)
    if not rows:
        return None
    settings = sorted({setting for _, _, setting, _ in rows}, key=label_order)
    series = sorted({(m, p) for m, p, _, _ in rows})
    colours = _colours(sorted({m for m, _ in series}))
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    width = 0.6 / max(1, len(series))
    for k, (method, protocol) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        mine = [(s, d) for m, p, s, d in rows if (m, p) == (method, protocol)]
        xs = [settings.index(s) + offset for s, _ in mine]
        means = [d.mean for _, d in mine]
        errors = [[d.mean - d.low for _, d in mine], [d.high - d.mean for _, d in mine]]
        label = method if len({p for _, p in series}) == 1 else f"{method} ({protocol})"
        ax.errorbar(
            xs,
            means,
            yerr=errors,
            fmt="o" if protocol == "shared" else "s",
            capsize=3,
            color=colours[method],
            label=label,
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_xlabel("labelled images (label setting)")
    ax.set_ylabel(f"Δ {METRIC_NAMES[metric]} vs {baseline} (points)")
    ax.set_title(
        f"Paired difference from {baseline}, by seed\n(mean and 95% t interval; points are not "
        "joined across settings)"
    )
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    fig.savefig(path)
    return path


def ema_top1_vs_step(results: list[Result], path: Path) -> Path | None:
    """EMA test top-1 at the periodic evaluations, per method: mean, min–max band."""
    methods, settings = _methods(results), _settings(results)
    colours = _colours(methods)
    rows = [
        {"method": r["method_label"], "labels": r["labels"], "seed": r["seed"], **e}
        for r in results
        if r["method_label"] in methods
        for e in r.get("evaluations") or []
    ]
    if not rows:
        return None
    evals = pd.DataFrame(rows)
    fig = _figure(4.0 * len(settings) + 0.5, 3.8)
    axes = fig.subplots(1, len(settings), squeeze=False, sharey=True)[0]
    for ax, setting in zip(axes, settings, strict=True):
        for method in methods:
            part = evals[(evals["labels"] == setting) & (evals["method"] == method)]
            if part.empty:
                continue
            curve = part.groupby("step")["top1"].agg(["mean", "min", "max", "count"])
            ax.plot(
                curve.index, curve["mean"], marker="o", ms=3, color=colours[method], label=method
            )
            ax.fill_between(
                curve.index,
                curve["min"],
                curve["max"],
                color=colours[method],
                alpha=0.15,
                linewidth=0,
            )
        ax.set_title(f"{setting} labelled")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("EMA model test top-1 (%)")
    fig.suptitle("EMA top-1 at each evaluation (mean over seeds; band: min–max)")
    _legend(fig, axes[0])
    fig.savefig(path)
    return path


def _step_frame(results: list[Result], results_dir: Path) -> pd.DataFrame:
    """Every logged training step of the section's methods, with method, labels and seed."""
    frames = []
    for r in results:
        if r["method_label"] != r["method"]:
            continue
        steps = run_step_log(results_dir, r)
        if steps:
            frame = pd.DataFrame(steps)
            frame["method"], frame["labels"], frame["seed"] = r["method"], r["labels"], r["seed"]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def pseudo_labels_vs_step(steps: pd.DataFrame, methods: list[str], path: Path) -> Path | None:
    """Mask rate and pseudo-label accuracy against step (mean over seeds), per method."""
    signals = [s for s in ("mask_rate", "pseudo_label_acc") if s in steps]
    if not signals:
        return None
    # Only the settings where some method logged these (none at 100%: no empty panels).
    logged = steps.dropna(subset=signals, how="all")
    settings = sorted(logged["labels"].unique(), key=label_order)
    if not settings:
        return None
    colours = _colours(methods)
    fig = _figure(4.0 * len(settings) + 0.5, 3.2 * len(signals))
    axes = fig.subplots(len(signals), len(settings), squeeze=False, sharex="col", sharey="row")
    names = {
        "mask_rate": "mask rate (share of unlabelled used)",
        "pseudo_label_acc": "pseudo-label accuracy",
    }
    for row, signal in enumerate(signals):
        for col, setting in enumerate(settings):
            ax = axes[row][col]
            for method in methods:
                part = steps[(steps["labels"] == setting) & (steps["method"] == method)]
                part = part.dropna(subset=[signal])
                if part.empty:
                    continue
                curve = part.groupby("step")[signal].mean()
                ax.plot(curve.index, curve.values, color=colours[method], label=method, lw=1.2)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{setting} labelled")
            if row == len(signals) - 1:
                ax.set_xlabel("training step")
            if col == 0:
                ax.set_ylabel(names[signal])
    fig.suptitle("Pseudo-labels against step (step logs; mean over seeds)")
    _legend(fig, axes[0][0])
    fig.savefig(path)
    return path


SEED_STYLES = ("-", "--", ":", "-.")


def thresholds_vs_step(steps: pd.DataFrame, class_names: list[str], path: Path) -> Path | None:
    """Per-class thresholds against step, **per seed** (a line style per seed: an average over
    a collapsed and a recovered run describes neither): one panel per threshold method and
    label setting that logged them, one colour per class."""
    if "threshold" not in steps:
        return None
    logged = steps.dropna(subset=["threshold"])
    logged = logged[logged["threshold"].map(lambda t: isinstance(t, list) and len(t) > 0)]
    if logged.empty:
        return None
    methods = sorted(logged["method"].unique())
    settings = sorted(logged["labels"].unique(), key=label_order)
    fig = _figure(4.0 * len(settings) + 0.5, 2.8 * len(methods))
    axes = fig.subplots(len(methods), len(settings), squeeze=False, sharex="col", sharey=True)
    colours = _colours(class_names)
    seeds = sorted(logged["seed"].unique())
    for row, method in enumerate(methods):
        for col, setting in enumerate(settings):
            ax = axes[row][col]
            part = logged[(logged["method"] == method) & (logged["labels"] == setting)]
            if part.empty:
                ax.set_axis_off()  # this method did not run at this setting
                continue
            for seed, run in part.groupby("seed"):
                values = np.array(run["threshold"].tolist(), dtype=float)
                style = SEED_STYLES[seeds.index(seed) % len(SEED_STYLES)]
                for k in range(values.shape[1]):
                    name = class_names[k] if k < len(class_names) else str(k)
                    ax.plot(
                        run["step"].to_numpy(),
                        values[:, k],
                        color=colours.get(name),
                        ls=style,
                        lw=1.0,
                        label=name if seed == seeds[0] else None,
                    )
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_title(f"{method} — {setting} labelled", fontsize=9)
            if row == len(methods) - 1:
                ax.set_xlabel("training step")
            if col == 0:
                ax.set_ylabel("class threshold")
    styles = ", ".join(
        f"seed {seed} {SEED_STYLES[i % len(SEED_STYLES)]!r}" for i, seed in enumerate(seeds)
    )
    fig.suptitle(f"Per-class confidence thresholds against step, per seed ({styles})")
    _legend(fig, axes[0][0])
    fig.savefig(path)
    return path


def pseudo_labels_mean(results: list[Result], path: Path) -> Path | None:
    """Whole-run mean mask rate and pseudo-label accuracy per method and setting, with every
    seed as a dot: what results without a step log hold."""
    rows = [
        {"method": r["method"], "labels": r["labels"], "seed": r["seed"], **r["diagnostics"]}
        for r in results
        if r["method_label"] == r["method"] and "mask_rate" in (r.get("diagnostics") or {})
    ]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    methods = [m for m in _methods(results) if m in set(frame["method"])]
    settings = sorted(frame["labels"].unique(), key=label_order)
    colours = _colours(_methods(results))
    signals = [s for s in ("mask_rate", "pseudo_label_acc") if s in frame]
    names = {
        "mask_rate": "mask rate (share of unlabelled used)",
        "pseudo_label_acc": "pseudo-label accuracy (of those used)",
    }
    fig = _figure(5.0 * len(signals) + 0.5, 4.2)
    axes = fig.subplots(1, len(signals), squeeze=False)[0]
    width = 0.8 / len(methods)
    for ax, signal in zip(axes, signals, strict=True):
        for k, method in enumerate(methods):
            part = frame[frame["method"] == method].dropna(subset=[signal])
            stats = part.groupby("labels")[signal].mean()
            xs = [settings.index(s) + (k - (len(methods) - 1) / 2) * width for s in stats.index]
            ax.bar(xs, stats.values, width=width, color=colours[method], label=method, alpha=0.8)
            ax.scatter(
                [settings.index(s) + (k - (len(methods) - 1) / 2) * width for s in part["labels"]],
                part[signal],
                s=8,
                color="black",
                zorder=3,
            )
        ax.set_xticks(range(len(settings)), settings)
        ax.set_xlabel("label setting")
        ax.set_ylabel(names[signal])
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Pseudo-label diagnostics, whole-run means (bars: mean over seeds; dots: seeds)")
    _legend(fig, axes[0])
    fig.savefig(path)
    return path


def thresholds_final(results: list[Result], class_names: list[str], path: Path) -> Path | None:
    """The per-class thresholds at the last step (``method_summary.threshold``), per
    threshold method and setting: bars the mean over seeds, dots the seeds."""
    rows = [
        {"method": r["method"], "labels": r["labels"], "seed": r["seed"], "class": k, "value": v}
        for r in results
        if r["method_label"] == r["method"]
        for k, v in enumerate((r.get("method_summary") or {}).get("threshold") or [])
        if isinstance(v, int | float)
    ]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    methods = sorted(frame["method"].unique())
    settings = sorted(frame["labels"].unique(), key=label_order)
    fig = _figure(4.2 * len(settings) + 0.6, 2.6 * len(methods))
    axes = fig.subplots(len(methods), len(settings), squeeze=False, sharey=True)
    classes = sorted(frame["class"].unique())
    names = [class_names[k] if k < len(class_names) else str(k) for k in classes]
    for row, method in enumerate(methods):
        for col, setting in enumerate(settings):
            ax = axes[row][col]
            part = frame[(frame["method"] == method) & (frame["labels"] == setting)]
            means = part.groupby("class")["value"].mean().reindex(classes)
            ax.bar(range(len(classes)), means.values, color="tab:blue", alpha=0.75)
            ax.scatter(
                part["class"].map(classes.index), part["value"], s=8, color="black", zorder=3
            )
            ax.set_ylim(0, 1.05)
            ax.grid(axis="y", alpha=0.3)
            ax.set_title(f"{method} — {setting} labelled", fontsize=9)
            ax.set_xticks(
                range(len(classes)),
                names if row == len(methods) - 1 else [],
                rotation=45,
                ha="right",
                fontsize=8,
            )
            if col == 0:
                ax.set_ylabel("threshold at last step")
    fig.suptitle("Per-class thresholds at the end of training (bars: mean over seeds; dots: seeds)")
    fig.savefig(path)
    return path


def confusion_matrices(
    results: list[Result], setting: str, class_names: list[str], path: Path
) -> Path | None:
    """Per method, the test confusion matrix of the final EMA model at ``setting``, summed
    over seeds and normalised per true class (rows sum to 100 %)."""
    methods = [
        m
        for m in _methods(results)
        if any(r["method_label"] == m and r["labels"] == setting for r in results)
    ]
    matrices = {}
    for method in methods:
        runs = [
            r
            for r in results
            if r["method_label"] == method
            and r["labels"] == setting
            and (r.get("metrics") or {}).get("confusion_matrix")
        ]
        if runs:
            total = sum(np.array(r["metrics"]["confusion_matrix"], dtype=float) for r in runs)
            matrices[method] = (total, len(runs))
    if not matrices:
        return None
    columns = min(3, len(matrices))
    rows = -(-len(matrices) // columns)
    size = len(class_names)
    fig = _figure(max(6.5, 3.6 * columns + 1.0), 3.5 * rows + 0.7)
    axes = fig.subplots(rows, columns, squeeze=False)
    image = None
    for ax, (method, (total, n)) in zip(axes.flat, matrices.items(), strict=False):
        share = 100 * total / np.maximum(total.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
        for i in range(size):
            for j in range(size):
                ax.text(
                    j,
                    i,
                    f"{share[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 60 else "black",
                )
        ax.set_xticks(range(size), class_names, rotation=45, ha="right", fontsize=7)
        # Test images per class, once (the sum is over seeds of the same test set).
        counts = total.sum(axis=1) / n
        ticks = [f"{c} ({t:.0f})" for c, t in zip(class_names, counts, strict=True)]
        ax.set_yticks(range(size), ticks, fontsize=7)
        ax.set_title(f"{method} ({n} seed{'s' if n > 1 else ''})", fontsize=9)
        ax.set_xlabel("predicted class", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("true class (test images)", fontsize=8)
    for ax in list(axes.flat)[len(matrices) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, shrink=0.6, label="% of the true class")
    fig.suptitle(
        f"Confusion matrices at {setting} labelled\n(final EMA model, summed over seeds; "
        "each row normalised to 100 %)"
    )
    fig.savefig(path)
    return path


def _class_names(results: list[Result]) -> list[str]:
    for r in results:
        names = list(((r.get("metrics") or {}).get("per_class_acc") or {}).keys())
        if names:
            return names
    return []


def section_figures(
    results: list[Result], dataset: str, results_dir: Path, folder: Path
) -> tuple[list[tuple[Path, str]], list[str]]:
    """Write every figure of one section into ``folder``; the files written with their
    titles, and notes on what they could not show (runs without a step log)."""
    folder.mkdir(parents=True, exist_ok=True)
    class_names = _class_names(results)
    written: list[Path | None] = [
        accuracy_vs_labels(results, headline_metric(dataset), folder / "accuracy_vs_labels.png"),
        paired_differences(
            results, headline_metric(dataset), BASELINE, folder / "paired_differences.png"
        ),
        ema_top1_vs_step(results, folder / "ema_top1_vs_step.png"),
    ]
    methods = _methods(results)
    steps = _step_frame(results, results_dir)
    main_runs = [r for r in results if r["method_label"] == r["method"]]
    logged = 0 if steps.empty else steps.groupby(["method", "labels", "seed"]).ngroups
    notes = [
        f"Step logs: {logged} of the {len(main_runs)} runs drawn have one (the compact copy "
        "`<run>.steps.jsonl.gz` beside the result, or `runs/<run>/metrics.jsonl`)."
    ]
    if not steps.empty:
        written.append(pseudo_labels_vs_step(steps, methods, folder / "pseudo_labels_vs_step.png"))
        written.append(thresholds_vs_step(steps, class_names, folder / "thresholds_vs_step.png"))
    if logged < len(main_runs):
        notes.append(
            f"The {len(main_runs) - logged} runs without one predate the kept copies: for "
            "them the mask rate, pseudo-label accuracy and thresholds are shown as what their "
            "results hold (whole-run means, thresholds at the last step); EMA top-1 against "
            "step uses the periodic evaluations that every result holds."
        )
        unlogged = [
            r
            for r in main_runs
            if steps.empty
            or not (
                (steps["method"] == r["method"])
                & (steps["labels"] == r["labels"])
                & (steps["seed"] == r["seed"])
            ).any()
        ]
        written.append(pseudo_labels_mean(unlogged, folder / "pseudo_labels_mean.png"))
        written.append(thresholds_final(unlogged, class_names, folder / "thresholds_final.png"))
    titles = dict(TITLES)
    for setting in _settings(results):
        name = f"confusion_{slug(setting)}"
        titles[name] = f"confusion matrices, {setting} labelled"
        written.append(confusion_matrices(results, setting, class_names, folder / f"{name}.png"))
    return [(path, titles[path.stem]) for path in written if path is not None], notes


TITLES = {
    "accuracy_vs_labels": "accuracy by label setting",
    "paired_differences": "paired difference from supervised (95% intervals)",
    "ema_top1_vs_step": "EMA top-1 against step",
    "pseudo_labels_vs_step": "mask rate and pseudo-label accuracy against step",
    "thresholds_vs_step": "per-class thresholds against step, per seed",
    "pseudo_labels_mean": "mask rate and pseudo-label accuracy (whole-run means)",
    "thresholds_final": "per-class thresholds at the last step",
}


def figure_lines(figures: list[tuple[Path, str]], notes: list[str], root: Path) -> list[str]:
    """The ``### Figures`` block of a section: a link per figure (relative to ``root``, the
    leaderboard's folder) and the notes."""
    links = [f"- [{title}]({path.relative_to(root).as_posix()})" for path, title in figures]
    return ["### Figures", "", *links, "", *notes, ""]
