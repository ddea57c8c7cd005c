"""Training throughput: the bare model step, the data path and the engine's step, side by side.

For each case (backbone, image size, μ) one process builds the engine exactly as a FixMatch run
does (:func:`harness.engine.build_training`) and times, in interleaved rounds so that a change
of load on a shared machine hits every part alike:

* **bare**: forward + backward + optimiser step of the same model on a random batch of the shape
  the student sees in one step (labelled + both views of every unlabelled image);
* **data**: the engine's data path alone (:func:`harness.engine.next_batches`: the next batch of
  every stream, augmented and turned into model input on the device), so that a change of the
  data path is measured here without touching this file;
* **engine**: one full step as :func:`harness.engine.fit` runs it
  (:func:`harness.engine.engine_step`: data path, loss, backward, optimiser, schedule, EMA).

Figures go to ``docs/performance/throughput-<cpu|cuda>.json``; ``docs/performance.md`` is
rendered from every such file present, so a GPU run adds its section beside the CPU one.
Run it as ``python benchmarks/throughput.py`` or ``bench speed``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate

from harness.config import compose_config
from harness.data.datasets import load_dataset
from harness.data.images import LazyImages
from harness.engine import (
    TrainData,
    Training,
    _autocast,
    build_training,
    engine_step,
    next_batches,
    seed_everything,
    select_device,
)
from harness.errors import BenchError, ConfigError
from harness.method import MethodSetup
from harness.models import build_model
from harness.provenance import device_name, git_state, package_versions
from harness.registry import get_method

# Relative to the working directory, like ``--results-dir``: run from the checkout's root.
DOC = Path("docs/performance.md")
FIGURES = Path("docs/performance")

# The CPU figures measured on the per-sample augmentation path (before it was batched), kept
# beside the current ones: the data path's speed-up is measured against them.
BASELINE_NAME = "per-sample-baseline-cpu.json"
GOAL_ENGINE_VS_BARE = 0.9  # engine step ≥ 0.9× the bare model step (CPU fer_cnn; GPU 224 px)
GOAL_DATA_SPEED_UP = 10.0  # data path at 112 px ≥ 10× the per-sample rate per core (CPU)


@dataclass(frozen=True)
class Case:
    """One measured configuration: a FixMatch step of ``backbone`` at ``image_size`` px, μ."""

    key: str
    backbone: str
    image_size: int
    mu: int
    batch_size: int = 64
    heavy: bool = False  # far too slow on a CPU core for model steps to be worth timing there


CASES = (
    Case("fer_cnn-48", "fer_cnn", 48, 1),  # the CPU default: synthfer's schedule
    Case("resnet18-112", "resnet18", 112, 7, heavy=True),
    Case("resnet18-224", "resnet18", 224, 7, heavy=True),
)
HEAVY_ON_CPU = (
    "model steps not timed on the CPU: a ResNet-18 step with μ=7 (960 images) takes about "
    "100 s on one core at 112 px (measured on the 2-core development machine), and the goal "
    "for these cases is the GPU's; --cpu-model-steps times them anyway"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags (shared by ``benchmarks/throughput.py`` and ``bench speed``)."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each part")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each part first")
    # 0, not the config's default: the CPU goal is for augmentation on the training threads.
    parser.add_argument("--num-workers", type=int, default=0, help="data.num_workers")
    parser.add_argument(
        "--cases", default=",".join(c.key for c in CASES), help="comma list of case keys"
    )
    parser.add_argument(
        "--pool", type=int, default=1024, help="training images decoded to sample from"
    )
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument(
        "--cpu-model-steps", action="store_true", help="time ResNet-18 model steps on a CPU too"
    )
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help=f"also keep these CPU figures as {BASELINE_NAME}, the data path's reference",
    )
    parser.add_argument("--figures-dir", type=Path, default=FIGURES)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides for every case, e.g. dataset=rafdb dataset.root=/data/RAF-DB",
    )


def case_config(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """The run config of ``case``: a FixMatch run at the case's scale (synthfer unless the
    command line's Hydra overrides, applied last, say otherwise)."""
    overrides = [
        f"backbone={case.backbone}",
        "method=fixmatch",
        f"data.image_size={case.image_size}",
        f"data.batch_size={case.batch_size}",
        f"data.unlabelled_ratio={case.mu}",
        f"data.num_workers={args.num_workers}",
        f"train.device={args.device}",
        f"train.compile={str(args.compile).lower()}",
    ]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    return compose_config([*overrides, *args.overrides])


