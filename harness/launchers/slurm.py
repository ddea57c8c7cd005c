"""``--launcher slurm``: the grid as one SLURM job array, submitted through submitit.

Each array task runs :class:`SlurmRun`, which calls the same ``run_spec`` as a local run. Before
its time limit (``signal_delay_s``) or when preempted, a task gets USR2: the engine finishes the
step in progress and saves a checkpoint of it (:mod:`harness.launchers.preemption`), then
submitit calls ``SlurmRun.checkpoint``, which requeues the same call, and the requeued task
resumes from that checkpoint. ``scontrol requeue`` kills the task without that signal: it is
started again with ``SLURM_RESTART_COUNT`` raised by one and resumes from the run's last
periodic checkpoint (``train.checkpoint_every``).
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import submitit
from rich.console import Console
from submitit.core.utils import FailedJobError
from submitit.slurm.slurm import SlurmJobEnvironment, _make_sbatch_string

from harness.errors import ConfigError
from harness.launchers import RunOutcome
from harness.launchers.partition import (
    array_size,
    check_request,
    cluster_max_array_size,
    partition_limits,
)
from harness.launchers.preemption import DeferredRequeue
from harness.launchers.records import SlurmRecord, write_record
from harness.settings import read_settings, setting
from harness.spec import RunSpec
from harness.store import RUNS_DIR
from harness.tables import how_many

# The folder holding the harness package: a checkout, or site-packages for an installed wheel.
CODE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FOLDER = "slurm"  # under <results_dir>/runs/

T = TypeVar("T")


@dataclass(frozen=True)
class SlurmSettings:
    """``configs/launcher/slurm.yaml``, read strictly (:func:`harness.settings.read_settings`;
    see that file for what each option means and its default: every key is read from there,
    none is restated here)."""

    partition: str | None = setting()
    account: str | None = setting()
    qos: str | None = setting()
    time_min: int = setting(low=1)
    gpus_per_node: int = setting(low=0)
    cpus_per_task: int = setting(low=1)
    mem_gb: float | None = setting(low=0, low_open=True)
    array_parallelism: int = setting(low=1)
    max_array_size: int = setting(low=1)
    signal_delay_s: int = setting(low=0)
    max_num_timeout: int = setting(low=0)
    additional_parameters: Mapping[str, Any] = setting()
    setup: tuple[str, ...] = setting()
    python: str | None = setting()
    use_srun: bool = setting()
    folder: str | None = setting()
    job_name: str = setting()
    poll_s: float = setting(low=0, low_open=True)

    def __post_init__(self) -> None:
        if self.signal_delay_s >= self.time_min * 60:
            raise ConfigError(
                f"launcher.signal_delay_s ({self.signal_delay_s} s) must be shorter than "
                f"launcher.time_min ({self.time_min} min): the requeue signal would come "
                "before the run starts"
            )


def settings_from_config(cfg: dict[str, Any]) -> SlurmSettings:
    """The ``launcher`` node of a run's config as :class:`SlurmSettings`: every key must be
    there (configs/launcher/slurm.yaml sets each one) and no other; a problem is one
    :class:`ConfigError` naming the option and the bad value."""
    return read_settings(
        SlurmSettings,
        cfg,
        "launcher",
        missing_hint=": configs/launcher/slurm.yaml sets every one (a config of another launcher?)",
        unknown_hint=" (extra sbatch options go in launcher.additional_parameters)",
        ignore=("name",),
    )


def python_path_line() -> list[str]:
    """A setup line that lets the array tasks import this very checkout of the harness; none
    for an installed (non-editable) harness, which the same interpreter imports anyway."""
    if not (CODE_ROOT / "pyproject.toml").is_file():
        return []
    root = shlex.quote(str(CODE_ROOT))
    return [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}"]


def python_command(settings: SlurmSettings) -> str:
    """How the batch script starts Python.

    Without srun, Python is ``exec``-ed so that it *is* the batch shell: the time-limit signal
    (sent to the batch shell, ``B:``) reaches it, and when SLURM kills or requeues the job it
    kills Python itself. (A bash parent would die on SIGTERM while Python, which submitit
    tells to ignore SIGTERM, lived on outside the job and raced the requeued task.)
    """
    python = settings.python or shlex.quote(sys.executable)
    return python if settings.use_srun else f"exec {python}"


def _mem(gb: float) -> str:
    return f"{int(gb)}GB" if float(gb).is_integer() else f"{int(gb * 1024)}MB"


def sbatch_parameters(settings: SlurmSettings) -> dict[str, Any]:
    """The parameters of submitit's ``SlurmExecutor`` (its names for sbatch options)."""
    params: dict[str, Any] = {
        "job_name": settings.job_name,
        "time": settings.time_min,
        "cpus_per_task": settings.cpus_per_task,
        "array_parallelism": settings.array_parallelism,
        "signal_delay_s": settings.signal_delay_s,
        "use_srun": settings.use_srun,
        "setup": [*python_path_line(), *settings.setup],
    }
    for key in ("partition", "account", "qos"):
        if getattr(settings, key):
            params[key] = getattr(settings, key)
    if settings.gpus_per_node:
        params["gpus_per_node"] = settings.gpus_per_node  # a CPU-only node rejects even 0
    if settings.mem_gb is not None:
        params["mem"] = _mem(settings.mem_gb)
    extra = dict(settings.additional_parameters)
    if settings.use_srun:
        # Slurm ≥ 22.05: srun no longer inherits the job's --cpus-per-task.
        params["srun_args"] = [f"--cpus-per-task={settings.cpus_per_task}"]
    else:
        extra = {"signal": f"B:{SlurmJobEnvironment.USR_SIG}@{settings.signal_delay_s}", **extra}
    params["additional_parameters"] = extra
    return params


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in as few consecutive chunks of at most ``size`` as possible (one job array
    each), of nearly equal lengths: 1001 runs under a limit of 1000 make arrays of 501 and 500,
    never one of 1000 and a lone job."""
    if size < 1:
        raise ValueError(f"chunk size must be ≥ 1, got {size}")
    count = -(-len(items) // size)  # ceil
    bounds = [i * len(items) // count for i in range(count + 1)] if count else [0]
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds)]


def log_folder(settings: SlurmSettings, results_dir: Path) -> Path:
    """submitit's folder (job pickles and logs): ``launcher.folder`` or
    ``<results_dir>/runs/slurm``. It must be on a file system the nodes share."""
    if settings.folder:
        return Path(settings.folder).expanduser().resolve()
    return Path(results_dir).resolve() / RUNS_DIR / DEFAULT_FOLDER


def submit_command(settings: SlurmSettings, folder: Path) -> str:
    """The batch script's command line (what submitit runs on the node)."""
    return f"{python_command(settings)} -u -m submitit.core._submit {shlex.quote(str(folder))}"


