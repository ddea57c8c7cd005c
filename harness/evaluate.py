"""``bench eval``: finished runs' kept weights on another dataset's test split.

For each selected run: read its weights file (``harness.saved_model``), match its classes to
the test set's by expression name (``harness.classes``), decode the test split at the run's own
training resolution with the test dataset's loader and cache, and predict with the EMA model
(and the student) exactly as the training evaluation does (eval mode, the run's precision
settings, argmax of the logits).

Classes with no counterpart are reported, never guessed:

* a test class the model never learnt (AffectNet-8's Contempt for a RAF-DB model): its images
  are excluded and counted in the result (``num_excluded``, ``excluded_per_class``);
* a model class the test set lacks (Contempt for an AffectNet-8 model tested on RAF-DB): its
  logit is masked out (set to −inf before the argmax). Counting such a prediction wrong would
  charge the model for a class the test set cannot contain; the masked figure is the accuracy
  over the shared label space, which is what cross-dataset FER tables report.

The metrics are over the shared classes, in the test set's class order and with its names.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from harness.classes import ClassMapping, map_classes
from harness.config import compose_config, group_options
from harness.cross import cross_archive_path, cross_result_path, select_runs
from harness.data.datasets import load_dataset, split_images
from harness.data.synthfer import pin_generator
from harness.data.table import FERDataset
from harness.device import cuda_switch, place_model, select_device
from harness.errors import ConfigError, DatasetError
from harness.metrics import classification_metrics
from harness.predict import Rows, predict
from harness.provenance import collect_provenance
from harness.saved_model import (
    WeightsError,
    build_from_weights,
    file_sha256,
    read_weights,
    weights_path,
)
from harness.spec import config_hash
from harness.store import load_result, write_result


@dataclass(frozen=True)
class EvalRequest:
    """What ``bench eval`` was asked: which runs, on which dataset (and its overrides)."""

    results_dir: Path
    on: str
    overrides: tuple[str, ...] = ()
    run_ids: str | None = None
    methods: str | None = None
    labels: str = "10%"
    seeds: str = "0"
    dataset: str = "synthfer"
    tag: str | None = None  # only runs with this tag (comma list: any of them)
    force: bool = False


@dataclass(frozen=True)
class EvalSettings:
    """How a model is run for evaluation."""

    batch_size: int
    device: torch.device
    amp: bool  # bf16 autocast (CUDA only)
    channels_last: bool


@dataclass(frozen=True)
class EvalOutcome:
    """One run evaluated (``state`` done) or left as it was (``skipped``)."""

    run_id: str
    state: str
    path: Path
    result: dict[str, Any]


def eval_dataset_config(on: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The resolved config of the test dataset: ``configs/dataset/<on>.yaml`` + ``overrides``
    (e.g. ``dataset.root=...``, ``train.device=cpu``, ``data.cache_dir=...``)."""
    if on not in group_options("dataset"):
        raise ConfigError(
            f"--on {on}: unknown dataset; available: {', '.join(group_options('dataset'))}"
        )
    return pin_generator(compose_config([f"dataset={on}", *overrides]))


def score(
    mapping: ClassMapping,
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    targets: np.ndarray,
    settings: EvalSettings,
) -> dict[str, Any]:
    """Metrics of ``model`` on the test images whose class it knows, over the shared classes
    (test order and names)."""
    test_to_shared = np.full(len(mapping.test_classes), -1)
    model_to_shared = np.full(len(mapping.model_classes), -1)
    for shared, (t, m) in enumerate(mapping.pairs):
        test_to_shared[t], model_to_shared[m] = shared, shared
    rows = np.flatnonzero(test_to_shared[targets] >= 0)
    allowed = torch.as_tensor([m for _, m in mapping.pairs])
    device, channels_last = settings.device, settings.channels_last
    model = place_model(model, device, channels_last)
    preds = predict(
        model, Rows(images, rows), settings.batch_size, device, channels_last, settings.amp, allowed
    )
    return classification_metrics(
        test_to_shared[targets[rows]], model_to_shared[preds], mapping.evaluated_classes
    )


