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
  (:func:`harness.engine.training_step`: data path, loss, backward, optimiser, schedule, EMA).

``bench speed`` prints the figures and writes them as JSON where ``--output`` says; the
repository's own page of them (docs/performance.md) is rendered by ``benchmarks/throughput.py``.
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

from harness.arguments import parse_with_overrides
from harness.config import compose_config
from harness.data.datasets import load_dataset
from harness.data.images import LazyImages
from harness.device import autocast, select_device, synchronize
from harness.engine import (
    TrainData,
    Training,
    build_method,
    build_training,
    next_batches,
    training_step,
)
from harness.errors import ConfigError
from harness.files import atomic_write_text
from harness.models import build_model
from harness.provenance import device_name, git_state, package_versions
from harness.rng import seed_everything


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
    "100 s on one core at 112 px (measured on the 2-core development machine): these cases "
    "are for a GPU; --cpu-model-steps times them anyway"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The measurement's flags (``bench speed``; ``benchmarks/throughput.py`` adds its own)."""
    default = " (default: %(default)s)"
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N" + default)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each part" + default)
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps of each part first" + default
    )
    # 0, not the config's default: augmentation on the training threads, as a CPU run has it.
    parser.add_argument("--num-workers", type=int, default=0, help="data.num_workers" + default)
    parser.add_argument(
        "--cases",
        default=",".join(c.key for c in CASES),
        help="comma list of the case keys listed below (default: all)",
    )
    parser.add_argument(
        "--pool", type=int, default=1024, help="training images decoded to sample from" + default
    )
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument(
        "--cpu-model-steps", action="store_true", help="time ResNet-18 model steps on a CPU too"
    )
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
    return build_training(cfg, model, build_method(method, cfg, data), data)


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
        with autocast(settings.device, settings.amp):
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
    for part in parts.values():
        for _ in range(warmup):
            part()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(steps):
        for name, part in parts.items():
            start = time.perf_counter()
            part()
            synchronize(device)
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
        parts["engine"] = lambda: training_step(training, next(steps))
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


def figures_table(record: dict[str, Any], extra: dict[str, list[str]] | None = None) -> str:
    """One row per case: median step times, the engine/bare ratio and the data path's rate
    (per core on a CPU); ``extra`` adds columns (header → one cell per case). Notes say why a
    case's model steps were not timed."""
    per_core = record["kind"] == "cpu"
    rows = []
    for case in record["cases"]:
        sec = case["seconds"]
        rate = case["unlabelled_per_s"] / (record["threads"] if per_core else 1)
        rows.append(
            [
                f"{case['backbone']} · {case['image_size']} px · μ={case['mu']}",
                case["images_per_step"],
                _ms(sec.get("bare")),
                _ms(sec["data"]),
                _ms(sec.get("engine")),
                f"{case['engine_vs_bare']:.2f}×" if "engine_vs_bare" in case else "—",
                f"{rate:,.0f}",
            ]
        )
    rate_header = "data: unlabelled/s" + (" per core" if per_core else "")
    headers = ["case", "images/step", "bare (ms)", "data (ms)", "engine (ms)", "engine/bare",
               rate_header]  # fmt: skip
    for header, cells in (extra or {}).items():
        headers.append(header)
        for row, cell in zip(rows, cells, strict=True):
            row.append(cell)
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


def cases_help() -> str:
    """The cases ``--cases`` chooses from, one line each (the epilog of ``--help``)."""
    lines = ["cases (--cases, comma-separated; all by default):"]
    for case in CASES:
        note = "; on a CPU the data path only" if case.heavy else ""
        lines.append(
            f"  {case.key:<14} FixMatch step of {case.backbone} at {case.image_size} px, "
            f"batch {case.batch_size}, μ={case.mu}{note}"
        )
    lines.append(
        "Hydra overrides after the flags apply to every case (synthfer unless they name "
        "another dataset)."
    )
    return "\n".join(lines)


def measurement_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A command line with the measurement's flags and the cases in its help (``bench speed``
    and benchmarks/throughput.py add their own outputs to it)."""
    result = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=cases_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(result)
    return result


def parser(prog: str = "bench speed") -> argparse.ArgumentParser:
    """The command line of ``bench speed``: the measurement's flags and ``--output``."""
    result = measurement_parser(prog, __doc__.split("\n\n")[0])
    result.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write the figures as JSON to this file (default: none written)",
    )
    return result


def write_record(record: dict[str, Any], path: Path) -> None:
    """The figures as JSON at ``path`` (its folder made when missing), written atomically: a
    committed benchmarks/ record is never left half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def main(argv: Sequence[str] | None = None, prog: str = "bench speed") -> int:
    """``bench speed``: measure, print where and how, and the figures; write the JSON only
    where ``--output`` says."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_overrides(parser(prog), argv)
    record = run(args, [*prog.split(), *argv])
    print(describe(record) + "\n\n" + figures_table(record))
    if args.output is not None:
        write_record(record, args.output)
        print(f"\nwrote {args.output}")
    return 0
