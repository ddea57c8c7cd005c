"""Published numbers beside the measured ones: the reference tables of ``references/*.yaml``.

Each file holds one paper's numbers: its citation, where they come from, the protocol they were
measured under (a ``configs/experiment/`` name, or ``own`` for a setup no config here
reproduces), the metric, and one row per number with its line and exact words. A leaderboard
section shows the rows of its dataset and label settings — a protocol's rows only in the
sections of that protocol's tag — with the measured − published gap per method row, on the
paper's metric.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from harness.errors import ConfigError, LabelProtocolError
from harness.labels import parse_protocol
from harness.report.frame import METRIC_NAMES, label_order, row_order

# A checkout's references/, or the copy an installed wheel ships as harness/references/.
_HERE = Path(__file__).resolve().parent.parent
REFERENCE_DIRS = (_HERE / "references", _HERE.parent / "references")
OWN = "own"
_FILE_KEYS = {"citation", "code", "table", "protocol", "setting", "metric", "metric_note", "rows"}
_ROW_KEYS = {"method", "dataset", "labels", "value", "line", "quote"}


@dataclass(frozen=True)
class Reference:
    """One published number and where it comes from."""

    file: str  # e.g. references/ssfer.yaml
    citation: str
    code: str
    protocol: str  # a configs/experiment/ name, or "own"
    setting: str  # what the paper's own protocol is (protocol "own")
    metric: str  # a key of METRIC_NAMES
    metric_note: str
    method: str
    dataset: str
    labels: str  # canonical --labels text
    value: float
    line: int
    quote: str


def reference_dir() -> Path | None:
    """The folder of reference tables (None when neither a checkout's nor a wheel's exists)."""
    return next((d for d in REFERENCE_DIRS if d.is_dir()), None)


@functools.lru_cache(maxsize=8)
def load_references(folder: Path | None = None) -> tuple[Reference, ...]:
    """Every row of every ``*.yaml`` in ``folder`` (default: :func:`reference_dir`). A bad
    file stops with one line naming the file, the row and the field."""
    folder = reference_dir() if folder is None else folder
    if folder is None:
        return ()
    references: list[Reference] = []
    for path in sorted(folder.glob("*.yaml")):
        references += _read(path)
    return tuple(references)


def _read(path: Path) -> list[Reference]:
    name = f"references/{path.name}"
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:  # YAML syntax: the parser's first line says where
        raise ConfigError(f"{name}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping with {', '.join(sorted(_FILE_KEYS))}")
    unknown = set(data) - _FILE_KEYS
    missing = {"citation", "code", "protocol", "metric", "rows"} - set(data)
    if unknown or missing:
        what = f"unknown field {sorted(unknown)[0]!r}" if unknown else f"no {sorted(missing)[0]!r}"
        raise ConfigError(f"{name}: {what} (fields: {', '.join(sorted(_FILE_KEYS))})")
    metric = str(data["metric"])
    if metric not in METRIC_NAMES:
        raise ConfigError(f"{name}: metric {metric!r} is not one of {', '.join(METRIC_NAMES)}")
    protocol = str(data["protocol"])
    if protocol != OWN:
        protocol_tag(protocol, name)  # refuse a protocol no config defines
    rows = []
    for index, row in enumerate(data["rows"] or [], 1):
        where = f"{name}, row {index}"
        if not isinstance(row, dict) or set(row) != _ROW_KEYS:
            got = sorted(row) if isinstance(row, dict) else row
            raise ConfigError(f"{where}: expected the fields {sorted(_ROW_KEYS)}, got {got}")
        try:
            labels = parse_protocol(str(row["labels"])).text
            value = float(row["value"])
        except (LabelProtocolError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
        rows.append(
            Reference(
                file=name,
                citation=" ".join(str(data["citation"]).split()),
                code=str(data["code"]),
                protocol=protocol,
                setting=str(data.get("setting") or ""),
                metric=metric,
                metric_note=str(data.get("metric_note") or ""),
                method=str(row["method"]),
                dataset=str(row["dataset"]),
                labels=labels,
                value=value,
                line=int(row["line"]),
                quote=str(row["quote"]),
            )
        )
    return rows


def protocol_tag(protocol: str, where: str = "references") -> str:
    """The ``tag`` a pinned protocol gives its runs (its leaderboard section)."""
    from harness.config import config_dir

    path = config_dir() / "experiment" / f"{protocol}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{where}: protocol {protocol!r} is not a config in configs/experiment/ "
            f"(or write protocol: {OWN} for the paper's own setup)"
        )
    return str(OmegaConf.load(path).get("tag") or "")


def section_references(
    references: tuple[Reference, ...] | list[Reference], dataset: str, tag: str, settings: set[str]
) -> list[Reference]:
    """The rows a section (dataset, tag, its label settings) shows."""
    return [
        r
        for r in references
        if r.dataset == dataset
        and r.labels in settings
        and (r.protocol == OWN or protocol_tag(r.protocol) == tag)
    ]


def published_lines(part: pd.DataFrame, dataset: str) -> list[str]:
    """The published block of one leaderboard section: per paper and metric, a table of the
    published row and every measured row with its gap; empty when no reference applies."""
    if part.empty:
        return []
    tag = str(part["tag"].iloc[0])
    chosen = section_references(load_references(), dataset, tag, set(part["labels"]))
    lines: list[str] = []
    groups: dict[tuple[str, str, str], list[Reference]] = {}
    for ref in chosen:
        groups.setdefault((ref.file, ref.metric, ref.method), []).append(ref)
    for (file, metric, method), refs in groups.items():
        first = refs[0]
        settings = sorted({r.labels for r in refs}, key=label_order)
        published = {r.labels: r for r in refs}
        header = ["row", *settings]
        rows = [[f"**published**: {method}", *[f"{published[s].value:.2f}" for s in settings]]]
        stats = part.dropna(subset=[metric]).groupby(["method_label", "labels"])[metric]
        stats = stats.agg(["mean", "std", "count"])
        for label in row_order(part):
            cells = [_gap_cell(stats, label, s, published[s].value) for s in settings]
            if any(cell != "–" for cell in cells):
                rows.append([label, *cells])
        note = f" ({first.metric_note})" if first.metric_note else ""
        if first.protocol == OWN:
            protocol = (
                f"its own protocol ({first.setting}), not this section's: the gap compares "
                "protocols as much as methods"
            )
        else:
            protocol = f"this section's protocol (`+experiment={first.protocol}`)"
        sources = "; ".join(
            f"{s}: line {published[s].line}, “{published[s].quote}”" for s in settings
        )
        lines += [
            f"#### Published beside measured: {METRIC_NAMES[metric]} — {method}",
            "",
            _markdown(header, rows),
            "",
            f"Published: {first.citation}; {first.code}, {sources} (`{file}`). Measured "
            f"under {protocol}. Metric: {METRIC_NAMES[metric]}{note}. Cells: measured mean ± "
            "std (seeds); Δ = measured − published.",
            "",
        ]
    return lines


def _gap_cell(stats: pd.DataFrame, label: str, setting: str, value: float) -> str:
    if (label, setting) not in stats.index:
        return "–"
    mean, std, n = stats.loc[(label, setting)]
    spread = f" ± {std:.2f}" if n > 1 and not math.isnan(std) else ""
    return f"{mean:.2f}{spread} ({int(n)}); Δ {mean - value:+.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])