def _excluded(mapping: ClassMapping, targets: np.ndarray) -> dict[str, int]:
    """Test images left out, per test class the model has no counterpart for."""
    counts = np.bincount(targets, minlength=len(mapping.test_classes))
    return {c: int(counts[mapping.test_classes.index(c)]) for c in mapping.test_only}


def _eval_settings(run_cfg: dict[str, Any], test_cfg: dict[str, Any]) -> EvalSettings:
    """Device and batch size from the eval command's config; precision and memory layout from
    the run's (so that a run evaluated on its own test set gives its own figures)."""
    device = select_device(str(test_cfg["train"]["device"]))
    return EvalSettings(
        batch_size=int(test_cfg["data"]["eval_batch_size"]),
        device=device,
        amp=cuda_switch(run_cfg["train"]["amp"], device),
        channels_last=cuda_switch(run_cfg["train"]["channels_last"], device),
    )


def _test_images(
    dataset: FERDataset, test_cfg: dict[str, Any], size: int, cache: dict[int, Sequence[np.ndarray]]
) -> Sequence[np.ndarray]:
    """The test split decoded at ``size`` (once per size for all runs)."""
    if size not in cache:
        cfg = {**test_cfg, "data": {**test_cfg["data"], "image_size": size}}
        cache[size] = split_images(dataset.test, "test", dataset, cfg)
    return cache[size]


def _select(request: EvalRequest, console: Console) -> list[tuple[dict[str, Any], Path]]:
    """The runs to evaluate with their weights files: for each grid cell, the one finished run
    that matches it and has kept weights (said as chosen); a cell whose matching runs have no
    kept weights, or several have, is refused, naming them."""
    cells = select_runs(
        request.results_dir,
        run_ids=request.run_ids,
        methods=request.methods,
        labels=request.labels,
        seeds=request.seeds,
        dataset=request.dataset,
        tag=request.tag,
    )
    runs = []
    for cell, matching in cells:
        if not matching:
            console.print(
                f"[yellow]not finished[/] {escape(cell)}: nothing to evaluate", soft_wrap=True
            )
            continue
        kept = [(r, weights_path(request.results_dir, r["run_id"])) for r in matching]
        kept = [(r, path) for r, path in kept if path.is_file()]
        if not kept:
            raise WeightsError(_no_weights(request.results_dir, cell, matching))
        if len(kept) > 1:
            # --tag helps only where their tags differ; --runs always does.
            tags = len({r.get("tag") for r, _ in kept}) > 1
            raise ConfigError(
                f"{cell}: {len(kept)} finished runs with kept weights match "
                f"({'; '.join(_describe(r) for r, _ in kept)}); "
                f"{'choose with --tag, or ' if tags else ''}name runs with --runs ID,..."
            )
        (result, path), others = kept[0], len(matching) - 1
        if request.run_ids is None:
            unkept = f" ({others} other matching runs without kept weights)" if others else ""
            console.print(
                f"chose {result['run_id']} for {escape(cell)}{unkept}",
                soft_wrap=True,
                highlight=False,
            )
        runs.append((result, path))
    if not runs:
        raise ConfigError(
            f"no finished run on {request.dataset} matches the grid (bench status shows them)"
        )
    return runs


def _no_weights(results_dir: Path, cell: str, matching: list[dict[str, Any]]) -> str:
    """Why a cell cannot be evaluated: none of its finished runs kept weights."""
    if len(matching) == 1:
        run_id = matching[0]["run_id"]
        where = f"{weights_path(results_dir, run_id)}: no kept weights for run {run_id}"
    else:
        where = (
            f"{cell}: no kept weights for any of its {len(matching)} finished runs "
            f"({'; '.join(_describe(r) for r in matching)})"
        )
    return (
        f"{where} (it finished before weights were kept, or with train.save_weights=false); "
        "`bench run ... --force` retrains it and keeps them"
    )


