"""What several test files share: the real ``bench`` in a subprocess, a stop request after N
steps, result dicts as ``bench run`` stores them (only the fields a test reads), and small
datasets written to disk in a real layout. Test files import from here, never from each
other."""

from __future__ import annotations

import ast
import copy
import os
import site
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from harness.spec import config_hash

ROOT = Path(__file__).resolve().parents[1]


def bench(
    *args: str, cwd: Path, columns: int | None = None, path: Sequence[Path] = ()
) -> subprocess.CompletedProcess:
    """The real ``bench`` in a subprocess (this checkout, then ``path``, on its path);
    ``columns``: the terminal width rich wraps its output to (tests that match whole lines set
    it)."""
    width = {"COLUMNS": str(columns)} if columns is not None else {}
    pythonpath = os.pathsep.join(map(str, [ROOT, *path]))
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath, **width},
        timeout=300,
    )


def start_in_own_group(*args: str, cwd: Path) -> subprocess.Popen:
    """``bench`` in a process group of its own, as a terminal's foreground job is: a Ctrl-C is
    then ``os.killpg(proc.pid, SIGINT)``, and reaches every process it started."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def spawned_grandchildren(pid: int) -> list[int]:
    """Spawned processes two generations below ``pid`` (for a parallel grid: what its runs
    start). Polled often, the first one found is still starting up."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    children = {p for p, parent in parents.items() if parent == pid}
    found = []
    for p in (p for p, parent in parents.items() if parent in children):
        try:
            if b"spawn_main" in (Path("/proc") / str(p) / "cmdline").read_bytes():
                found.append(p)
        except OSError:
            continue  # ended meanwhile
    return found


def wait_while_running(
    proc: subprocess.Popen,
    done: Callable[[], object],
    timeout_s: float = 240,
    poll_s: float = 0.02,
) -> None:
    """Return as soon as ``done()`` is true; fail with ``proc``'s output if ``proc`` ends or
    ``timeout_s`` passes first."""
    deadline = time.time() + timeout_s
    while not done():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(poll_s)


def wait_for_spawned_grandchildren(proc: subprocess.Popen, timeout_s: float = 240) -> None:
    """Return as soon as ``proc``'s runs start their first worker process (still starting up);
    fail with ``proc``'s output if it ends or ``timeout_s`` passes first."""
    wait_while_running(proc, lambda: spawned_grandchildren(proc.pid), timeout_s)


def stop_after(steps: int) -> Callable[[], bool]:
    """A ``stop_requested`` for ``run_spec`` that asks to stop at the ``steps``-th time it is
    polled (the engine polls once per step): the run stops after step ``steps``."""
    asked: list[bool] = []

    def stop_requested() -> bool:
        asked.append(True)
        return len(asked) >= steps

    return stop_requested


def result_dict(
    method_label: str = "fixmatch",
    labels: str = "10%",
    seed: int = 0,
    top1: float = 50.0,
    *,
    dataset: str = "synthfer",
    **fields: Any,
) -> dict[str, Any]:
    """The fields every stored result has, with top-1 as its only metric; ``fields`` add or
    replace others (``run_id``, ``tag``, ``diagnostics``, ...)."""
    return {
        "dataset": dataset,
        "method_label": method_label,
        "labels": labels,
        "seed": seed,
        "metrics": {"top1": top1},
        **fields,
    }


def scored_result(
    method_label: str,
    labels: str,
    seed: int,
    top1: float,
    *,
    dataset: str = "synthfer",
    tag: str = "",
    **config_extra: object,
) -> dict[str, Any]:
    """A result as the leaderboard reads it: config and its hash (``config_extra`` adds config
    keys), the three table metrics (mean class accuracy and macro-F1 10 and 20 below top-1),
    the split size, and a finishing date one day per seed."""
    method = method_label.split("[")[0]
    config = {
        "seed": seed,
        "labels": labels,
        "tag": tag,
        "method": {"name": method},
        "train": {"steps": 10},
        **config_extra,
    }
    return {
        "dataset": dataset,
        "method": method,
        "method_label": method_label,
        "labels": labels,
        "seed": seed,
        "tag": tag,
        "config_hash": config_hash(config),
        "config": config,
        "metrics": {"top1": top1, "mean_class_acc": top1 - 10, "macro_f1": top1 - 20},
        "split": {"num_labelled": 10},
        "provenance": {},
        "timing": {"finished": f"2026-01-{seed + 1:02d}T00:00:00+00:00"},
    }


# Results of one protocol (a full config) and of a second one that differs only in its schedule.

PROTOCOL_BASE = {
    "train": {"steps": 1200, "eval_every": 600, "log_every": 20, "threads": 1},
    "data": {"image_size": 48, "batch_size": 64, "balanced_sampling": False},
    "optim": {"name": "sgd", "lr": 0.03, "momentum": 0.9},
    "ema": {"decay": 0.99},
    "backbone": {"name": "fer_cnn"},
}


