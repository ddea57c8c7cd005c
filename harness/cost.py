"""A planned grid's expected device time, from the throughput benchmark's saved figures.

``bench speed --output FILE`` (and ``benchmarks/throughput.py``, the repository's page) save per
case (backbone, image size, labelled batch, μ) the median seconds of one engine step, a FixMatch
step as :func:`harness.engine.fit` runs it, on the machine it ran on. They are read from the
repository's ``docs/performance/throughput-<cpu|cuda>.json`` and from ``<results-dir>/speed/``,
where a user keeps the figures measured on the target machine. A grid's runs that share a case
cost runs × steps × those seconds; a case no figure covers is named, with the command that
measures it. Nothing here imports torch: ``bench run --dry-run`` stays instant.
"""

from __future__ import annotations

import json
import shlex
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.spec import RunSpec

# The repository's figures (benchmarks/throughput.py): from the working directory, and beside
# the code of a checkout.
FIGURE_DIRS = (
    Path("docs/performance"),
    Path(__file__).resolve().parent.parent / "docs" / "performance",
)
SPEED_DIR = "speed"  # <results-dir>/speed/*.json: `bench speed --output` figures of your machines
# A case of the benchmark to name in `bench speed --cases`; the overrides set its scale.
_ANY_CASE = "resnet18-224"


@dataclass(frozen=True)
class StepFigure:
    """One measured engine step: what it was measured on, and its median seconds."""

    kind: str  # "cpu" | "cuda"
    device: str  # the machine's device name, as the benchmark recorded it
    backbone: str
    image_size: int
    batch_size: int
    mu: int
    seconds: float
    date: str
    threads: int | None


@dataclass(frozen=True)
class Scale:
    """What a step costs depends on: backbone, resolution, labelled batch and μ."""

    backbone: str
    image_size: int
    batch_size: int
    mu: int

    def text(self) -> str:
        """``resnet18 at 224 px, batch 16, μ=1``."""
        return f"{self.backbone} at {self.image_size} px, batch {self.batch_size}, μ={self.mu}"


def load_step_figures(
    dirs: Sequence[Path] = FIGURE_DIRS, results_dir: Path | None = None
) -> list[StepFigure]:
    """Every timed engine step in the benchmark's saved figures: ``throughput-*.json`` of
    ``dirs``, and every ``*.json`` of ``<results_dir>/speed/`` (a case measured without model
    steps, e.g. ResNet-18 on a CPU, has none). An unreadable file is skipped."""
    figures: list[StepFigure] = []
    seen: set[Path] = set()
    sources = [(folder, "throughput-*.json") for folder in dirs]
    if results_dir is not None:
        sources.append((Path(results_dir) / SPEED_DIR, "*.json"))
    for folder, pattern in sources:
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                record = json.loads(path.read_text())
                figures += [_figure(record, case) for case in record["cases"] if _timed(case)]
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return figures


def _timed(case: dict[str, Any]) -> bool:
    return isinstance(case.get("seconds"), dict) and "engine" in case["seconds"]


def _figure(record: dict[str, Any], case: dict[str, Any]) -> StepFigure:
    return StepFigure(
        kind=str(record["kind"]),
        device=str(record.get("machine", {}).get("device") or record["kind"]),
        backbone=str(case["backbone"]),
        image_size=int(case["image_size"]),
        batch_size=int(case["batch_size"]),
        mu=int(case["mu"]),
        seconds=float(case["seconds"]["engine"]),
        date=str(record.get("date", "?"))[:10],
        threads=record.get("threads"),
    )


def scale_of(config: dict[str, Any]) -> Scale:
    """The step-cost case of a run config."""
    data = config["data"]
    return Scale(
        str(config["backbone"]["name"]),
        int(data["image_size"]),
        int(data["batch_size"]),
        int(data["unlabelled_ratio"]),
    )


def device_kinds(config: dict[str, Any]) -> tuple[str, ...]:
    """Where a run will train: ``train.device``, or for ``auto`` what the launcher asks for
    (a SLURM job with GPUs: cuda; without: cpu; a local run: either, unknown before it starts)."""
    device = str(config["train"]["device"])
    if device != "auto":
        return ("cpu",) if device == "cpu" else ("cuda",)
    launcher = config.get("launcher") or {}
    if "gpus_per_node" in launcher:
        return ("cuda",) if int(launcher["gpus_per_node"] or 0) > 0 else ("cpu",)
    return ("cuda", "cpu")