def _describe(result: dict[str, Any]) -> str:
    """A run as a choice among several: its id, tag, sweep point and length."""
    extra = [f"tag {result['tag']}"] if result.get("tag") else []
    extra += list(result.get("sweep") or [])
    steps = (result.get("timing") or {}).get("steps")
    extra += [f"{steps} steps"] if steps else []
    return f"{result['run_id']} ({', '.join(extra)})" if extra else result["run_id"]


@dataclass(frozen=True)
class _Job:
    """One run to evaluate, checked: its weights, class mapping and where its result goes."""

    result: dict[str, Any]
    weights: Path
    sha256: str
    mapping: ClassMapping
    out: Path
    test_hash: str
    existing: dict[str, Any] | None  # the same evaluation, already stored


def _job(
    request: EvalRequest,
    result: dict[str, Any],
    weights: Path,
    dataset: FERDataset,
    test_cfg: dict[str, Any],
) -> _Job:
    """Check one run before anything is evaluated: its classes map onto the test set's, and a
    stored result for it is either the same evaluation (kept) or replaced only with force."""
    meta = read_weights(weights)["meta"]
    sha = file_sha256(weights)
    if sha != (result.get("saved_weights") or {}).get("sha256"):
        raise WeightsError(
            f"{weights}: not the weights the result of run {result['run_id']} recorded "
            "(SHA-256 differs, or the result records none); `bench run ... --force` retrains it"
        )
    mapping = map_classes(tuple(meta["classes"]), dataset.classes)
    size = int(result["config"]["data"]["image_size"])
    test_hash = config_hash({"dataset": test_cfg["dataset"], "image_size": size})
    out = cross_result_path(request.results_dir, result["dataset"], result["run_id"], dataset.name)
    existing = None
    if out.is_file() and not request.force:
        existing = load_result(out)
        if existing.get("weights_sha256") != sha or existing.get("test_config_hash") != test_hash:
            raise ConfigError(
                f"{out} exists from other weights or another {dataset.name} config; pass "
                "--force to evaluate again (the old one is kept), or name this test set apart "
                "with dataset.name=..."
            )
    return _Job(result, weights, sha, mapping, out, test_hash, existing)


def evaluate_runs(request: EvalRequest, console: Console) -> list[EvalOutcome]:
    """Evaluate every selected run on ``request.on`` and store one cross-dataset result each.

    A cross-dataset result that exists for the same weights and test config is kept and
    returned as it is; one made from other weights or another test config is refused unless
    ``force`` (then archived and replaced). Every check (weights files, class mappings,
    existing results) runs before anything is evaluated: ``WeightsError`` /
    ``ClassMappingError`` (exit 1), ``ConfigError`` (exit 2).
    """
    runs = _select(request, console)
    test_cfg = eval_dataset_config(request.on, request.overrides)
    dataset = load_dataset(test_cfg)
    jobs = [_job(request, result, path, dataset, test_cfg) for result, path in runs]
    if threads := test_cfg["train"].get("threads"):
        torch.set_num_threads(int(threads))
    decoded: dict[int, Sequence[np.ndarray]] = {}
    outcomes = []
    for job in jobs:
        if job.existing is not None:
            outcomes.append(EvalOutcome(job.result["run_id"], "skipped", job.out, job.existing))
            continue
        console.log(
            f"evaluating {job.result['run_id']} on {dataset.name} ({len(dataset.test)} images)"
        )
        cross = _evaluate(job, dataset, test_cfg, decoded)
        write_result(
            job.out,
            cross,
            force=request.force,
            archive=cross_archive_path(request.results_dir, cross["run_id"], dataset.name),
        )
        outcomes.append(EvalOutcome(cross["run_id"], "done", job.out, cross))
    return outcomes