def protocol_result(
    method: str, labels: str, seed: int, top1: float, tag: str = "", **changes: object
) -> dict:
    """A result whose config is :data:`PROTOCOL_BASE` with dotted ``changes``
    (``train__steps=60``)."""
    config = copy.deepcopy(PROTOCOL_BASE)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = config
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    config.update(seed=seed, labels=labels, tag=tag, method={"name": method.split("[")[0]})
    return {
        "run_id": f"{method}__{labels}__seed{seed}__{config_hash(config)[:8]}",
        "dataset": "synthfer",
        "method": method.split("[")[0],
        "method_label": method,
        "labels": labels,
        "seed": seed,
        "tag": tag,
        "config_hash": config_hash(config),
        "config": config,
        "metrics": {"top1": top1, "mean_class_acc": top1 - 5, "macro_f1": top1 - 10},
        "evaluations": [{"step": 600, "top1": top1 - 3}, {"step": 1200, "top1": top1}],
        "split": {"num_labelled": 10, "hash": f"split{labels}{seed}"},
        "provenance": {},
        "timing": {"finished": f"2026-01-0{seed + 1}T00:00:00+00:00", "train_seconds": 60},
    }


# Two 60-step debug runs (DEBUG) beside a 1,200-step grid (GRID): two protocols on one dataset.
GRID = [
    protocol_result(m, labels, seed, 50.0 + 10 * (m == "fixmatch") + seed)
    for m in ("supervised", "fixmatch")
    for labels in ("5%", "25%")
    for seed in (0, 1)
]
DEBUG = [protocol_result(m, "10%", 0, 20.0, train__steps=60) for m in ("supervised", "fixmatch")]


# The import graph of the project's modules, read from their source.


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Module name → source file of every ``.py`` under ``packages`` (a package is its
    ``__init__``)."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` imports, relative imports made absolute; for ``from x
    import y`` both ``x`` and ``x.y`` (``y`` may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return names


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules importing it runs: the deepest module each imported name
    names, and the packages above that (whose ``__init__`` runs first), except the packages
    above the importer itself (already running when it does)."""
    graph: dict[str, set[str]] = {module: set() for module in files}
    for module, path in files.items():
        own = set(_ancestors(module))
        for name in imported_names(module, path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if not name:
                continue
            for target in [*_ancestors(name), name]:
                if target in files and target != module and target not in own:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


# Datasets on disk, written by the tests that read them.

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    "expression,valence,arousal\n"
)


def save_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> Path:
    """A flat-coloured image (JPEG or PNG by suffix) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def colour_of(index: int) -> tuple[int, int, int]:
    """Well-separated colours, so a decoded pixel tells which file it came from."""
    return (40 * (index % 6) + 20, 200 - 30 * (index % 7), 60)


TRAIN_CODES = [0, 1, 6, 7, 8, 10, 3, 9, 5]
TEST_CODES = [2, 7, 9, 4]


def make_affectnet(root: Path, mode: str = "photos", train_codes: list[int] = TRAIN_CODES) -> Path:
    """AffectNet's CSV layout. ``photos``: originals of varying size (48+i)×(40+i) with a face
    box (10+i)×(12+i) at (4+i, 3); ``cropped``: each image is its box's size; ``resized``:
    every image 16×16 while the boxes (in photo pixels) are larger than that."""
    for split, codes in (("training", train_codes), ("validation", TEST_CODES)):
        lines = []
        for i, code in enumerate(codes):
            rel = f"{i % 3 + 1}/{split}_{i}.jpg"
            x, y, w, h = 4 + i, 3, 10 + i, 12 + i
            if mode == "resized":
                x, y, w, h = 30, 20, 60 + 5 * i, 70 + 5 * i
            size = {"photos": (48 + i, 40 + i), "cropped": (w, h), "resized": (16, 16)}[mode]
            save_image(root / "Manually_Annotated_Images" / rel, colour_of(i), size)
            landmarks = ";".join(f"{v}.5" for v in range(10))
            lines.append(f'{rel},{x},{y},{w},{h},"{landmarks}",{code},0.25,-0.5\n')
        (root / f"{split}.csv").write_text(AFFECTNET_HEADER + "".join(lines))
    return root


def run_ok(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a command to completion; fail the test with its output unless it exits 0."""
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{args}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def install_wheel(src: Path, base: Path, wheel_glob: str, env: dict[str, str]) -> Path:
    """Build ``src``'s wheel without network and install it (not editable) into a fresh venv
    under ``base`` that reuses this interpreter's site-packages for torch & co., after its own
    (so the wheel's modules win over any editable install there); the venv's ``bin`` folder."""
    pip = [sys.executable, "-m", "pip"]
    run_ok(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", base / "dist", src,
           cwd=base, env=env)  # fmt: skip
    (wheel,) = (base / "dist").glob(wheel_glob)
    bin_dir = base / "venv" / "bin"
    venv.create(base / "venv", with_pip=False)
    purelib = run_ok(bin_dir / "python", "-c",
                     "import sysconfig; print(sysconfig.get_path('purelib'))",
                     cwd=base, env=env).stdout.strip()  # fmt: skip
    (Path(purelib) / "_reuse_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run_ok(*pip, "--python", bin_dir / "python", "install", "--no-deps", "--no-index", wheel,
           cwd=base, env=env)  # fmt: skip
    return bin_dir
