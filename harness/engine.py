"""The one training loop every method shares.

The engine owns loaders, the student and its EMA teacher, optimiser, schedule, precision,
checkpoints (exact resume), evaluation and logging; the method only turns batches into a loss
(see :mod:`harness.method`). A run resumed from a checkpoint ends with the same metrics as an
uninterrupted one: every source of randomness (model init, data order, augmentation, dropout)
is either a pure function of the seed and position or saved in the checkpoint.

:func:`fit` is assembled from parts that ``bench speed`` (:mod:`harness.throughput`) reuses:
:func:`build_training` (set-up), :func:`next_batches` (the data path), :func:`update_step` (the
method's loss and one optimiser update on given batches), :func:`training_step` (one step as
``fit`` runs it: the method's interval hook, the data path and the update), :func:`evaluate` and
:class:`_RunLog` (evaluation and logging), and :class:`TrainState` (the checkpoint; what a run
resumes from is listed once, in :func:`initial_state`). ``fit`` runs ``training_step`` inside
``_logged_step`` (timing, counters, log, due evaluation). The device, optimiser, RNG and
prediction helpers it uses live in :mod:`harness.device`, :mod:`harness.optim`,
:mod:`harness.rng` and :mod:`harness.predict`.
"""

from __future__ import annotations

import json
import math
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

from harness.checkpoint import StatefulGroup, TrainState, resume
from harness.data.randaugment import StrongPolicy
from harness.data.streams import BatchStream, StreamSpec, eval_batches
from harness.data.transforms import to_model_input
from harness.device import autocast, cuda_switch, place_model, select_device
from harness.ema import build_ema
from harness.method import (
    LabelledBatch,
    Method,
    MethodSetup,
    StepContext,
    StepOutput,
    UnlabelledBatch,
)
from harness.metrics import classification_metrics
from harness.optim import build_optimizer, build_schedule
from harness.predict import Rows, predict
from harness.progress import PeriodicLines, log_console
from harness.registry import get_method
from harness.rng import GlobalRng, forked_rng
from harness.steplog import open_step_log
from harness.store import CHECKPOINT_NAME, LOG_NAME


class NonFiniteLossError(FloatingPointError):
    """The loss of step ``step`` is not finite: the run stops before that step changes a
    parameter, so its last checkpoint stays good."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"loss is {loss} at step {step}")
        self.step = step


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


def build_method(name: str, cfg: dict[str, Any], data: TrainData) -> Method:
    """The method plugin ``name`` with its settings (``cfg["method"]``) and what it may know of
    ``data``: sizes and the labelled targets, never test data."""
    setup = MethodSetup(
        num_classes=len(data.class_names),
        num_unlabelled=len(data.unlabelled),
        labelled_targets=torch.as_tensor(data.train_targets[data.labelled], dtype=torch.int64),
        total_steps=int(cfg["train"]["steps"]),
    )
    return get_method(name).cls(dict(cfg["method"]), setup)


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
    # The final "ema" and "student" state dicts (tensors shared with the models, not copies),
    # for the worker to keep as the run's weights.
    final_states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


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


@dataclass(frozen=True)
class EngineSettings:
    """The engine's switches, read once from the config (``train``, ``data``)."""

    device: torch.device
    amp: bool  # bf16 autocast (CUDA only)
    channels_last: bool
    total_steps: int
    eval_every: int
    checkpoint_every: int
    log_every: int
    progress_every_s: float  # a plain progress line this often, off a terminal (logs)
    eval_batch_size: int
    tensorboard: bool  # also write the step log as TensorBoard scalars

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> EngineSettings:
        """Resolve ``auto`` switches against the device the run will train on."""
        train_cfg = cfg["train"]
        device = select_device(str(train_cfg["device"]))
        return cls(
            device=device,
            amp=cuda_switch(train_cfg["amp"], device),
            channels_last=cuda_switch(train_cfg["channels_last"], device),
            total_steps=int(train_cfg["steps"]),
            eval_every=int(train_cfg["eval_every"]),
            checkpoint_every=int(train_cfg["checkpoint_every"]),
            log_every=int(train_cfg["log_every"]),
            progress_every_s=float(train_cfg["progress_every_s"]),
            eval_batch_size=int(cfg["data"]["eval_batch_size"]),
            tensorboard=bool(train_cfg["tensorboard"]),
        )


@dataclass
class Training:
    """Everything one run trains with, built once by :func:`build_training`.

    ``model`` is the module whose parameters the optimiser updates and the checkpoint saves;
    ``student`` is what the method calls (``model`` itself, or its ``torch.compile`` wrapper).
    """

    settings: EngineSettings
    model: nn.Module
    student: nn.Module
    ema: ModelEmaV3
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    streams: dict[str, BatchStream]
    method: Method
    data: TrainData