def sbatch_script(settings: SlurmSettings, folder: Path, num_tasks: int) -> str:
    """The batch script submitit writes for an array of ``num_tasks`` tasks (or one job)."""
    return _make_sbatch_string(
        command=submit_command(settings, folder),
        folder=folder,
        map_count=num_tasks if num_tasks > 1 else None,
        **sbatch_parameters(settings),
    )


class SlurmRun(submitit.helpers.Checkpointable):
    """One array task: train and evaluate one run. Picklable; holds only plain settings.

    ``stop_grace_s``: how long after the requeue signal the engine may take to reach the end of
    a step and save, before submitit requeues the job regardless.
    """

    def __init__(self, force: bool = False, stop_grace_s: int = 45) -> None:
        self.force = force
        self.stop_grace_s = stop_grace_s

    def __call__(self, spec: RunSpec, results_dir: str) -> dict[str, Any]:
        # Here, not at the top: `bench run --dry-run` and `bench status` need no torch (~3 s).
        import torch

        from harness.engine import TrainingStopped
        from harness.worker import run_spec

        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if cpus.isdigit() and not spec.config["train"].get("threads"):
            # Without CPU binding on the node, torch would start a thread per core of the node
            # and fight the other tasks for them; use the cores this task was given.
            torch.set_num_threads(int(cpus))
        with DeferredRequeue(self.stop_grace_s) as requeue:
            try:
                result = run_spec(
                    spec,
                    results_dir,
                    force=self.force,
                    show_progress=False,
                    stop_requested=requeue.requested,
                )
            except TrainingStopped:
                requeue.hand_over()  # submitit: checkpoint(), requeue, exit
                raise  # reached only outside submitit
        return {"run_id": spec.run_id, "top1": result["metrics"]["top1"]}

    def checkpoint(self, spec: RunSpec, results_dir: str) -> submitit.helpers.DelayedSubmission:
        """Requeue the same call: ``run_spec`` resumes from the run's last periodic checkpoint.

        With ``force``, the requeued call must not start over: ``run_spec`` resumes a forced
        run too when its checkpoint exists.
        """
        return submitit.helpers.DelayedSubmission(self, spec, results_dir)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SlurmLauncher:
    """Submits the runs as one job array (per ``max_array_size`` runs) and returns at once;
    :func:`harness.launchers.follow.follow` waits for them."""

    def __init__(
        self,
        config: dict[str, Any],
        console: Console,
        show_progress: bool = True,
    ) -> None:
        self.settings = settings_from_config(config)
        self.poll_s = self.settings.poll_s
        self.console = console
        self.show_progress = show_progress

    def _array_size(self) -> int:
        """Runs per array: ``launcher.max_array_size`` within the cluster's MaxArraySize."""
        return array_size(self.settings.max_array_size, cluster_max_array_size())

    def preview(self, specs: Sequence[RunSpec], results_dir: Path) -> str:
        """What ``launch`` would submit: one batch script per array (``--dry-run``)."""
        folder = log_folder(self.settings, results_dir)
        chunks = chunked(specs, self._array_size())
        runs = how_many(len(specs), "run")
        parts = [f"SLURM: {runs} in {len(chunks)} array(s), logs in {folder}"]
        for index, chunk in enumerate(chunks, 1):
            what = f"{len(chunk)} tasks" if len(chunk) > 1 else "1 task (a plain job)"
            parts.append(f"--- array {index}/{len(chunks)}: {what}")
            parts.append(sbatch_script(self.settings, folder, len(chunk)))
        return "\n".join(parts)

    def _executor(self, folder: Path) -> submitit.SlurmExecutor:
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise ConfigError(
                "--launcher slurm: sbatch/srun not found on this machine; run `bench` on a "
                "SLURM login node, or use --launcher local"
            )
        folder.mkdir(parents=True, exist_ok=True)
        executor = submitit.SlurmExecutor(
            folder,
            max_num_timeout=self.settings.max_num_timeout,
            python=python_command(self.settings),
        )
        executor.update_parameters(**sbatch_parameters(self.settings))
        return executor

    def launch(self, specs: Sequence[RunSpec], results_dir: Path, force: bool) -> list[RunOutcome]:
        """Submit ``specs``; record each task in ``runs/<run_id>/slurm.json``."""
        results_dir = Path(results_dir).resolve()
        folder = log_folder(self.settings, results_dir)
        executor = self._executor(folder)
        s = self.settings  # a request SLURM would leave pending for ever is refused here
        check_request(s.cpus_per_task, s.mem_gb, s.gpus_per_node, s.time_min,
                      partition_limits(s.partition))  # fmt: skip
        # Half the warning the signal gives, so the save and the requeue fit in the rest.
        job = SlurmRun(force=force, stop_grace_s=max(1, self.settings.signal_delay_s // 2))
        outcomes = []
        for chunk in chunked(specs, self._array_size()):
            try:
                jobs = executor.map_array(job, chunk, [str(results_dir)] * len(chunk))
            except FailedJobError as err:
                raise ConfigError(
                    f"sbatch refused the job array: {str(err).strip()} — check the launcher.* "
                    f"options (partition, account, qos, gpus_per_node, ...); the batch script "
                    f"is in {folder}"
                ) from None
            submitted = _now()
            for spec, task in zip(chunk, jobs, strict=True):
                array_id, _, index = task.job_id.partition("_")
                record = SlurmRecord(
                    run_id=spec.run_id,
                    dataset=spec.dataset,
                    method_label=spec.method_label,
                    labels=spec.labels,
                    seed=spec.seed,
                    job_id=task.job_id,
                    array_job_id=array_id if index else None,
                    task_index=int(index) if index else None,
                    stdout=str(task.paths.stdout),
                    stderr=str(task.paths.stderr),
                    submitted=submitted,
                    folder=str(folder),
                )
                write_record(results_dir, record)
                outcomes.append(
                    RunOutcome(spec.run_id, "submitted", f"job {task.job_id}, log {record.stderr}")
                )
            array = jobs[0].job_id.partition("_")[0]
            what = f"job array {array}: {len(chunk)} tasks" if len(chunk) > 1 else f"job {array}"
            self.console.print(f"submitted {what} (logs in {folder})", highlight=False)
        return outcomes
