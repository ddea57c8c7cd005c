"""The record of the figures ``bench report`` drew: ``figures/.index.json`` beside the
leaderboard, each section's ``### Figures`` lines with a digest of the runs they were drawn
from. ``bench leaderboard`` (which draws nothing) reads it, so the leaderboard file is the same
whichever of the two commands wrote it last, and never loses its figure links."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.files import atomic_write_text

INDEX_NAME = ".index.json"  # hidden: the results listing skips dot files
STALE_NOTE = (
    "These figures were drawn from an earlier set of this section's runs: `bench report` "
    "draws them again."
)


def index_path(board_dir: Path) -> Path:
    """``<board_dir>/figures/.index.json``."""
    return Path(board_dir) / "figures" / INDEX_NAME


def runs_digest(results: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of a section's run ids and finish times: which runs its figures show."""
    runs = sorted(f"{r.get('run_id', '')}@{(r.get('timing') or {}).get('finished', '')}"
                  for r in results)  # fmt: skip
    return hashlib.sha256("\n".join(runs).encode()).hexdigest()


def write_figure_index(
    board_dir: Path,
    lines: Mapping[str, list[str]],
    sections: Mapping[str, Sequence[Mapping[str, Any]]],
) -> Path:
    """Record each section's figure ``lines`` with the digest of its runs (``sections``)."""
    record = {
        name: {"runs": runs_digest(sections[name]), "lines": list(section_lines)}
        for name, section_lines in lines.items()
    }
    path = index_path(board_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"sections": record}, indent=1, sort_keys=True) + "\n")
    return path


def recorded_figures(
    board_dir: Path, sections: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, list[str]]:
    """The recorded figure lines of the sections still present; a section whose runs changed
    since keeps its links, with :data:`STALE_NOTE`. Empty without a readable index."""
    try:
        record = json.loads(index_path(board_dir).read_text())["sections"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    extras: dict[str, list[str]] = {}
    for name, results in sections.items():
        entry = record.get(name) if isinstance(record, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("lines"), list):
            continue
        lines = [str(line) for line in entry["lines"]]
        if entry.get("runs") != runs_digest(results):
            lines += [STALE_NOTE, ""]
        extras[name] = lines
    return extras
