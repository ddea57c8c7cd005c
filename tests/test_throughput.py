"""The throughput measurement (``bench speed``) and this repository's page of its figures
(``benchmarks/throughput.py``) run end to end (no timing is asserted: figures come from the
benchmark itself, see docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from harness.cli import main as bench
from harness.throughput import CASES

ROOT = Path(__file__).resolve().parents[1]
# A small synthfer (generated once into the test cache) and a small image pool: the parts run
# exactly as in the real benchmark, on fewer steps.
SMALL = ["dataset.generate.train_size=140", "dataset.generate.test_size=70"]
QUICK = ["--device", "cpu", "--threads", "1", "--steps", "1", "--warmup", "0", "--pool", "64"]


def _page_script():
    """benchmarks/throughput.py, a script of the repository (not of the installed package)."""
    spec = importlib.util.spec_from_file_location("page", ROOT / "benchmarks" / "throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


page = _page_script()


def _keeping_threads(run, *args):
    threads = torch.get_num_threads()
    try:
        return run(*args)
    finally:
        torch.set_num_threads(threads)  # --threads sets the process's count


@pytest.mark.slow
def test_bench_speed_prints_its_table_and_writes_nothing_into_the_working_folder(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["speed", *QUICK, "--cases", "fer_cnn-48", f"data.cache_dir={cache_dir}", *SMALL]
    assert _keeping_threads(bench, args) == 0
    out = capsys.readouterr().out
    assert "fer_cnn · 48 px · μ=1" in out and "engine/bare" in out
    assert "per-sample" not in out, "the repository's baseline comparison is not bench speed's"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_speed_writes_its_json_where_output_says(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "figures" / "speed.json"
    args = ["speed", *QUICK, "--cases", "fer_cnn-48", "--output", str(output),
            f"data.cache_dir={cache_dir}", *SMALL]  # fmt: skip
    assert _keeping_threads(bench, args) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "figures",
        "figures/speed.json",
    ]
    record = json.loads(output.read_text())
    assert record["kind"] == "cpu" and record["threads"] == 1
    assert record["command"].startswith("bench speed --device cpu")
    (case,) = record["cases"]
    assert (case["backbone"], case["image_size"], case["mu"]) == ("fer_cnn", 48, 1)
    assert case["images_per_step"] == 64 * (1 + 2 * 1) and case["skipped"] is None
    assert set(case["seconds"]) == {"data", "bare", "engine"} and case["engine_vs_bare"] > 0


def test_bench_speed_help_lists_the_cases_and_the_defaults(
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench(["speed", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for case in CASES:
        assert f"{case.key} FixMatch step of {case.backbone} at {case.image_size} px" in text
    assert "--steps STEPS timed steps of each part (default: 10)" in text
    assert "--device DEVICE auto | cpu | cuda | cuda:N (default: auto)" in text
    assert "--output OUTPUT write the figures as JSON to this file (default: none written)" in text


@pytest.mark.slow
def test_the_page_script_writes_figures_and_a_page_that_awaits_the_gpu(
    cache_dir: Path, tmp_path: Path
) -> None:
    figures, doc = tmp_path / "performance", tmp_path / "performance.md"
    args = [*QUICK, "--cases", "fer_cnn-48,resnet18-112", "--figures-dir", str(figures),
            "--doc", str(doc), "--save-baseline", f"data.cache_dir={cache_dir}",
            *SMALL]  # fmt: skip
    assert _keeping_threads(page.main, args) == 0

    record = json.loads((figures / "throughput-cpu.json").read_text())
    assert (figures / page.BASELINE_NAME).read_text() == (
        figures / "throughput-cpu.json"
    ).read_text()
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

    text = doc.read_text()
    assert "## CPU" in text and "fer_cnn · 48 px · μ=1" in text
    assert "## GPU\n\nStill to come" in text
    assert "## Baseline: the per-sample augmentation path (CPU)" in text
    # Measured against itself: no speed-up, raw or adjusted for the load, and no verdict.
    assert "| 1.00× (1.00×) " in text and "awaits batched augmentation" in text


def test_the_committed_page_is_what_the_script_renders_from_the_committed_figures(
    tmp_path: Path,
) -> None:
    doc = tmp_path / "performance.md"
    args = ["--render-only", "--figures-dir", str(ROOT / "docs" / "performance"), "--doc", str(doc)]
    assert page.main(args) == 0
    assert doc.read_text() == (ROOT / "docs" / "performance.md").read_text()


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
    assert page.data_speed_up(now, before, 112) == pytest.approx((6.0, 12.0))
    assert page.data_speed_up(now, before, 224) is None
    (_, row, _) = page.goals({"cpu": now}, before)
    assert row[1:] == ["6.00× raw, 12.00× load-adjusted", "met"]
    (_, row, _) = page.goals({"cpu": _cpu_record(300.0, bare_seconds=1.0)}, before)
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
    assert bench(["speed", "--cases", "fer_cnn-48,nope"]) == 2
    assert "--cases: unknown ['nope']" in " ".join(capsys.readouterr().out.split())
