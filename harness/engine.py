"""The one training loop every method shares.

The engine owns loaders, the student and its EMA teacher, optimiser, schedule, precision,
checkpoints (exact resume), evaluation and logging; the method only turns batches into a loss
(see :mod:`harness.method`). A run resumed from a checkpoint ends with the same metrics as an
uninterrupted one: every source of randomness (model init, data order, augmentation, dropout)
is either a pure function of the seed and position or saved in the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from timm.utils import ModelEmaV3
from torch import nn

from harness.data.streams import BatchStream, StreamSpec, eval_batches
from harness.data.transforms import to_model_input
from harness.errors import ConfigError
from harness.method import LabelledBatch, Method, StepContext, UnlabelledBatch
from harness.metrics import classification_metrics
from harness.store import CHECKPOINT_NAME, LOG_NAME


class TrainingStopped(Exception):
    """Training stopped early on request, after saving a checkpoint of step ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped at step {step}; its checkpoint resumes it")
        self.step = step


@dataclass(frozen=True)
class TrainData:
    """What the engine trains and evaluates on: uint8 images (N, H, W, 3) and labels."""

    train_images: Sequence[np.ndarray]
    train_targets: np.ndarray
    labelled: np.ndarray  # indices into the training set
    unlabelled: np.ndarray  # indices into the training set (labels hidden from the method)
    test_images: Sequence[np.ndarray]
    test_targets: np.ndarray
    class_names: tuple[str, ...]


@dataclass
class FitResult:
    """The outcome of :func:`fit`: final EMA-model metrics and the history around them."""

    metrics: dict[str, Any]
    student_metrics: dict[str, Any]
    evaluations: list[dict[str, Any]]
    method_summary: dict[str, Any]
    diagnostics: dict[str, float]
    steps: int
    train_seconds: float
    images_per_second: float
    resumed_from_step: int | None
    device: str
    threads: int  # torch's CPU threads during training (after ``train.threads``)
    weights_report: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def select_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is visible on this machine")
    return device


def _flag(value: Any, device: torch.device) -> bool:
    """Resolve an ``auto | true | false`` switch that defaults to on for CUDA only."""
    return device.type == "cuda" if value in ("auto", None) else bool(value)


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW; no weight decay on biases and norm parameters (as in FixMatch)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    name = cfg["name"].lower()
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"]
        )
    if name in ("adam", "adamw"):
        opt = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return opt(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]))
    raise ConfigError(f"optim.name={cfg['name']!r}: choose sgd, adam or adamw")


