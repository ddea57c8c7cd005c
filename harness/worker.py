"""One RunSpec → one result file. The same function runs in-process, under submitit's local
executor and on a SLURM node: it takes plain data and touches nothing but the result store."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from harness.data.datasets import load_dataset, split_images
from harness.engine import (
    CHECKPOINT_NAME,
    LOG_NAME,
    FitResult,
    TrainData,
    TrainingStopped,
    build_method,
    fit,
)
from harness.failure import clear_failure, write_failure
from harness.health import result_health
from harness.labels import LabelProtocol, labelled_split, parse_protocol, split_summary
from harness.models import build_model
from harness.progress import log_console
from harness.provenance import collect_provenance
from harness.registry import plugin_provenance
from harness.rng import seed_everything
from harness.run_info import write_run_info
from harness.saved_model import keep_weights, model_meta
from harness.spec import RunSpec
from harness.steplog import keep_compact_copy, last_step
from harness.store import claim_run, has_result, load_result, result_path, run_dir, write_result


def run_spec(
    spec: RunSpec,
    results_dir: str | Path,
    force: bool = False,
    show_progress: bool = True,
    stop_requested: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run and write its result JSON; resumes from its checkpoint.

    A run whose result already exists is not retrained (unless ``force``): its result is
    returned as stored. A run another process is training raises ``RunBusyError``. A run
    that raises leaves a failure record (:mod:`harness.failure`) in its working folder.
    ``stop_requested`` is passed to :func:`harness.engine.fit` (a checkpoint, then
    ``TrainingStopped``, once it says yes).
    """
    results_dir = Path(results_dir)
    if has_result(results_dir, spec) and not force:
        return load_result(result_path(results_dir, spec))
    work_dir = run_dir(results_dir, spec)
    with claim_run(work_dir):
        # Another process may have finished the run between the check above and the lock.
        if has_result(results_dir, spec) and not force:
            return load_result(result_path(results_dir, spec))
        clear_failure(work_dir)  # an earlier attempt's error is no longer the run's state
        write_run_info(work_dir, spec)
        try:
            return _train_and_record(spec, results_dir, force, show_progress, stop_requested)
        except TrainingStopped:
            raise  # resumable: not a failure
        except Exception as err:
            # On disk for `bench status`, wherever the run ran; then the launcher reports it.
            step = getattr(err, "step", None)
            if not isinstance(step, int):
                step = last_step(work_dir / LOG_NAME)
            # A full disk may refuse the record too: the error itself still reaches the user.
            with contextlib.suppress(OSError):
                write_failure(work_dir, spec.run_id, err, step)
            raise


@dataclass
class _RunData:
    """A run's data as the engine takes it, with what the result records about it."""

    dataset: Any  # harness.data.datasets.Dataset
    data: TrainData
    protocol: LabelProtocol
    seconds: float  # decoding (or reading the cache) of both splits


def _train_and_record(
    spec: RunSpec,
    results_dir: Path,
    force: bool,
    show_progress: bool,
    stop_requested: Callable[[], bool] | None,
) -> dict[str, Any]:
    """The body of :func:`run_spec`, run while holding the run's lock: data, model and method,
    the engine, then the kept weights, the result and the clean-up, in that order."""
    console = log_console()
    started = datetime.now(timezone.utc)
    provenance = collect_provenance(sys.argv)
    cfg = spec.config
    work_dir = run_dir(results_dir, spec)
    if force and not (work_dir / CHECKPOINT_NAME).exists():
        # A forced rerun starts clean; an interrupted forced rerun still resumes.
        (work_dir / LOG_NAME).unlink(missing_ok=True)
    run = _load_run_data(spec)
    model, weights_report, pretrained = _build_model(spec, run, console, show_progress)
    method = build_method(spec.method, cfg, run.data)
    console.log(
        f"[bold]{spec.run_id}[/]: {run.dataset.name} ({len(run.dataset.train)} train / "
        f"{len(run.dataset.test)} test), {len(run.data.labelled)} labelled, "
        f"method {spec.method_label}"
    )
    if (work_dir / CHECKPOINT_NAME).is_file():  # the engine says "resumed ..." once loaded
        console.log(f"loading checkpoint {_sized(work_dir / CHECKPOINT_NAME)} ...")
    outcome = fit(
        cfg,
        model,
        method,
        run.data,
        work_dir,
        run_hash=spec.config_hash,
        console=console,
        show_progress=show_progress,
        stop_requested=stop_requested,
    )
    # Kept before the result is written: once the result exists the checkpoint goes.
    saved_weights = keep_weights(
        results_dir,
        spec,
        model_meta(spec, run.dataset.classes, len(run.data.unlabelled)),
        outcome.final_states if cfg["train"]["save_weights"] else None,
    )
    result = _result(spec, run, outcome, started)
    result["weights"] = weights_report.summary() if weights_report is not None else None
    result["saved_weights"] = saved_weights
    # What the training really ran on: train.threads is applied after provenance is taken.
    result["provenance"] = {
        **provenance,
        "device": outcome.device,
        "torch_threads": outcome.threads,
        **({"pretrain": pretrained.provenance()} if pretrained else {}),
        **({"plugin": plugin} if (plugin := plugin_provenance(spec.method)) else {}),
    }
    result["config"] = cfg
    _store(result, spec, results_dir, work_dir, force)
    health = result_health(results_dir, result)
    console.log(
        f"[green]done[/] {spec.run_id}: top-1 {outcome.metrics['top1']:.2f}%, "
        f"mean class acc {outcome.metrics['mean_class_acc']:.2f}%; "
        + ("healthy" if health.healthy else f"[red]{escape(health.line())}[/]")
    )
    return result