def build_training(
    cfg: dict[str, Any], model: nn.Module, method: Method, data: TrainData
) -> Training:
    """Set-up: apply ``train.threads``, wrap and place the model, build its EMA, optimiser,
    LR schedule and the training streams. Only ``method.wrap_model`` may draw from the global
    RNGs (a new neck), the same draws on every start: a resume restores them afterwards."""
    if cfg["train"].get("threads"):
        torch.set_num_threads(int(cfg["train"]["threads"]))
    settings = EngineSettings.from_config(cfg)
    model = place_model(method.wrap_model(model), settings.device, settings.channels_last)
    ema = build_ema(model, cfg["ema"])
    optimizer = build_optimizer(model, cfg["optim"])
    return Training(
        settings=settings,
        model=model,
        student=torch.compile(model) if cfg["train"].get("compile") else model,
        ema=ema,
        optimizer=optimizer,
        scheduler=build_schedule(optimizer, cfg["sched"], settings.total_steps),
        streams=build_streams(
            cfg, data, with_unlabelled=method.uses_unlabelled, device=settings.device
        ),
        method=method,
        data=data,
    )


def build_streams(
    cfg: dict[str, Any], data: TrainData, with_unlabelled: bool, device: torch.device
) -> dict[str, BatchStream]:
    """The labelled stream (weak view) and, for SSL methods, the unlabelled one (weak and
    strong views, ``data.unlabelled_ratio`` times larger batches), both keyed by the run seed.
    On a CPU device the loader's workers compute the views (their cores augment); on a GPU the
    loaders only gather rows and parameters, and the views are computed batched on the device
    (:meth:`harness.data.streams.Batch.device_views`)."""
    data_cfg, seed = cfg["data"], int(cfg["seed"])
    in_loader = device.type == "cpu"
    size, workers, batch = (int(data_cfg[k]) for k in ("image_size", "num_workers", "batch_size"))
    labelled = StreamSpec(
        "labelled",
        data.labelled,
        batch,
        ("weak",),
        balanced=bool(data_cfg["balanced_sampling"]),
        seed=seed,
    )
    streams = {
        "labelled": BatchStream(
            data.train_images,
            data.train_targets,
            labelled,
            size,
            num_workers=workers,
            views_in_loader=in_loader,
        )
    }
    if with_unlabelled:
        unlabelled = StreamSpec(
            "unlabelled",
            data.unlabelled,
            batch * int(data_cfg["unlabelled_ratio"]),
            ("weak", "strong"),
            seed=seed,
        )
        streams["unlabelled"] = BatchStream(
            data.train_images,
            data.train_targets,
            unlabelled,
            size,
            strong=StrongPolicy.from_config(data_cfg["strong_augment"]),
            num_workers=workers,
            views_in_loader=in_loader,
        )
    return streams


@dataclass
class StepBatches:
    """One step's input, on the device: what the method sees, and how many images that is."""

    labelled: LabelledBatch
    unlabelled: UnlabelledBatch | None
    num_images: int  # labelled images + both views of every unlabelled image


def next_batches(training: Training) -> StepBatches:
    """The data path of one step: the next batch of every stream, as normalised model input
    on the training device. The benchmark (``benchmarks/throughput.py``) times exactly this."""
    device, channels_last = training.settings.device, training.settings.channels_last
    lb = next(training.streams["labelled"])
    labelled = LabelledBatch(
        to_model_input(lb.device_views(device)[0], device, channels_last), lb.targets.to(device)
    )
    if "unlabelled" not in training.streams:
        return StepBatches(labelled, None, len(lb.targets))
    ub = next(training.streams["unlabelled"])
    weak, strong = ub.device_views(device)
    unlabelled = UnlabelledBatch(
        weak=to_model_input(weak, device, channels_last),
        strong=to_model_input(strong, device, channels_last),
        indices=ub.indices.to(device),
        hidden_targets=ub.targets.to(device),
    )
    return StepBatches(labelled, unlabelled, len(lb.targets) + 2 * len(ub.targets))


def update_step(training: Training, batches: StepBatches, step: int) -> StepOutput:
    """One optimiser update on ``batches``: the method's loss (under bf16 autocast when
    ``amp``), backward, optimiser, LR schedule and EMA update. A non-finite loss raises
    :class:`NonFiniteLossError` (a ``FloatingPointError``) before any parameter changes."""
    settings = training.settings
    ctx = StepContext(
        student=training.student,
        teacher=training.ema.module,
        labelled=batches.labelled,
        unlabelled=batches.unlabelled,
        step=step,
        total_steps=settings.total_steps,
        num_classes=len(training.data.class_names),
    )
    with autocast(settings.device, settings.amp):
        out = training.method.training_loss(ctx)
    if not torch.isfinite(out.loss):
        raise NonFiniteLossError(out.loss.item(), step)
    training.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    training.optimizer.step()
    training.scheduler.step()
    training.ema.update(training.model, step=step)
    return out


