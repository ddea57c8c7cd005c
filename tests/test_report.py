"""``bench report`` and ``bench export``: figures from stored results and step logs, the CSV that
round-trips to the leaderboard, LaTeX tables; the step log's compact copy and TensorBoard sink."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.errors import ConfigError
from harness.leaderboard import render_leaderboard
from harness.report.build import write_report
from harness.report.export import run_rows, summary_rows
from harness.report.frame import METRIC_NAMES
from harness.steplog import (
    compact,
    copy_path,
    keep_compact_copy,
    open_step_log,
    training_steps,
)
from harness.store import load_results, write_result

REPO = Path(__file__).resolve().parents[1]
CELL = re.compile(r"^\**(?P<mean>-?\d+\.\d\d)(?: ± (?P<std>\d+\.\d\d))? \((?P<n>\d+)\)")


def _leaderboard_cells(doc: str) -> dict[tuple[str, str, str, str], tuple[float, int]]:
    """(section, metric heading, method, setting) → (mean, n) of every cell of the main tables."""
    cells = {}
    section = heading = ""
    header: list[str] = []
    for line in doc.splitlines():
        if line.startswith("## "):
            section = line[3:].split(" — ")[0]
        elif line.startswith("### "):
            heading, header = line[4:], []
        elif line.startswith("#### "):
            heading = ""  # paired tables are not cell tables
        elif line.startswith("|") and "(%" in heading and "Ablations" not in heading:
            row = [c.strip() for c in line.strip().strip("|").split("|")]
            if not header:
                header = row
            elif not set(row[0]) <= set(":-"):
                for setting, cell in zip(header[1:], row[1:], strict=True):
                    match = CELL.match(cell)
                    if match:
                        key = (section, heading, row[0], setting)
                        cells[key] = (float(match["mean"]), int(match["n"]))
    return cells


def _assert_round_trip(
    results_dir: Path, tmp_path: Path
) -> dict[tuple[str, str, str, str], tuple[float, int]]:
    doc = render_leaderboard(load_results(results_dir))
    board = _leaderboard_cells(doc)
    assert (
        main(
            [
                "export",
                "--format",
                "csv",
                "--results-dir",
                str(results_dir),
                "--output",
                str(tmp_path / "export"),
            ]
        )
        == 0
    )
    summary = pd.read_csv(tmp_path / "export" / "summary.csv", keep_default_na=False)
    names = METRIC_NAMES  # the best evaluation's tables too, under their own names
    exported = {
        (row.section, names[row.metric], row.method_label, row.labels): (row.mean, row.n)
        for row in summary.itertuples()
    }
    assert set(exported) == set(board)
    for key, (mean, n) in board.items():
        assert round(exported[key][0], 2) == pytest.approx(mean, abs=1e-9), key
        assert exported[key][1] == n, key
    return board


@pytest.mark.slow
def test_csv_round_trips_to_the_committed_leaderboard(tmp_path: Path) -> None:
    board = _assert_round_trip(REPO / "results", tmp_path)
    # 18 cells per metric table (final top-1, macro-F1, best top-1) in the committed
    # experiment's section (untagged synthfer);
    # other sections (tags such as `fidelity`) round-trip too, whatever their size.
    assert sum(1 for key in board if key[0] == "synthfer") == 3 * 18
    assert any(key[0] == "synthfer [fidelity]" for key in board)
    summary = summary_rows(load_results(REPO / "results"))
    fixmatch = summary[(summary["method_label"] == "fixmatch") & (summary["metric"] == "top1")]
    at5 = fixmatch[fixmatch["labels"] == "5%"].iloc[0]
    # The figures: +2.5, +6.0, +14.0 over seeds: 95 % CI [-7.1, 22.1], p = 0.16.
    assert (round(at5["vs_supervised_ci_low"], 1), round(at5["vs_supervised_ci_high"], 1)) == (
        -7.1,
        22.1,
    )
    assert round(at5["vs_supervised_p"], 2) == 0.16 and at5["mark"] == "best"
    at25 = fixmatch[fixmatch["labels"] == "25%"].iloc[0]
    assert round(at25["vs_supervised_mean"], 1) == 1.9
    assert (round(at25["vs_supervised_ci_low"], 1), round(at25["vs_supervised_ci_high"], 1)) == (
        0.3,
        3.5,
    )
    assert round(at25["vs_supervised_p"], 2) == 0.04


@pytest.mark.slow
def test_the_committed_leaderboard_is_what_bench_report_writes(tmp_path: Path) -> None:
    board, figures = write_report(REPO / "results", tmp_path / "leaderboard.md")
    committed = (REPO / "results" / "leaderboard.md").read_text()
    assert board.read_text() == committed, "regenerate it: bench report"
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", committed)
    assert sorted(links) == sorted(p.relative_to(tmp_path).as_posix() for p in figures)
    for link in links:
        assert (REPO / "results" / link).is_file(), link


def test_runs_csv_has_a_row_per_run_with_everything(tmp_path: Path) -> None:
    results = load_results(REPO / "results")
    runs = run_rows(results)
    assert len(runs) == len(results)
    assert sum(1 for r in results if not r.get("tag")) == 54  # the committed experiment
    for column in (
        "metrics.top1",
        "metrics.per_class_acc.Fear",
        "student_metrics.macro_f1",
        "config.optim.lr",
        "config.method.p_cutoff",
        "timing.train_seconds",
        "provenance.git.commit",
        "provenance.device",
        "provenance.torch_threads",
        "split.per_class.Fear",
        "diagnostics.mask_rate",
    ):
        assert column in runs, column
    assert (
        main(
            [
                "export",
                "--format",
                "latex",
                "--results-dir",
                str(REPO / "results"),
                "--output",
                str(tmp_path),
            ]
        )
        == 0
    )
    tables = (tmp_path / "tables.tex").read_text()
    assert r"\textbf{51.29 $\pm$ 1.26}" in tables  # fixmatch at 5 %
    assert r"43.78 $\pm$ 4.84$^{n.s.}$" in tables  # supervised at 5 %: not separated
    assert r"dta\_snl[snl=false]" in tables
    assert (tmp_path / "runs.tex").read_text().count(r"\\") >= 54


@pytest.mark.parametrize("command", [["leaderboard"], ["report"], ["export", "--format", "csv"]])
def test_a_missing_results_folder_is_an_error(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line, as a terminal that wide shows it
    assert main([*command, "--results-dir", str(tmp_path / "nowhere")]) == 2
    out = capsys.readouterr().out
    assert "does not exist" in out and "Traceback" not in out
    assert not (tmp_path / "nowhere").exists()


# Step logs -----------------------------------------------------------------------------------


def _step(step: int, mask: float, threshold: list[float]) -> dict:
    return {
        "step": step,
        "lr": 0.03 / step,
        "loss": 1.0 / step,
        "mask_rate": mask,
        "pseudo_label_acc": 0.5 + mask / 4,
        "threshold": threshold,
    }


def test_compact_copy_keeps_the_later_entries_and_drops_events(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    lines = [
        _step(5, 0.1, [0.123456789, 0.5]),
        _step(10, 0.2, [0.2, 0.5]),
        {"event": "eval", "step": 10, "top1": 40.0},
        _step(15, 0.3, [0.3, 0.5]),  # lost to the interruption: logged again below
        {"event": "resume", "step": 10},
        _step(15, 0.35, [0.3, 0.5]),
        _step(20, 0.4, [0.4, 0.5]),
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    steps = training_steps(log)
    assert [s["step"] for s in steps] == [5, 10, 15, 20]
    assert steps[2]["mask_rate"] == 0.35
    result = tmp_path / "synthfer" / "run.json"
    result.parent.mkdir()
    copy = keep_compact_copy(log, result)
    assert copy == copy_path(result) == tmp_path / "synthfer" / "run.steps.jsonl.gz"
    kept = training_steps(copy)
    assert [s["step"] for s in kept] == [5, 10, 15, 20]
    assert kept[0]["threshold"] == [0.1235, 0.5]  # four significant digits
    first = copy.read_bytes()
    keep_compact_copy(log, result)
    assert copy.read_bytes() == first, "same log, same bytes (no gzip timestamp)"
    assert keep_compact_copy(tmp_path / "missing.jsonl", result) is None


def test_compact_thins_evenly_and_keeps_the_last_step() -> None:
    records = [{"step": i} for i in range(1, 2501)]
    thinned = compact(records, max_rows=1000)
    steps = [r["step"] for r in thinned]
    assert len(steps) == 1000 and steps[-1] == 2500
    gaps = {b - a for a, b in itertools.pairwise(steps)}
    assert gaps <= {2, 3}


def test_tensorboard_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[tensorboard\]'"):
        open_step_log(tmp_path / "metrics.jsonl", tensorboard=True)
    log = open_step_log(tmp_path / "metrics.jsonl", tensorboard=False)
    log.write(json.dumps({"step": 1}) + "\n")
    log.close()
    assert training_steps(tmp_path / "metrics.jsonl") == [{"step": 1}]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tensorboard_sink_writes_the_logged_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    log = open_step_log(tmp_path / "metrics.jsonl", tensorboard=True)
    log.write(json.dumps(_step(5, 0.25, [0.1, 0.9])) + "\n")
    # The engine writes whole lines, but a line split over two writes is still one record.
    text = (
        json.dumps(
            {
                "event": "eval",
                "step": 5,
                "top1": 40.0,
                "per_class_acc": {"Fear": 10.0},
                "confusion_matrix": [[1]],
            }
        )
        + "\n"
    )
    log.write(text[:20])
    log.write(text[20:])
    log.close()
    scalars = _scalars(tmp_path)
    assert scalars["train/mask_rate"] == [(5, 0.25)]
    assert scalars["train/threshold/1"] == [(5, pytest.approx(0.9))]
    assert scalars["eval/top1"] == [(5, 40.0)]
    assert scalars["eval/per_class_acc/Fear"] == [(5, 10.0)]
    assert not any("confusion" in tag for tag in scalars)


# Figures -------------------------------------------------------------------------------------


def _hand_made_store(root: Path, with_logs: bool) -> None:
    """Three committed synthfer results per method (supervised, fixmatch, flexmatch) at 5 %,
    with compact step logs written by hand when ``with_logs``."""
    committed = load_results(REPO / "results")
    chosen = [
        r
        for r in committed
        if not r.get("tag")  # the committed experiment, not a tagged side run
        and r["labels"] == "5%"
        and r["method_label"] in ("supervised", "fixmatch", "flexmatch")
    ]
    assert len(chosen) == 9
    for result in chosen:
        path = root / "synthfer" / f"{result['run_id']}.json"
        write_result(path, result)
        if with_logs and result["method"] != "supervised":
            log = root / "runs" / result["run_id"] / "metrics.jsonl"
            log.parent.mkdir(parents=True)
            rate = 0.9 if result["method"] == "flexmatch" else 0.3
            thresholds = [0.95] * 7 if result["method"] == "fixmatch" else [0.5, 0.01] + [0.2] * 5
            steps = [_step(s, rate * s / 100, thresholds) for s in range(20, 101, 20)]
            if result["method"] == "fixmatch":
                for step in steps:
                    step.pop("threshold")
            log.write_text("".join(json.dumps(s) + "\n" for s in steps))
            keep_compact_copy(log, path)


def test_report_without_step_logs_shows_what_the_results_hold(tmp_path: Path) -> None:
    _hand_made_store(tmp_path, with_logs=False)
    board, figures = write_report(tmp_path)
    names = sorted(path.name for path in figures)
    assert names == [
        "accuracy_vs_labels.png",
        "confusion_5pct.png",
        "ema_top1_vs_step.png",
        "paired_differences.png",
        "pseudo_labels_mean.png",
        "thresholds_final.png",
    ]
    doc = board.read_text()
    assert "Step logs: 0 of the 9 runs drawn have one" in doc
    for path in figures:
        assert f"]({path.relative_to(tmp_path).as_posix()})" in doc
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc.startswith("# fer-bench leaderboard\n\nGenerated by `bench report`")


def test_report_with_step_logs_draws_them_against_step(tmp_path: Path) -> None:
    _hand_made_store(tmp_path, with_logs=True)
    for run in (tmp_path / "runs").iterdir():  # the committed copies are what is read
        (run / "metrics.jsonl").unlink()
    _, figures = write_report(tmp_path)
    names = {path.name for path in figures}
    assert {"pseudo_labels_vs_step.png", "thresholds_vs_step.png"} <= names
    # The supervised runs have no pseudo-labels: nothing falls back to whole-run means.
    assert "Step logs: 6 of the 9 runs drawn have one" in (tmp_path / "leaderboard.md").read_text()


@pytest.mark.slow
def test_training_keeps_a_compact_log_and_tensorboard_scalars(
    tiny: list[str], tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    results = tmp_path / "results"
    args = [
        "--methods",
        "flexmatch",
        "--labels",
        "10%",
        "--seeds",
        "0",
        "--results-dir",
        str(results),
        "--no-progress",
        *tiny,
        "train.tensorboard=true",
    ]
    assert main(["run", *args]) == 0
    (result,) = (results / "synthfer").glob("*.json")
    copy = copy_path(result)
    steps = training_steps(copy)
    assert [s["step"] for s in steps] == list(range(5, 41, 5))
    assert len(steps[0]["threshold"]) == 7 and 0 <= steps[-1]["mask_rate"] <= 1
    assert len(gzip.decompress(copy.read_bytes())) < 300 * len(steps)
    scalars = _scalars(results / "runs" / result.stem)
    assert [s for s, _ in scalars["train/loss"]] == list(range(5, 41, 5))
    assert [s for s, _ in scalars["eval/top1"]] == [20, 40]
    assert not math.isnan(scalars["eval/top1"][-1][1])
    # train.tensorboard does not change what a run computes: same run id without it.
    assert main(["run", *args[:-1]]) == 0
    assert len(list((results / "synthfer").glob("*.json"))) == 1
    assert main(["report", "--results-dir", str(results)]) == 0
    assert (results / "figures" / "synthfer" / "thresholds_vs_step.png").is_file()