def benchmark_data(cfg: dict[str, Any], pool: int) -> TrainData:
    """The first ``pool`` training faces of the configured dataset (synthfer by default),
    decoded at the case's size into memory as the uint8 cache holds them; every tenth is
    labelled, all are unlabelled."""
    dataset = load_dataset(cfg)
    decoded = LazyImages(dataset.train, int(cfg["data"]["image_size"]))
    count = min(pool, len(decoded))
    images = np.stack([decoded[i] for i in range(count)])
    targets = np.asarray(dataset.train.labels[:count])
    return TrainData(
        train_images=images,
        train_targets=targets,
        labelled=np.arange(0, count, 10),
        unlabelled=np.arange(count),
        test_images=images[:16],  # never evaluated: only the training step is timed
        test_targets=targets[:16],
        class_names=dataset.classes,
    )


def build_case(cfg: dict[str, Any], data: TrainData, method: str = "fixmatch") -> Training:
    """The engine set up for a ``method`` run of ``cfg`` on ``data`` (model seeded with 0)."""
    seed_everything(0)
    model, _ = build_model(cfg["backbone"]["name"], len(data.class_names))
    setup = MethodSetup(
        num_classes=len(data.class_names),
        num_unlabelled=len(data.unlabelled),
        labelled_targets=torch.as_tensor(data.train_targets[data.labelled], dtype=torch.int64),
        total_steps=int(cfg["train"]["steps"]),
    )
    plugin = get_method(method).cls(dict(cfg["method"]), setup)
    return build_training(cfg, model, plugin, data)


def images_per_step(training: Training) -> int:
    """Images the student sees in one step: every view of every stream's batch."""
    return sum(s.spec.batch_size * len(s.spec.views) for s in training.streams.values())