def cosine_with_warmup(warmup_steps: int, total_steps: int, num_cycles: float):
    """LR multiplier: linear warm-up, then ``cos(pi * num_cycles * progress)``.

    ``num_cycles=7/16`` is FixMatch's ``cos(7πk/16K)``; ``0.5`` decays to zero.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, math.cos(math.pi * num_cycles * progress))

    return factor


def rng_state() -> dict[str, Any]:
    """Every global RNG the training step may draw from (dropout, feature-map dropout, ...)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python RNGs (model initialisation draws from them)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Sequence[np.ndarray],
    targets: np.ndarray,
    batch_size: int,
    device: torch.device,
    channels_last: bool,
    amp: bool,
) -> np.ndarray:
    """Predicted class of every image, in order (model in eval mode)."""
    was_training = model.training
    model.eval()
    preds = []
    for batch, _ in eval_batches(images, targets, batch_size):
        with _autocast(device, amp):
            logits = model(to_model_input(batch, device, channels_last))
        preds.append(logits.argmax(1).cpu())
    model.train(was_training)
    return torch.cat(preds).numpy()


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _scalar_diagnostics(diagnostics: dict[str, Any]) -> dict[str, Any]:
    """Tensors → floats or lists, for the JSONL log."""
    out: dict[str, Any] = {}
    for key, value in diagnostics.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().float().cpu()
            out[key] = value.item() if value.numel() == 1 else [round(v, 6) for v in value.tolist()]
        else:
            out[key] = float(value)
    return out


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class _DiagnosticMeans:
    """Running means of scalar diagnostics over the whole run (NaNs skipped)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, float) and not math.isnan(value):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])


def fit(
    cfg: dict[str, Any],
    model: nn.Module,
    method: Method,
    data: TrainData,
    run_dir: Path,
    *,
    run_hash: str,
    console: Console | None = None,
    show_progress: bool = True,
    stop_requested: Callable[[], bool] | None = None,
) -> FitResult:
    """Train ``model`` with ``method`` for ``train.steps`` steps; resume from ``run_dir`` if a
    checkpoint of the same run (``run_hash``) is there. Returns the final EMA-model metrics.

    ``stop_requested`` is asked after every step; once it says yes, a checkpoint of that step is
    saved and :class:`TrainingStopped` raised (a scheduler is about to end the job).
    """
    console = console or Console(stderr=True)
    train_cfg, data_cfg = cfg["train"], cfg["data"]
    device = select_device(str(train_cfg["device"]))
    if train_cfg.get("threads"):
        torch.set_num_threads(int(train_cfg["threads"]))
    amp = _flag(train_cfg["amp"], device)
    channels_last = _flag(train_cfg["channels_last"], device)
    total_steps = int(train_cfg["steps"])
    run_dir.mkdir(parents=True, exist_ok=True)

    model = method.wrap_model(model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=float(cfg["ema"]["decay"]))
    student = torch.compile(model) if train_cfg.get("compile") else model
    optimizer = build_optimizer(model, cfg["optim"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        cosine_with_warmup(
            int(cfg["sched"]["warmup_steps"]), total_steps, float(cfg["sched"]["num_cycles"])
        ),
    )
    image_size = int(data_cfg["image_size"])
    workers = int(data_cfg["num_workers"])
    batch_size = int(data_cfg["batch_size"])
    seed = int(cfg["seed"])
    streams: dict[str, BatchStream] = {
        "labelled": BatchStream(
            data.train_images,
            data.train_targets,
            StreamSpec(
                "labelled",
                data.labelled,
                batch_size,
                ("weak",),
                balanced=bool(data_cfg["balanced_sampling"]),
                seed=seed,
            ),
            image_size,
            num_workers=workers,
        )
    }
    if method.uses_unlabelled:
        streams["unlabelled"] = BatchStream(
            data.train_images,
            data.train_targets,
            StreamSpec(
                "unlabelled",
                data.unlabelled,
                batch_size * int(data_cfg["unlabelled_ratio"]),
                ("weak", "strong"),
                seed=seed,
            ),
            image_size,
            strong=dict(
                ops=int(data_cfg["strong_augment"]["randaugment_ops"]),
                magnitude=int(data_cfg["strong_augment"]["randaugment_magnitude"]),
                cutout=float(data_cfg["strong_augment"]["cutout"]),
            ),
            num_workers=workers,
        )

    evaluations: list[dict[str, Any]] = []
    diag_means = _DiagnosticMeans()
    start_step, elapsed, images_seen = 0, 0.0, 0
    resumed_from: int | None = None
    checkpoint_path = run_dir / CHECKPOINT_NAME
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if state["config_hash"] != run_hash:
            raise ConfigError(
                f"{checkpoint_path} belongs to a different config; delete it to start over"
            )
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for name, stream in streams.items():
            stream.load_state_dict(state["streams"][name])
        method.load_state_dict(state["method"])
        diag_means.load_state_dict(state["diagnostics"])
        set_rng_state(state["rng"])
        start_step, elapsed = state["step"], state["elapsed"]
        images_seen, evaluations = state["images_seen"], state["evaluations"]
        resumed_from = start_step
        console.log(f"resumed from {checkpoint_path} at step {start_step}/{total_steps}")

    def save_checkpoint(next_step: int) -> None:
        _atomic_torch_save(
            {
                "step": next_step,
                "config_hash": run_hash,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "streams": {n: s.state_dict() for n, s in streams.items()},
                "method": method.state_dict(),
                "diagnostics": diag_means.state_dict(),
                "rng": rng_state(),
                "elapsed": elapsed,
                "images_seen": images_seen,
                "evaluations": evaluations,
            },
            checkpoint_path,
        )

    def evaluate(step: int, evaluated: nn.Module | None = None) -> dict[str, Any]:
        """Test-set metrics of the EMA model (or of ``evaluated``)."""
        # Evaluation must not move the training RNGs, or resumed runs would drift.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            preds = predict(
                ema.module if evaluated is None else evaluated,
                data.test_images,
                data.test_targets,
                int(data_cfg["eval_batch_size"]),
                device,
                channels_last,
                amp,
            )
        metrics = classification_metrics(data.test_targets, preds, data.class_names)
        return {"step": step, **metrics}

    def labelled_eval_batches() -> Iterator[LabelledBatch]:
        subset_images = _Subset(data.train_images, data.labelled)
        subset_targets = data.train_targets[data.labelled]
        for images, targets in eval_batches(
            subset_images, subset_targets, int(data_cfg["eval_batch_size"])
        ):
            yield LabelledBatch(to_model_input(images, device, channels_last), targets.to(device))

    log_file = (run_dir / LOG_NAME).open("a")
    if resumed_from is not None:
        log_file.write(json.dumps({"event": "resume", "step": resumed_from}) + "\n")
    eval_every = int(train_cfg["eval_every"])
    ckpt_every = int(train_cfg["checkpoint_every"])
    log_every = int(train_cfg["log_every"])
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    task = progress.add_task(
        str(run_dir.name)[:40], total=total_steps, completed=start_step, info=""
    )
    model.train()
    window_start, window_images = time.perf_counter(), 0
    try:
        with progress:
            for step in range(start_step, total_steps):
                tick = time.perf_counter()
                if method.interval_steps and step % method.interval_steps == 0:
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        method.on_interval(ema.module, labelled_eval_batches, step)
                lb = next(streams["labelled"])
                labelled = LabelledBatch(
                    to_model_input(lb.views[0], device, channels_last), lb.targets.to(device)
                )
                unlabelled = None
                step_images = len(lb.targets)
                if "unlabelled" in streams:
                    ub = next(streams["unlabelled"])
                    unlabelled = UnlabelledBatch(
                        weak=to_model_input(ub.views[0], device, channels_last),
                        strong=to_model_input(ub.views[1], device, channels_last),
                        indices=ub.indices.to(device),
                        hidden_targets=ub.targets.to(device),
                    )
                    step_images += 2 * len(ub.targets)
                ctx = StepContext(
                    student=student,
                    teacher=ema.module,
                    labelled=labelled,
                    unlabelled=unlabelled,
                    step=step,
                    total_steps=total_steps,
                    num_classes=len(data.class_names),
                )
                with _autocast(device, amp):
                    out = method.training_loss(ctx)
                if not torch.isfinite(out.loss):
                    raise FloatingPointError(f"loss is {out.loss.item()} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                scheduler.step()
                ema.update(model, step=step)
                elapsed += time.perf_counter() - tick
                images_seen += step_images
                window_images += step_images
                diagnostics = {"loss": out.loss.item(), **_scalar_diagnostics(out.diagnostics)}
                diag_means.add(diagnostics)
                done = step + 1
                if done % log_every == 0 or done == total_steps:
                    now = time.perf_counter()
                    rate = window_images / max(now - window_start, 1e-9)
                    window_start, window_images = now, 0
                    record = {
                        "step": done,
                        "lr": scheduler.get_last_lr()[0],
                        "images_per_s": round(rate, 1),
                        **diagnostics,
                    }
                    log_file.write(json.dumps(record) + "\n")
                    info = f"loss {diagnostics['loss']:.3f} · {rate:.0f} img/s"
                    if evaluations:
                        info += f" · top1 {evaluations[-1]['top1']:.1f}%"
                    progress.update(task, info=info)
                if done % eval_every == 0 or done == total_steps:
                    evaluations.append(evaluate(done))
                    log_file.write(json.dumps({"event": "eval", **evaluations[-1]}) + "\n")
                    console.log(
                        f"step {done}/{total_steps}: EMA top-1 {evaluations[-1]['top1']:.2f}%, "
                        f"mean class acc {evaluations[-1]['mean_class_acc']:.2f}%"
                    )
                stopping = stop_requested is not None and done < total_steps and stop_requested()
                if (done % ckpt_every == 0 and done < total_steps) or stopping:
                    save_checkpoint(done)
                    log_file.flush()
                progress.advance(task)
                if stopping:
                    log_file.write(json.dumps({"event": "stop", "step": done}) + "\n")
                    console.log(f"stop requested: checkpoint saved at step {done}/{total_steps}")
                    raise TrainingStopped(done)
    finally:
        log_file.close()

    final = (
        evaluations[-1]
        if evaluations and evaluations[-1]["step"] == total_steps
        else evaluate(total_steps)
    )
    student_metrics = evaluate(total_steps, model)
    student_metrics.pop("step")
    return FitResult(
        metrics={k: v for k, v in final.items() if k != "step"},
        student_metrics=student_metrics,
        evaluations=evaluations,
        method_summary=method.summary(),
        diagnostics=diag_means.means(),
        steps=total_steps,
        train_seconds=elapsed,
        images_per_second=images_seen / max(elapsed, 1e-9),
        resumed_from_step=resumed_from,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        threads=torch.get_num_threads(),
    )


class _Subset:
    """A read-only view of some rows of an image sequence (no copy of the images)."""

    def __init__(self, images: Sequence[np.ndarray], indices: np.ndarray) -> None:
        self.images, self.indices = images, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[int(self.indices[i])]