def training_step(training: Training, step: int) -> tuple[int, dict[str, Any]]:
    """Step ``step`` exactly as :func:`fit` runs it, without logging or evaluation: the
    method's interval hook when due, the data path, the optimisation step, and the step's
    diagnostics as floats (reading them waits for the device). Returns the number of images
    the student saw and those diagnostics."""
    run_interval_hook(training, step)
    batches = next_batches(training)
    out = update_step(training, batches, step)
    return batches.num_images, {"loss": out.loss.item(), **_scalar_diagnostics(out.diagnostics)}


def run_interval_hook(training: Training, step: int) -> None:
    """The method's periodic hook (:meth:`Method.on_interval`) when ``step`` is due, with the
    teacher on the labelled set; it runs under forked RNGs, so it never moves training's."""
    interval = training.method.interval_steps
    if not interval or step % interval:
        return
    with forked_rng(training.settings.device):
        training.method.on_interval(
            training.ema.module, lambda: _labelled_eval_batches(training), step
        )


def _labelled_eval_batches(training: Training) -> Iterator[LabelledBatch]:
    """Every labelled image once, in order, unaugmented, as model input."""
    data, settings = training.data, training.settings
    images = Rows(data.train_images, data.labelled)
    targets = data.train_targets[data.labelled]
    for batch, batch_targets in eval_batches(images, targets, settings.eval_batch_size):
        yield LabelledBatch(
            to_model_input(batch, settings.device, settings.channels_last),
            batch_targets.to(settings.device),
        )


def evaluate(training: Training, step: int, model: nn.Module | None = None) -> dict[str, Any]:
    """Test-set metrics at ``step`` of the EMA model (or of ``model``)."""
    data, settings = training.data, training.settings
    # Evaluation must not move the training RNGs, or resumed runs would drift.
    with forked_rng(settings.device):
        preds = predict(
            training.ema.module if model is None else model,
            data.test_images,
            settings.eval_batch_size,
            settings.device,
            settings.channels_last,
            settings.amp,
        )
    return {"step": step, **classification_metrics(data.test_targets, preds, data.class_names)}


def initial_state(training: Training, diagnostics: _DiagnosticMeans, run_hash: str) -> TrainState:
    """The one list of what a checkpoint holds, at the start of a run (step 0); loading
    restores the keys in this order."""
    return TrainState(
        step=0,
        config_hash=run_hash,
        model=training.model,
        ema=training.ema,
        optimizer=training.optimizer,
        scheduler=training.scheduler,
        streams=StatefulGroup(training.streams),
        method=training.method,
        diagnostics=diagnostics,
        # Restored after every object above (keys load in this order), so nothing that loads
        # later can move the global RNGs it sets.
        rng=GlobalRng(),
        elapsed=0.0,  # training seconds so far (data + steps, not evaluation)
        images_seen=0,
        evaluations=[],  # test metrics of every periodic evaluation, in order
    )


