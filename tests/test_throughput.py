"""The throughput benchmark runs end to end and writes its figures and page (no timing is
asserted: figures come from the benchmark itself, see docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.throughput import BASELINE_NAME, data_speed_up, goals, main

# A small synthfer (generated once into the test cache) and a small image pool: the parts run
# exactly as in the real benchmark, on fewer steps.
SMALL = ["dataset.generate.train_size=140", "dataset.generate.test_size=70"]


def test_cpu_run_writes_figures_and_a_page_that_awaits_the_gpu(
    cache_dir: Path, tmp_path: Path
) -> None:
    figures, doc = tmp_path / "performance", tmp_path / "performance.md"
    args = ["--device", "cpu", "--threads", "1", "--steps", "1", "--warmup", "0",
            "--pool", "64", "--cases", "fer_cnn-48,resnet18-112", "--figures-dir", str(figures),
            "--doc", str(doc), "--save-baseline", f"data.cache_dir={cache_dir}",
            *SMALL]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)  # --threads sets the process's count

    record = json.loads((figures / "throughput-cpu.json").read_text())
    assert (figures / BASELINE_NAME).read_text() == (figures / "throughput-cpu.json").read_text()
    assert record["threads"] == 1 and record["num_workers"] == 0
    assert record["command"].startswith("python benchmarks/throughput.py --device cpu")
    small, resnet = record["cases"]
    assert (small["backbone"], small["image_size"], small["mu"]) == ("fer_cnn", 48, 1)
    assert small["images_per_step"] == 64 * (1 + 2 * 1) and small["skipped"] is None
    assert set(small["seconds"]) == {"data", "bare", "engine"}
    assert small["engine_vs_bare"] > 0
    assert (resnet["image_size"], resnet["mu"], resnet["images_per_step"]) == (112, 7, 960)
    assert set(resnet["seconds"]) == {"data"}, "ResNet-18 model steps are not timed on a CPU"
    assert "--cpu-model-steps" in resnet["skipped"]

    page = doc.read_text()
    assert "## CPU" in page and "fer_cnn · 48 px · μ=1" in page
    assert "## GPU\n\nStill to come" in page
    assert "## Baseline: the per-sample augmentation path (CPU)" in page
    # Measured against itself: no speed-up, raw or adjusted for the load, and no verdict.
    assert "| 1.00× (1.00×) " in page and "awaits batched augmentation" in page


def _cpu_record(rate_112: float, bare_seconds: float) -> dict:
    cases = [
        {"key": "fer_cnn-48", "image_size": 48, "unlabelled_per_s": 1.0,
         "seconds": {"bare": bare_seconds}},
        {"key": "resnet18-112", "image_size": 112, "unlabelled_per_s": rate_112, "seconds": {}},
    ]  # fmt: skip
    return {"kind": "cpu", "threads": 1, "cases": cases}


def test_the_data_speed_up_is_given_raw_and_adjusted_for_the_machines_load() -> None:
    """A run on a machine twice as loaded (its bare step twice as slow) that still moves 6×
    the samples has a 12× faster data path."""
    before, now = _cpu_record(100.0, bare_seconds=1.0), _cpu_record(600.0, bare_seconds=2.0)
    assert data_speed_up(now, before, 112) == pytest.approx((6.0, 12.0))
    assert data_speed_up(now, before, 224) is None
    (_, row, _) = goals({"cpu": now}, before)
    assert row[1:] == ["6.00× raw, 12.00× load-adjusted", "met"]
    (_, row, _) = goals({"cpu": _cpu_record(300.0, bare_seconds=1.0)}, before)
    assert row[1:] == ["3.00× raw, 3.00× load-adjusted", "missed (3.3× short)"]


def test_the_gpu_check_installs_as_the_readme_test_command_does() -> None:
    """scripts/gpu_check.sh must test what a user installs: the README's pip line."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text().split("## User guide")[0]
    (command,) = [line for line in readme.splitlines() if "pytest" in line and "pip" in line]
    pip_args = command.split("pip install", 1)[1].split("&&")[0].strip()
    script = (root / "scripts" / "gpu_check.sh").read_text()
    assert f".venv/bin/pip install {pip_args}\n" in script
    assert "pytest -m gpu" in script and "benchmarks/throughput.py --device cuda" in script


def test_bench_speed_hands_its_flags_to_the_benchmark(capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main as bench

    assert bench(["speed", "--cases", "fer_cnn-48,nope"]) == 2
    assert "--cases: unknown ['nope']" in " ".join(capsys.readouterr().out.split())