def _evaluate(
    job: _Job,
    dataset: FERDataset,
    test_cfg: dict[str, Any],
    decoded: dict[int, Sequence[np.ndarray]],
) -> dict[str, Any]:
    """The cross-dataset result of one run: its EMA model (and student) on the test split."""
    started = time.perf_counter()
    run_cfg = job.result["config"]
    size = int(run_cfg["data"]["image_size"])
    payload = read_weights(job.weights)
    images = _test_images(dataset, test_cfg, size, decoded)
    targets = dataset.test.labels
    settings = _eval_settings(run_cfg, test_cfg)
    metrics = {
        which: score(job.mapping, build_from_weights(payload, which), images, targets, settings)
        for which in ("ema", "student")
        if which in payload
    }
    excluded = _excluded(job.mapping, targets)
    return {
        "schema": 1,
        "kind": "cross_dataset",
        **_run_fields(job.result),
        "test_dataset": dataset.name,
        "test_config": test_cfg["dataset"],
        "test_config_hash": job.test_hash,
        "image_size": size,
        "weights": str(job.weights),
        "weights_sha256": job.sha256,
        "classes": job.mapping.summary(),
        "num_test_images": len(targets),
        "num_evaluated": len(targets) - sum(excluded.values()),
        "num_excluded": sum(excluded.values()),
        "excluded_per_class": excluded,
        "metrics": metrics["ema"],
        "student_metrics": metrics.get("student"),
        "timing": {
            "eval_seconds": round(time.perf_counter() - started, 2),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "provenance": {**collect_provenance(sys.argv), "device": str(settings.device)},
    }


def _run_fields(result: dict[str, Any]) -> dict[str, Any]:
    """What a cross-dataset result repeats from the run's own result: its identity and its
    figures on its own test set (``in_domain``)."""
    return {
        "run_id": result["run_id"],
        "config_hash": result["config_hash"],
        "train_dataset": result["dataset"],
        "method": result["method"],
        "method_label": result["method_label"],
        "labels": result["labels"],
        "seed": result["seed"],
        "tag": result.get("tag", ""),
        "in_domain": {k: result["metrics"].get(k) for k in ("top1", "mean_class_acc", "macro_f1")},
    }


def print_outcomes(outcomes: list[EvalOutcome], console: Console) -> None:
    """One line per run: the cross-dataset figure beside the in-domain one, and what was
    left out or masked."""
    for outcome in outcomes:
        r = outcome.result
        notes = []
        if r["num_excluded"]:
            parts = ", ".join(f"{c} {n}" for c, n in r["excluded_per_class"].items())
            notes.append(
                f"{r['num_excluded']} test images of classes the model lacks excluded ({parts})"
            )
        if r["classes"]["model_only"]:
            notes.append(f"model classes masked: {', '.join(r['classes']['model_only'])}")
        colour = "green" if outcome.state == "done" else "yellow"
        console.print(
            f"[{colour}]{outcome.state:>7}[/] {escape(r['run_id'])} "
            f"on {escape(r['test_dataset'])}: "
            f"top-1 {r['metrics']['top1']:.2f}%, mean class acc "
            f"{r['metrics']['mean_class_acc']:.2f}% over {r['num_evaluated']} images "
            f"(on {escape(r['train_dataset'])}: top-1 {r['in_domain']['top1']:.2f}%)"
            + ("; " + escape("; ".join(notes)) if notes else ""),
            soft_wrap=True,
            highlight=False,
        )


def run_eval_command(args: argparse.Namespace, console: Console) -> int:
    """``bench eval``: evaluate, print one line per run; exit 1 for a missing weights file or
    an unusable test set (as a failed run exits), 2 for a bad request (as the CLI does)."""
    request = EvalRequest(
        results_dir=args.results_dir,
        on=args.on,
        overrides=tuple(args.overrides),
        run_ids=args.runs,
        methods=args.methods,
        labels=args.labels,
        seeds=args.seeds,
        dataset=args.dataset,
        tag=args.tag,
        force=args.force,
    )
    try:
        outcomes = evaluate_runs(request, console)
    except (WeightsError, DatasetError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 1
    print_outcomes(outcomes, console)
    console.print(
        "cross-dataset results in", str(args.results_dir), "— `bench leaderboard` tabulates them"
    )
    return 0
