"""The expected device time `bench run` prints: runs × steps × the benchmark's seconds per step,
or the case no figure covers and the command that measures it."""

from __future__ import annotations

import json
from pathlib import Path

from harness.cost import cost_lines, device_kinds, load_step_figures
from harness.plan import build_plan


def _figures(folder: Path, kind: str, cases: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "kind": kind,
        "date": "2026-12-07T21:00:00+00:00",
        "machine": {"device": "NVIDIA H100 80GB HBM3" if kind == "cuda" else "cpu"},
        "threads": 1,
        "cases": cases,
    }
    (folder / f"throughput-{kind}.json").write_text(json.dumps(record))
    return folder


def _case(backbone: str, size: int, batch: int, mu: int, engine: float | None) -> dict:
    seconds = {"data": 0.01} if engine is None else {"data": 0.01, "engine": engine}
    return {"backbone": backbone, "image_size": size, "batch_size": batch, "mu": mu,
            "seconds": seconds}  # fmt: skip


def test_cost_is_runs_times_steps_times_the_measured_step(tmp_path: Path) -> None:
    figures = load_step_figures(
        [_figures(tmp_path / "f", "cuda", [_case("fer_cnn", 48, 64, 1, 0.05)])]
    )
    specs = build_plan("supervised,fixmatch", "10%", "0,1", "synthfer", ["train.device=cuda"])
    (line,) = cost_lines(specs, figures)
    # 4 runs x 1,200 steps x 0.05 s = 240 s.
    assert "4 runs × 1,200 steps × 0.05 s/step = 4.0 min on cuda (NVIDIA H100" in line
    assert "2026-12-07" in line


def test_an_unmeasured_case_says_so_and_how_to_measure_it(tmp_path: Path) -> None:
    # A case measured without model steps (ResNet-18 on a CPU) is no figure either.
    folder = _figures(tmp_path / "f", "cpu", [_case("fer_cnn", 48, 64, 1, None)])
    specs = build_plan("fixmatch", "10%", "0", "synthfer", ["train.device=cpu"])
    (line,) = cost_lines(specs, load_step_figures([folder]))
    assert "no measured step time for this case on cpu" in line
    assert "bench speed --device cpu --cases resnet18-224 --cpu-model-steps --output" in line
    assert "data.image_size=48 data.batch_size=64 data.unlabelled_ratio=1" in line


def test_device_kind_comes_from_the_device_or_the_launcher() -> None:
    def kinds(device: str, launcher: dict) -> tuple[str, ...]:
        return device_kinds({"train": {"device": device}, "launcher": launcher})

    assert kinds("cpu", {}) == ("cpu",)
    assert kinds("cuda:1", {}) == ("cuda",)
    assert kinds("auto", {"gpus_per_node": 1}) == ("cuda",)
    assert kinds("auto", {"gpus_per_node": 0}) == ("cpu",)
    assert kinds("auto", {"name": "local"}) == ("cuda", "cpu")