def cost_lines(
    specs: Sequence[RunSpec],
    figures: Sequence[StepFigure] | None = None,
    results_dir: Path = Path("results"),
) -> list[str]:
    """One line per (case, device kind) of the grid's runs: the expected device time as
    runs × steps × seconds per step, or that no figure covers it and how to measure one
    (into ``<results_dir>/speed/``, where the next plan finds it)."""
    figures = load_step_figures(results_dir=results_dir) if figures is None else figures
    groups: dict[tuple[Scale, tuple[str, ...]], list[RunSpec]] = defaultdict(list)
    for spec in specs:
        groups[(scale_of(spec.config), device_kinds(spec.config))].append(spec)
    lines = []
    for (scale, kinds), runs in groups.items():
        steps = sorted({int(s.config["train"]["steps"]) for s in runs})
        total_steps = sum(int(s.config["train"]["steps"]) for s in runs)
        grid = f"{len(runs)} run{'s' * (len(runs) != 1)} × {_steps(steps)} steps"
        measured = False
        for kind in kinds:
            match = _best_match(figures, scale, kind)
            if match is None:
                continue
            measured = True
            device = match.device if match.device != kind else ""
            lines.append(
                f"expected device time, {scale.text()}: {grid} × {match.seconds:.3g} s/step "
                f"= {_duration(total_steps * match.seconds)} on {kind} ({device}"
                f"{_threads(match, runs)}`bench speed` figure of {match.date}: a FixMatch step, "
                "training only, evaluations not counted)"
            )
        if not measured:
            where = " or ".join(kinds)
            lines.append(
                f"expected device time, {scale.text()}: {grid} × (no measured step time for "
                f"this case on {where}); measure it on the target machine: "
                f"{measure_command(scale, kinds[0], results_dir)}"
            )
    return lines


def measure_command(scale: Scale, kind: str, results_dir: Path = Path("results")) -> str:
    """The ``bench speed`` command that times one engine step of ``scale`` on ``kind`` and
    saves it where :func:`cost_lines` reads it (the overrides, applied after the case's own
    values, set the scale; on a CPU a ResNet step is timed only when asked)."""
    name = f"{kind}-{scale.backbone}-{scale.image_size}px-b{scale.batch_size}-mu{scale.mu}.json"
    output = str(Path(results_dir) / SPEED_DIR / name)
    overrides = [
        f"backbone={scale.backbone}",
        f"data.image_size={scale.image_size}",
        f"data.batch_size={scale.batch_size}",
        f"data.unlabelled_ratio={scale.mu}",
    ]
    cpu = ["--cpu-model-steps"] if kind == "cpu" else []
    flags = ["--device", kind, "--cases", _ANY_CASE, *cpu, "--output", output]
    return shlex.join(["bench", "speed", *flags, *overrides])


def _best_match(figures: Sequence[StepFigure], scale: Scale, kind: str) -> StepFigure | None:
    """The most recent figure of exactly this case on this kind of device."""
    matches = [
        f
        for f in figures
        if f.kind == kind
        and (f.backbone, f.image_size, f.batch_size, f.mu)
        == (scale.backbone, scale.image_size, scale.batch_size, scale.mu)
    ]
    return max(matches, key=lambda f: f.date) if matches else None


def _steps(steps: list[int]) -> str:
    return "/".join(f"{s:,}" for s in steps)


def _threads(figure: StepFigure, runs: Sequence[RunSpec]) -> str:
    """A CPU figure's thread count, and the runs' when it differs (a step's time depends on it)."""
    if figure.kind != "cpu":
        return "; " if figure.device != figure.kind else ""
    wanted = {s.config["train"].get("threads") for s in runs}
    runs_at = ", ".join("torch's default" if t is None else str(t) for t in sorted(wanted, key=str))
    note = "" if wanted == {figure.threads} else f", the runs at {runs_at}"
    lead = ", " if figure.device != figure.kind else ""
    return f"{lead}measured at {figure.threads} thread(s){note}; "


def _duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
