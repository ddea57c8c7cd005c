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
from collections.abc import Sequence
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
from harness.spec import RunSpec
from harness.store import RUNS_DIR

# The folder holding the harness package: a checkout, or site-packages for an installed wheel.
CODE_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FOLDER = "slurm"  # under <results_dir>/runs/

T = TypeVar("T")


@dataclass(frozen=True)
class SlurmSettings:
    """``configs/launcher/slurm.yaml``, checked (see that file for what each option means and
    its default: every key is read from there, none is restated here)."""

    partition: str | None
    account: str | None
    qos: str | None
    time_min: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: float | None
    array_parallelism: int
    max_array_size: int
    signal_delay_s: int
    max_num_timeout: int
    additional_parameters: dict[str, Any]
    setup: tuple[str, ...]
    python: str | None
    use_srun: bool
    folder: str | None
    job_name: str
    poll_s: float


_INTS = {
    "time_min": 1,
    "gpus_per_node": 0,
    "cpus_per_task": 1,
    "array_parallelism": 1,
    "max_array_size": 1,
    "signal_delay_s": 0,
    "max_num_timeout": 0,
}
_OPTIONAL_TEXTS = ("partition", "account", "qos", "python", "folder")


def _where(key: str) -> str:
    return f"launcher.{key} (configs/launcher/slurm.yaml or launcher.{key}=... on the command line)"


def settings_from_config(cfg: dict[str, Any]) -> SlurmSettings:
    """Check the ``launcher`` node of a run's config and turn it into :class:`SlurmSettings`.

    Every key must be there (configs/launcher/slurm.yaml sets each one) and no other; every
    problem is a :class:`ConfigError` naming the option and what it should be.
    """
    known = set(SlurmSettings.__dataclass_fields__)
    unknown = sorted(set(cfg) - known - {"name"})
    if unknown:
        raise ConfigError(
            f"unknown SLURM launcher option(s) {', '.join(unknown)} in configs/launcher/slurm.yaml;"
            f" known: {', '.join(sorted(known))} (extra sbatch options go in "
            "launcher.additional_parameters)"
        )
    missing = sorted(known - set(cfg))
    if missing:
        raise ConfigError(
            f"SLURM launcher option(s) {', '.join(missing)} missing from the launcher config: "
            "configs/launcher/slurm.yaml sets every one (a config of another launcher?)"
        )
    values: dict[str, Any] = {}
    for key, minimum in _INTS.items():
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{_where(key)} must be a whole number ≥ {minimum}, got {value!r}")
        values[key] = value
    for key in (*_OPTIONAL_TEXTS, "job_name"):
        value = cfg[key]
        optional = key in _OPTIONAL_TEXTS
        if (value is not None or not optional) and (
            not isinstance(value, str) or not value.strip()
        ):
            raise ConfigError(
                f"{_where(key)} must be text{' or null' if optional else ''}, got {value!r}"
            )
        values[key] = value
    mem = cfg["mem_gb"]
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int | float) or mem <= 0):
        raise ConfigError(f"{_where('mem_gb')} must be a number of GB > 0 or null, got {mem!r}")
    values["mem_gb"] = mem
    extra = cfg["additional_parameters"]
    if not isinstance(extra, dict):
        raise ConfigError(
            f"{_where('additional_parameters')} must be a mapping of sbatch options, e.g. "
            f"{{constraint: a100}}, got {extra!r}"
        )
    values["additional_parameters"] = {str(k): v for k, v in extra.items()}
    setup = cfg["setup"]
    if not isinstance(setup, list | tuple) or not all(isinstance(line, str) for line in setup):
        raise ConfigError(
            f"{_where('setup')} must be a list of shell lines, e.g. "
            f"['module load cuda/12.1'], got {setup!r}"
        )
    values["setup"] = tuple(setup)
    use_srun = cfg["use_srun"]
    if not isinstance(use_srun, bool):
        raise ConfigError(f"{_where('use_srun')} must be true or false, got {use_srun!r}")
    values["use_srun"] = use_srun
    poll = cfg["poll_s"]
    if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
        raise ConfigError(f"{_where('poll_s')} must be a number of seconds > 0, got {poll!r}")
    values["poll_s"] = float(poll)
    if values["signal_delay_s"] >= values["time_min"] * 60:
        raise ConfigError(
            f"{_where('signal_delay_s')} ({values['signal_delay_s']} s) must be shorter "
            f"than launcher.time_min ({values['time_min']} min): the requeue signal "
            "would come before the run starts"
        )
    return SlurmSettings(**values)


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
        parts = [f"SLURM: {len(specs)} runs in {len(chunks)} array(s), logs in {folder}"]
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