def _load_run_data(spec: RunSpec) -> _RunData:
    """Both splits decoded (or read from the cache), the labelled subset of ``spec``'s label
    setting and seed, and every training image as the unlabelled set (labels hidden)."""
    load_start = time.perf_counter()
    dataset = load_dataset(spec.config)
    train_images = split_images(dataset.train, "train", dataset, spec.config)
    test_images = split_images(dataset.test, "test", dataset, spec.config)
    seconds = time.perf_counter() - load_start
    protocol = parse_protocol(spec.labels)
    data = TrainData(
        train_images=train_images,
        train_targets=dataset.train.labels,
        labelled=labelled_split(
            dataset.train.labels, protocol, spec.seed, dataset.num_classes, dataset.classes
        ),
        unlabelled=np.arange(len(dataset.train)),
        test_images=test_images,
        test_targets=dataset.test.labels,
        class_names=dataset.classes,
    )
    return _RunData(dataset, data, protocol, seconds)


def _build_model(
    spec: RunSpec, run: _RunData, console: Console, show_progress: bool
) -> tuple[torch.nn.Module, Any, Any]:
    """The backbone with its head, from ``backbone.weights`` or the pretraining the config
    names (built once into the cache, reused after), under the run's seed. Returns the model,
    the weights report (or None) and the pretraining used (or None)."""
    cfg, backbone = spec.config, spec.config["backbone"]
    weights, pretrained = backbone.get("weights"), None
    if cfg.get("pretrain"):  # +pretrain=...: trained once into the cache, reused after
        from harness.pretrain import ensure_pretrained

        pretrained = ensure_pretrained(cfg, console, show_progress)
        weights = str(pretrained.path)
    if weights:
        console.log(f"loading backbone weights {_sized(Path(weights))} ...")
    seed_everything(spec.seed)
    model, weights_report = build_model(
        backbone["name"],
        run.dataset.num_classes,
        weights=weights,
        trust_weights=bool(backbone["trust_weights_file"]),
        pretrained=bool(backbone["pretrained"]),
        drop_rate=float(backbone["drop_rate"]),
    )
    if weights_report is not None:
        console.log(weights_report.summary())
    return model, weights_report, pretrained


def _result(spec: RunSpec, run: _RunData, outcome: FitResult, started: datetime) -> dict[str, Any]:
    """The result record of a finished run: what it is, its split, its metrics and history,
    and its timing (the caller adds weights, provenance and config)."""
    dataset = run.dataset
    return {
        "schema": 1,
        "run_id": spec.run_id,
        "config_hash": spec.config_hash,
        "dataset": spec.dataset,
        "method": spec.method,
        "method_label": spec.method_label,
        "sweep": list(spec.sweep),  # what this point of a sweep changes: names its row
        "labels": spec.labels,
        "seed": spec.seed,
        "tag": spec.config["tag"],
        "split": {
            "protocol": run.protocol.text,
            **split_summary(run.data.labelled, dataset.train.labels, dataset.classes),
            "num_unlabelled": len(run.data.unlabelled),
            "num_train": len(dataset.train),
            "num_test": len(dataset.test),
        },
        "metrics": outcome.metrics,
        "student_metrics": outcome.student_metrics,
        "best": _best(outcome.evaluations),
        "evaluations": outcome.evaluations,
        "method_summary": outcome.method_summary,
        "diagnostics": outcome.diagnostics,
        "timing": {
            "train_seconds": round(outcome.train_seconds, 2),
            "data_seconds": round(run.seconds, 2),
            "images_per_second": round(outcome.images_per_second, 1),
            "steps": outcome.steps,
            "resumed_from_step": outcome.resumed_from_step,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _store(
    result: dict[str, Any], spec: RunSpec, results_dir: Path, work_dir: Path, force: bool
) -> None:
    """Write the result (never over another unless ``force``, which archives it), its compact
    step log beside it (committed with it, for figures); only then delete the checkpoint."""
    write_result(result_path(results_dir, spec), result, force=force)
    keep_compact_copy(work_dir / LOG_NAME, result_path(results_dir, spec))
    (work_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    shutil.rmtree(work_dir / "tmp", ignore_errors=True)


def _sized(path: Path) -> str:
    """``path (123.4 MB)``: what a log line before a long load names."""
    try:
        return f"{path} ({path.stat().st_size / 1e6:.1f} MB)"
    except OSError:
        return str(path)


def _best(evaluations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Best top-1 over the periodic evaluations: shown beside the final figure, never instead
    (it selects on the test set)."""
    if not evaluations:
        return None
    best = max(evaluations, key=lambda e: e["top1"])
    return {"step": best["step"], "top1": best["top1"], "mean_class_acc": best["mean_class_acc"]}