def bare_step(training: Training, image_size: int) -> Callable[[], None]:
    """Forward + backward + optimiser step of the engine's model and optimiser on a fixed
    random batch of the student's shape, with the engine's precision and memory format."""
    settings, count = training.settings, images_per_step(training)
    x = torch.randn(count, 3, image_size, image_size, device=settings.device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(len(training.data.class_names), (count,), device=settings.device)

    def step() -> None:
        with _autocast(settings.device, settings.amp):
            loss = F.cross_entropy(training.student(x).float(), y)
        training.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        training.optimizer.step()

    return step


def time_parts(
    parts: dict[str, Callable[[], Any]], steps: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` calls of every part, after ``warmup`` untimed calls each.

    Rounds interleave the parts (one call of each per round), so a change of load on a shared
    machine slows every part alike. Each call is timed to the end of its device work.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for part in parts.values():
        for _ in range(warmup):
            part()
    sync()
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(steps):
        for name, part in parts.items():
            start = time.perf_counter()
            part()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def measure_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """Figures of one case: median seconds of each part and the derived rates."""
    cfg = case_config(case, args)
    training = build_case(cfg, benchmark_data(cfg, args.pool))
    device, data_cfg = training.settings.device, cfg["data"]
    heavy_here = case.heavy and device.type == "cpu" and not args.cpu_model_steps
    skipped = HEAVY_ON_CPU if heavy_here else None
    steps = iter(range(10**9))
    parts: dict[str, Callable[[], Any]] = {"data": lambda: next_batches(training)}
    if skipped is None:
        parts["bare"] = bare_step(training, int(data_cfg["image_size"]))
        parts["engine"] = lambda: engine_step(training, next(steps))
    times = time_parts(parts, args.steps, args.warmup, device)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    unlabelled = training.streams["unlabelled"].spec.batch_size
    record = {
        "key": case.key,
        # As configured (the command line's overrides may change the case's own values).
        "dataset": cfg["dataset"]["name"],
        "backbone": cfg["backbone"]["name"],
        "image_size": int(data_cfg["image_size"]),
        "batch_size": int(data_cfg["batch_size"]),
        "mu": int(data_cfg["unlabelled_ratio"]),
        "images_per_step": images_per_step(training),
        "unlabelled_per_step": unlabelled,
        "seconds": seconds,
        "seconds_all": times,
        "unlabelled_per_s": unlabelled / seconds["data"],
        "skipped": skipped,
        "amp": training.settings.amp,
        "channels_last": training.settings.channels_last,
        "compile": bool(cfg["train"]["compile"]),
    }
    if skipped is None:
        record["engine_vs_bare"] = seconds["bare"] / seconds["engine"]
        record["engine_images_per_s"] = record["images_per_step"] / seconds["engine"]
    return record


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "device": device_name(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Measure every requested case; returns the figures as written to JSON."""
    wanted = [k for k in args.cases.split(",") if k]
    unknown = sorted(set(wanted) - {c.key for c in CASES})
    if unknown:
        raise ConfigError(f"--cases: unknown {unknown}; choose from {[c.key for c in CASES]}")
    device = select_device(args.device)
    if args.save_baseline and device.type != "cpu":
        raise ConfigError("--save-baseline keeps CPU figures: run it with --device cpu")
    load_before, started = os.getloadavg(), datetime.now(timezone.utc)
    cases = [measure_case(c, args) for c in CASES if c.key in wanted]
    return {
        "kind": device.type,
        "command": " ".join(shlex.quote(a) for a in argv),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "packages": package_versions(),
        "git": git_state(),
        "threads": torch.get_num_threads(),
        "num_workers": args.num_workers,
        "steps": args.steps,
        "warmup": args.warmup,
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
        "cases": cases,
    }


def per_core_rates(record: dict[str, Any] | None) -> dict[int, float]:
    """Data path's unlabelled samples/s per core, by image size, of a CPU record."""
    if record is None:
        return {}
    return {c["image_size"]: c["unlabelled_per_s"] / record["threads"] for c in record["cases"]}


def data_speed_up(
    now: dict[str, Any] | None, before: dict[str, Any] | None, size: int
) -> tuple[float, float | None] | None:
    """``(raw, load-adjusted)`` speed-up of the data path at ``size`` px between two CPU
    records; None when either lacks that size, and no adjusted figure without a bare fer_cnn
    step in both.

    Runs made at different times on a shared machine see different loads (the 2-core
    development machine under a load average of 8 ran every part ~5× slower than under 3), so
    the adjusted figure divides each run's rate by the speed of its own bare fer_cnn step,
    timed in the same interleaved rounds: what remains is the data path's own change.
    """
    rate_now, rate_before = per_core_rates(now).get(size), per_core_rates(before).get(size)
    if rate_now is None or rate_before is None:
        return None
    raw = rate_now / rate_before
    ref_now, ref_before = _bare_seconds(now), _bare_seconds(before)
    adjusted = raw * ref_now / ref_before if ref_now and ref_before else None
    return raw, adjusted


def _bare_seconds(record: dict[str, Any] | None) -> float | None:
    case = _case(record, "fer_cnn-48")
    return None if case is None else case["seconds"].get("bare")


def goals(records: dict[str, dict[str, Any]], baseline: dict[str, Any] | None) -> list[list[str]]:
    """Rows ``[goal, measured, verdict]`` for the three goals of issue 13."""
    cpu, gpu = records.get("cpu"), records.get("cuda")
    rows = [
        _ratio_goal(
            "CPU, fer_cnn 48 px, μ=1, num_workers=0: engine step ≥ 0.9× bare model step",
            cpu,
            "fer_cnn-48",
        )
    ]
    label = "CPU: data path at 112 px ≥ 10× the per-sample path's rate per core"
    speed_up = data_speed_up(cpu, baseline, 112)
    if speed_up is None:
        rows.append([label, "not measured", "—"])
    elif cpu == baseline:
        rows.append([label, "the baseline is today's data path", "awaits batched augmentation"])
    else:
        raw, adjusted = speed_up
        factor = raw if adjusted is None else adjusted
        measured = f"{raw:.2f}× raw" + (
            "" if adjusted is None else f", {adjusted:.2f}× load-adjusted"
        )
        verdict = (
            "met"
            if factor >= GOAL_DATA_SPEED_UP
            else f"missed ({GOAL_DATA_SPEED_UP / factor:.1f}× short)"
        )
        rows.append([label, measured, verdict])
    rows.append(
        _ratio_goal(
            "GPU, resnet18 224 px, μ=7: engine step ≥ 0.9× bare model step", gpu, "resnet18-224"
        )
    )
    return rows


def _case(record: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if record is None:
        return None
    return next((c for c in record["cases"] if c["key"] == key), None)


def _ratio_goal(label: str, record: dict[str, Any] | None, key: str) -> list[str]:
    case = _case(record, key)
    if case is None or "engine_vs_bare" not in case:
        return [label, "not measured", "still to come" if record is None else "—"]
    ratio = case["engine_vs_bare"]
    verdict = (
        "met" if ratio >= GOAL_ENGINE_VS_BARE else f"missed by {GOAL_ENGINE_VS_BARE - ratio:.2f}"
    )
    return [label, f"{ratio:.2f}×", verdict]


def figures_table(record: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """One row per case: median step times, the engine/bare ratio and the data path's rate
    (per core on a CPU, with its ratio to ``baseline``'s when given)."""
    per_core = record["kind"] == "cpu"
    rows = []
    for case in record["cases"]:
        sec = case["seconds"]
        rate = case["unlabelled_per_s"] / (record["threads"] if per_core else 1)
        speed_up = data_speed_up(record, baseline, case["image_size"]) if per_core else None
        rows.append(
            [
                f"{case['backbone']} · {case['image_size']} px · μ={case['mu']}",
                case["images_per_step"],
                _ms(sec.get("bare")),
                _ms(sec["data"]),
                _ms(sec.get("engine")),
                f"{case['engine_vs_bare']:.2f}×" if "engine_vs_bare" in case else "—",
                f"{rate:,.0f}",
                _speed_up_cell(speed_up),
            ]
        )
    rate_header = "data: unlabelled/s" + (" per core" if per_core else "")
    headers = ["case", "images/step", "bare (ms)", "data (ms)", "engine (ms)", "engine/bare",
               rate_header, "data vs per-sample (load-adjusted)"]  # fmt: skip
    table = tabulate(rows, headers, tablefmt="github", disable_numparse=True)
    reasons: dict[str, list[str]] = {}
    for case in record["cases"]:
        if case["skipped"]:
            reasons.setdefault(case["skipped"], []).append(f"{case['image_size']} px")
    notes = [f"- {_and_list(sizes)}: {reason}." for reason, sizes in reasons.items()]
    return table + ("\n\n" + "\n".join(notes) if notes else "")


def _and_list(sizes: list[str]) -> str:
    """``"112 px and 224 px"``: the cases a note is about."""
    return " and ".join([", ".join(sizes[:-1]), sizes[-1]] if len(sizes) > 1 else sizes)


def _speed_up_cell(speed_up: tuple[float, float | None] | None) -> str:
    if speed_up is None:
        return "—"
    raw, adjusted = speed_up
    return f"{raw:.2f}×" + ("" if adjusted is None else f" ({adjusted:.2f}×)")


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{1000 * seconds:,.1f}"


def describe(record: dict[str, Any]) -> str:
    """Where, with what and how a record was measured, as a Markdown list."""
    m, pkg, load = record["machine"], record["packages"], record["load_average"]
    where = f"{m['cpu_count']} CPU cores ({m['cpu']})"
    where = f"{m['device']}; {where}" if record["kind"] == "cuda" else where
    commit = record["git"].get("commit") or "unknown"
    dirty = " + uncommitted changes" if record["git"].get("dirty") else ""
    lines = [
        f"- machine: {where}; {m['platform']}",
        f"- versions: python {pkg['python']}, torch {pkg['torch']}, torchvision "
        f"{pkg['torchvision']}, timm {pkg['timm']}"
        + (f", CUDA {m['cuda']}, cuDNN {m['cudnn']}" if m["cuda"] else ""),
        f"- torch threads: {record['threads']}; data.num_workers: {record['num_workers']}; "
        f"median of {record['steps']} interleaved steps after {record['warmup']} warm-up steps",
        f"- command: `{record['command']}`",
        f"- measured {record['date']} at commit {commit[:10]}{dirty}",
        f"- load average: {load['before']:.1f} before, {load['after']:.1f} after",
    ]
    if max(load["before"], load["after"]) > max(1, m["cpu_count"] - record["threads"]):
        lines.append("- **indicative only**: other work shared the machine's cores during the run")
    return "\n".join(lines)


TITLES = {"cpu": "CPU", "cuda": "GPU"}
INTRO = (
    "Each case is a FixMatch step (labelled batch 64 and μ unlabelled images per labelled one, "
    "each unlabelled image in a weak and a strong view), timed in one process in three parts: "
    "**bare**, forward, backward and optimiser step of the same model on a random batch of the "
    "student's shape; **data**, the engine's data path alone (`harness.engine.next_batches`: "
    "the next batch of every stream, augmented, as model input on the device); **engine**, "
    "one step as `fit` runs it (`harness.engine.engine_step`: data path, loss, backward, "
    "optimiser, schedule, EMA). Figures are median milliseconds per step over rounds that "
    "interleave the three parts; on CUDA under bf16 autocast and channels_last. *engine/bare* "
    "is the engine's throughput over the bare step's; *data vs per-sample* compares the data "
    "path's rate per core with the per-sample augmentation it replaces (the baseline section): "
    "raw, and in brackets adjusted for the machine's load, each run's rate divided by the "
    "speed of its own bare fer_cnn step (the two runs are made at different times, and on a "
    "shared machine a load change alone moves raw rates several-fold)."
)


def render(records: dict[str, dict[str, Any]], baseline: dict[str, Any] | None) -> str:
    """``docs/performance.md`` from the figures of each device kind measured so far."""
    parts = [
        "# Training throughput",
        "Generated by `benchmarks/throughput.py` (also `bench speed`) from "
        "`docs/performance/*.json`: do not edit, rerun. CPU: `python benchmarks/throughput.py "
        "--device cpu --threads 1`; GPU: `bash scripts/gpu_check.sh` (the GPU tests, then "
        "this benchmark on CUDA).",
        INTRO,
        "## Goals (issue 13)",
        tabulate(goals(records, baseline), ["goal", "measured", "verdict"], tablefmt="github"),
    ]
    for kind in ("cpu", "cuda"):
        parts.append(f"## {TITLES[kind]}")
        if kind in records:
            parts += [describe(records[kind]), figures_table(records[kind], baseline)]
        else:
            parts.append(
                "Still to come: no GPU was available when this page was generated. Run "
                "`bash scripts/gpu_check.sh` on a GPU node; it writes "
                "`docs/performance/throughput-cuda.json` and regenerates this page."
            )
    if baseline is not None:
        parts += [
            "## Baseline: the per-sample augmentation path (CPU)",
            "Each sample augmented on its own (torchvision v2 under its own seeded RNG), as "
            "before batched augmentation; the data path's speed-up is measured against this.",
            describe(baseline),
            figures_table(baseline),
        ]
    return "\n\n".join(parts) + "\n"


def load_figures(figures_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Every ``throughput-<kind>.json`` in ``figures_dir`` by kind, and the baseline if kept."""
    records = {
        path.stem.removeprefix("throughput-"): json.loads(path.read_text())
        for path in sorted(figures_dir.glob("throughput-*.json"))
    }
    baseline_path = figures_dir / BASELINE_NAME
    baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() else None
    return records, baseline


def run_and_write(args: argparse.Namespace, command: Sequence[str]) -> int:
    """Measure, print the figures, write this kind's JSON and regenerate the page."""
    record = run(args, command)
    print(describe(record) + "\n\n" + figures_table(record))
    args.figures_dir.mkdir(parents=True, exist_ok=True)
    names = [f"throughput-{record['kind']}.json"] + ([BASELINE_NAME] if args.save_baseline else [])
    for name in names:
        (args.figures_dir / name).write_text(json.dumps(record, indent=1) + "\n")
    args.doc.write_text(render(*load_figures(args.figures_dir)))
    print(f"\nwrote {', '.join(str(args.figures_dir / n) for n in names)} and {args.doc}")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python benchmarks/throughput.py") -> int:
    """Entry point of ``python benchmarks/throughput.py`` and ``bench speed``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_and_write(args, [*prog.split(), *argv])
    except BenchError as err:
        if prog.startswith("bench "):
            raise  # the bench CLI prints it
        print(f"error: {err}", file=sys.stderr)
        return 2
