"""The protocol block and the cost table of a leaderboard section, generated from the results.

A reader of a table needs the setting that produced it: backbone, resolution, schedule,
batch, μ, EMA, optimiser, augmentation, the labelled images of each setting, seeds, and the
code, device and threads each run had. Each item lists every value the section's runs used —
one value when they agree, ``value (n runs)`` for each when they do not — so a mixed section
shows itself instead of being summarised by its first run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pandas as pd

from harness.report.frame import (
    EMPTY_CELL,
    label_order,
    pretrain_file,
    row_order,
    training_threads,
)

Result = dict[str, Any]


def _get(result: Result, *path: str) -> Any:
    """The value at ``path`` in a result; None where any level is missing."""
    node: Any = result
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _cfg(result: Result, *path: str) -> str:
    """A config value as text; ``?`` where the result does not record it."""
    value = _get(result, "config", *path)
    return "?" if value is None else _plain(value)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(_plain, value)) + "]"
    return "–" if value is None else str(value)


def _values(results: list[Result], describe: Callable[[Result], str]) -> str:
    """Every value of ``describe`` over the runs: one when they agree, else each with its
    count of runs (most common first)."""
    counts = Counter(describe(result) for result in results)
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(
        f"{value} ({n} run{'s' if n > 1 else ''})" for value, n in counts.most_common()
    )


def _backbone(r: Result) -> str:
    weights = _get(r, "config", "backbone", "weights")
    pretrain = _get(r, "config", "pretrain")
    if isinstance(pretrain, dict):
        # harness/pretrain.py: the run's config holds the pretraining's settings and key.
        top1 = _get(r, "provenance", "pretrain", "identity_top1")
        score = f"; identity top-1 {top1}% held out" if top1 is not None else ""
        sha = pretrain_file(r)
        file = f", file {sha}" if sha else ""
        init = (
            f"pretrained: {pretrain.get('name', '?')}, key {pretrain.get('key', '?')}{file}{score}"
        )
    else:
        init = f"weights {weights}" if weights else "random init"
    return f"`{_cfg(r, 'backbone', 'name')}` ({init})"


def _lr_curve(r: Result) -> str:
    """The lr after warm-up: a cosine of 0 cycles is a constant lr (Ada-CM's), and says so."""
    cycles = _get(r, "config", "sched", "num_cycles")
    if isinstance(cycles, int | float) and cycles == 0:
        return "constant lr"
    return f"cosine (num_cycles {_cfg(r, 'sched', 'num_cycles')})"


def _schedule(r: Result) -> str:
    return (
        f"{_cfg(r, 'train', 'steps')} steps, {_lr_curve(r)}, warm-up "
        f"{_cfg(r, 'sched', 'warmup_steps')} steps; "
        f"test-set evaluation every {_cfg(r, 'train', 'eval_every')} steps"
    )


def _batch(r: Result) -> str:
    size = _cfg(r, "data", "batch_size")
    return (
        f"{size} labelled; + μ·{size} unlabelled (weak and strong view each) for the methods "
        f"that use them, μ = {_cfg(r, 'data', 'unlabelled_ratio')}"
    )


def _optimiser(r: Result) -> str:
    optim = dict(_get(r, "config", "optim") or {})
    name = optim.pop("name", "?")
    if name == "sgd":
        optim.pop("betas", None)
    else:
        optim.pop("momentum", None)
        optim.pop("nesterov", None)
    return f"{name}: {_plain(optim)}"


def _augmentation(r: Result) -> str:
    size = _get(r, "config", "data", "image_size")
    pad = f"{size // 8} px" if isinstance(size, int) else "size/8"
    strong = _cfg(r, "data", "strong_augment")
    return f"weak: flip + reflect-padded crop (pad {pad}); strong: {strong}"


def _labelled(results: list[Result]) -> list[str]:
    """One line per label setting: total labelled images and per class (ranges over seeds)."""
    lines = []
    settings = sorted({r["labels"] for r in results}, key=label_order)
    for setting in settings:
        splits = [r.get("split") or {} for r in results if r["labels"] == setting]
        totals = sorted({s.get("num_labelled") for s in splits if s.get("num_labelled")})
        per_class: dict[str, set[int]] = {}
        for split in splits:
            for name, count in (split.get("per_class") or {}).items():
                per_class.setdefault(name, set()).add(int(count))
        classes = " · ".join(f"{name} {_span(counts)}" for name, counts in per_class.items())
        lines.append(f"{setting}: {_span(totals)} ({classes})" if classes else f"{setting}: ?")
    return lines


def _span(values: Any) -> str:
    values = sorted(values)
    if not values:
        return "?"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _dataset(r: Result) -> str:
    split = r.get("split") or {}
    return (
        f"{r['dataset']}: {split.get('num_train', '?')} train images (all of them the "
        f"unlabelled set), {split.get('num_test', '?')} test"
    )


def _method_settings(results: list[Result]) -> list[str]:
    """Each method's own hyperparameters (variants name their change in their label)."""
    lines = []
    for method in sorted({r["method"] for r in results}):
        runs = [r for r in results if r["method_label"] == method]
        if runs:
            settings = _values(
                runs,
                lambda r: (
                    _plain(
                        {
                            k: v
                            for k, v in (_get(r, "config", "method") or {}).items()
                            if k != "name"
                        }
                    )
                    or "no settings"
                ),
            )
            lines.append(f"`{method}`: {settings}")
    return lines


def _recipe(r: Result) -> str:
    """The training recipe a run used: optimiser, lr schedule, batch and μ, EMA decay."""
    return (
        f"{_optimiser(r)}; {_lr_curve(r)}, warm-up "
        f"{_cfg(r, 'sched', 'warmup_steps')}; batch {_cfg(r, 'data', 'batch_size')}, "
        f"μ = {_cfg(r, 'data', 'unlabelled_ratio')}; EMA {_cfg(r, 'ema', 'decay')}"
    )


def _recipes(results: list[Result]) -> list[str]:
    """Each method's training recipe (``protocol=paper``: its authors'; harness/plan.py)."""
    return [
        f"`{label}`: {_values([r for r in results if r['method_label'] == label], _recipe)}"
        for label in sorted({r["method_label"] for r in results})
    ]


def protocol_lines(results: list[Result], mixes: dict[tuple[str, str], str]) -> list[str]:
    """The ``### Protocol`` block of a section: a list of settings and, when some cells mix
    commits, devices or thread counts (``mixes``, from the leaderboard), which and how."""
    rows = [
        ("protocol", _values(results, lambda r: _get(r, "config", "protocol") or "shared")),
        ("dataset", _values(results, _dataset)),
        ("backbone", _values(results, _backbone)),
        ("image size", _values(results, lambda r: f"{_cfg(r, 'data', 'image_size')} px")),
        ("schedule", _values(results, _schedule)),
        ("batch", _values(results, _batch)),
        (
            "EMA",
            _values(
                results,
                lambda r: f"decay {_cfg(r, 'ema', 'decay')}; the EMA model is the one evaluated",
            ),
        ),
        ("optimiser", _values(results, _optimiser)),
        ("augmentation", _values(results, _augmentation)),
        (
            "balanced labelled batches",
            _values(results, lambda r: _cfg(r, "data", "balanced_sampling")),
        ),
        ("labelled images (total, per class; ranges over seeds)", _sublist(_labelled(results))),
        ("method settings", _sublist(_method_settings(results))),
        *(
            [("training recipe per method", _sublist(_recipes(results)))]
            if len({_recipe(r) for r in results}) > 1
            else []
        ),
        ("seeds", ", ".join(str(s) for s in sorted({r["seed"] for r in results}))),
        ("commits", _values(results, _commit)),
        ("devices", _values(results, lambda r: str(_get(r, "provenance", "device") or "?"))),
        ("torch threads", _values(results, lambda r: str(training_threads(r) or "?"))),
    ]
    items = [
        f"- **{name}**:{'' if value.startswith(chr(10)) else ' '}{value}" for name, value in rows
    ]
    lines = ["### Protocol", "", *items, ""]
    if mixes:
        cells = [f"- {label} at {setting}: {what}" for (label, setting), what in mixes.items()]
        lines += [
            "‡ Cells whose seeds ran on different code or hardware, or from different pretrained "
            "backbone files:",
            "",
            *cells,
            "",
        ]
    return lines


def _sublist(items: list[str]) -> str:
    """Items as a nested markdown list under a bullet."""
    return "".join(f"\n  - {item}" for item in items)


def _commit(r: Result) -> str:
    git = _get(r, "provenance", "git") or {}
    commit = str(git.get("commit") or "?")[:7]
    return f"{commit}+dirty" if git.get("dirty") else commit


def _is_gpu(device: str) -> bool:
    return bool(device) and device != "cpu" and not device.startswith("cpu")


def _device_cell(cell: pd.DataFrame) -> str:
    """``cpu, 1 thread`` / ``cpu, 1–2 threads`` / a GPU's name (several joined by ``/``)."""
    parts = []
    for device, runs in cell.groupby("device"):
        if _is_gpu(str(device)):
            parts.append(str(device))
        else:
            threads = sorted({int(t) for t in runs["threads"].dropna()})
            unit = "thread" if threads == [1] else "threads"
            parts.append(f"{device or '?'}, {_span(threads)} {unit}" if threads else str(device))
    return " / ".join(parts)


def cost_lines(frame: pd.DataFrame) -> list[str]:
    """The ``### Cost`` block of a section: mean training time per run and the device, per
    method and label setting, then the section's total CPU and GPU hours."""
    columns = sorted(frame["labels"].unique(), key=label_order)
    table = pd.DataFrame(
        EMPTY_CELL, index=pd.Index(row_order(frame), name="method"), columns=columns
    )
    for (label, setting), cell in frame.groupby(["method_label", "labels"]):
        seconds = cell["train_seconds"].dropna()
        if not seconds.empty:
            table.loc[label, setting] = f"{seconds.mean() / 60:.1f} min · {_device_cell(cell)}"
    timed = frame.dropna(subset=["train_seconds"])
    gpu = timed["device"].map(lambda d: _is_gpu(str(d)))
    cpu_hours = timed.loc[~gpu, "train_seconds"].sum() / 3600
    core_hours = (timed.loc[~gpu, "train_seconds"] * timed.loc[~gpu, "threads"].fillna(1)).sum()
    gpu_hours = timed.loc[gpu, "train_seconds"].sum() / 3600
    return [
        "### Cost",
        "",
        table.to_markdown(colalign=["left", *["right"] * len(columns)]),
        "",
        f"Cells: mean training time per run (the training loop: data loading and the final "
        f"evaluation not counted) and the device. Section total: {len(timed)} runs, "
        f"{cpu_hours:.1f} CPU-hours of training ({core_hours / 3600:.1f} core-hours at the "
        f"torch threads: time × threads), {gpu_hours:.1f} GPU-hours.{_pretraining_cost(frame)}",
    ]


def _pretraining_cost(frame: pd.DataFrame) -> str:
    """The pretrainings the section's runs start from, each trained once and not counted above."""
    pretrained = frame[frame["pretrain_key"] != ""].drop_duplicates("pretrain_key")
    if pretrained.empty:
        return ""
    parts = [
        f"`{row.pretrain_key}` {row.pretrain_seconds / 60:.1f} min"
        if pd.notna(row.pretrain_seconds)
        else f"`{row.pretrain_key}` time not recorded"
        for row in pretrained.itertuples()
    ]
    return (
        " Not counted: the face-recognition pretraining the runs share, trained once "
        f"(docs/pretraining.md): {', '.join(parts)}."
    )
