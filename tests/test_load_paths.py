"""What keeps the read commands fast on many results: method attributes read from source (no
torch import per status or leaderboard), and results read once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.registry import available_methods, method_attribute

REPO = Path(__file__).resolve().parents[1]


def test_method_attributes_read_from_source_match_the_classes() -> None:
    for info in available_methods().values():
        assert method_attribute(info.name, "adaptive_thresholds", False) == (
            info.cls.adaptive_thresholds
        ), info.name


def test_health_of_a_result_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from harness.health import has_adaptive_thresholds\n"
        "for m in ('supervised', 'fixmatch', 'flexmatch', 'freematch', 'adacm', 'dta_snl'):\n"
        "    has_adaptive_thresholds({'method': m, 'config': {'method': {'dta': True}}})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip


def _write(results: Path, name: str, top1: float) -> Path:
    from harness.store import write_result

    path = results / "synthfer" / f"{name}.json"
    result = {"dataset": "synthfer", "method_label": "m", "labels": "10%", "seed": 0,
              "run_id": name, "metrics": {"top1": top1}}  # fmt: skip
    write_result(path, result, force=path.exists())
    return path


def test_result_summaries_come_from_the_index_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from harness import store

    results = tmp_path / "results"
    first, _ = _write(results, "a", 1.0), _write(results, "b", 2.0)
    summarise = lambda result: {"top1": result["metrics"]["top1"]}  # noqa: E731
    assert store.result_summaries(results, summarise, "t/1") == [{"top1": 1.0}, {"top1": 2.0}]
    assert (results / "runs" / "index.json").is_file()
    reads: list[object] = []
    real = store.read_json_files
    monkeypatch.setattr(store, "read_json_files", lambda *a: reads.append(a) or real(*a))
    assert store.result_summaries(results, summarise, "t/1") == [{"top1": 1.0}, {"top1": 2.0}]
    assert reads == [], "unchanged results are not read again"
    _write(results, "a", 3.0)  # a forced rewrite: new size or mtime
    os.utime(first, ns=(1, 1))
    assert store.result_summaries(results, summarise, "t/1") == [{"top1": 3.0}, {"top1": 2.0}]
    assert len(reads) == 1
    (results / "synthfer" / "b.json").unlink()
    assert store.result_summaries(results, summarise, "t/1") == [{"top1": 3.0}]
    # Another summariser starts over; a damaged index is only a slower read.
    assert store.result_summaries(results, lambda r: {"n": 1}, "t/2") == [{"n": 1}]
    (results / "runs" / "index.json").write_text("{not json")
    assert store.result_summaries(results, summarise, "t/1") == [{"top1": 3.0}]