class _RunLog:
    """``metrics.jsonl`` (one JSON record a line, appended) and the progress: a bar on a
    terminal, a plain line every ``train.progress_every_s`` seconds in a log."""

    def __init__(
        self,
        run_dir: Path,
        settings: EngineSettings,
        start_step: int,
        console: Console,
        show: bool,
    ) -> None:
        total_steps = settings.total_steps
        self.file = open_step_log(run_dir / LOG_NAME, tensorboard=settings.tensorboard)
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not show or not console.is_terminal,  # a log gets PeriodicLines
            transient=False,
        )
        self.task = self.progress.add_task(
            str(run_dir.name)[:40], total=total_steps, completed=start_step, info=""
        )
        self.lines = PeriodicLines(
            console, run_dir.name, total_steps, start_step, settings.progress_every_s
        )
        self.info = ""
        self.window_start, self.window_images = time.perf_counter(), 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (flushed with the checkpoint, and on close)."""
        self.file.write(json.dumps(record) + "\n")

    def train(self, step: int, lr: float, diagnostics: dict[str, Any], top1: float | None) -> None:
        """Log the training record of ``step`` with the images/s since the last one."""
        now = time.perf_counter()
        rate = self.window_images / max(now - self.window_start, 1e-9)
        self.window_start, self.window_images = now, 0
        self.write({"step": step, "lr": lr, "images_per_s": round(rate, 1), **diagnostics})
        info = f"loss {diagnostics['loss']:.3f} · {rate:.0f} img/s"
        if top1 is not None:
            info += f" · top1 {top1:.1f}%"
        self.progress.update(self.task, info=info)
        self.info = info

    def advance(self, done: int) -> None:
        """Step ``done`` has ended: move the bar, or print the periodic line when it is due."""
        self.progress.advance(self.task)
        self.lines.update(done, self.info)

    def evaluation(self, metrics: dict[str, Any], total_steps: int) -> None:
        """Log an evaluation of the EMA model."""
        self.write({"event": "eval", **metrics})
        self.console.log(
            f"step {metrics['step']}/{total_steps}: EMA top-1 {metrics['top1']:.2f}%, "
            f"mean class acc {metrics['mean_class_acc']:.2f}%"
        )

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


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
    console = console or log_console()
    run_dir.mkdir(parents=True, exist_ok=True)
    training = build_training(cfg, model, method, data)
    settings = training.settings
    diagnostics = _DiagnosticMeans()
    state = initial_state(training, diagnostics, run_hash)
    checkpoint = run_dir / CHECKPOINT_NAME
    warn = lambda message: console.log(f"[bold yellow]warning:[/] {message}")  # noqa: E731
    resumed = resume(state, checkpoint, settings.device, warn)
    resumed_from = state["step"] if resumed else None
    log = _RunLog(run_dir, settings, state["step"], console, show_progress)
    if resumed_from is not None:
        console.log(f"resumed from {checkpoint} at step {resumed_from}/{settings.total_steps}")
        log.write({"event": "resume", "step": resumed_from})
    training.model.train()
    try:
        with log.progress:
            for step in range(state["step"], settings.total_steps):
                _logged_step(training, state, diagnostics, log, step)
                _checkpoint_or_stop(state, checkpoint, log, step + 1, settings, stop_requested)
    finally:
        log.close()
    return _result(training, state, diagnostics, resumed_from)


def _logged_step(
    training: Training,
    state: TrainState,
    diagnostics: _DiagnosticMeans,
    log: _RunLog,
    step: int,
) -> None:
    """Step ``step`` with its bookkeeping: timing, counters, logging and due evaluation."""
    settings = training.settings
    tick = time.perf_counter()
    num_images, values = training_step(training, step)
    state["elapsed"] += time.perf_counter() - tick
    state["images_seen"] += num_images
    log.window_images += num_images
    diagnostics.add(values)
    done = state["step"] = step + 1
    evaluations = state["evaluations"]
    if done % settings.log_every == 0 or done == settings.total_steps:
        top1 = evaluations[-1]["top1"] if evaluations else None
        log.train(done, training.scheduler.get_last_lr()[0], values, top1)
    if done % settings.eval_every == 0 or done == settings.total_steps:
        evaluations.append(evaluate(training, done))
        log.evaluation(evaluations[-1], settings.total_steps)


def _checkpoint_or_stop(
    state: TrainState,
    path: Path,
    log: _RunLog,
    done: int,
    settings: EngineSettings,
    stop_requested: Callable[[], bool] | None,
) -> None:
    """After step ``done``: save the periodic checkpoint, or, when a stop is requested, save
    this step's and raise :class:`TrainingStopped`. The last step saves none (the result will)."""
    stopping = stop_requested is not None and done < settings.total_steps and stop_requested()
    if (done % settings.checkpoint_every == 0 and done < settings.total_steps) or stopping:
        state.save(path)
        log.flush()
    log.advance(done)
    if stopping:
        log.write({"event": "stop", "step": done})
        log.console.log(f"stop requested: checkpoint saved at step {done}/{settings.total_steps}")
        raise TrainingStopped(done)


def _result(
    training: Training, state: TrainState, diagnostics: _DiagnosticMeans, resumed_from: int | None
) -> FitResult:
    """Final metrics: the EMA model's (from the last evaluation when it was at the last step)
    and the student's, with the run's history and timing."""
    total, evaluations = training.settings.total_steps, state["evaluations"]
    final = (
        evaluations[-1]
        if evaluations and evaluations[-1]["step"] == total
        else evaluate(training, total)
    )
    student_metrics = evaluate(training, total, training.model)
    student_metrics.pop("step")
    device = training.settings.device
    return FitResult(
        metrics={k: v for k, v in final.items() if k != "step"},
        student_metrics=student_metrics,
        evaluations=evaluations,
        method_summary=training.method.summary(),
        diagnostics=diagnostics.means(),
        steps=total,
        train_seconds=state["elapsed"],
        images_per_second=state["images_seen"] / max(state["elapsed"], 1e-9),
        resumed_from_step=resumed_from,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        threads=torch.get_num_threads(),
        final_states={
            "ema": training.ema.module.state_dict(),
            "student": training.model.state_dict(),
        },
    )
