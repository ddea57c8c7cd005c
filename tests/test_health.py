"""The health rules (harness/health.py) on constructed results and step logs: a collapsed run,
an inert one (never pseudo-labels, thresholds still), a healthy one, and each rule's edge."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

from harness.health import (
    COLLAPSED,
    EMA_BEHIND,
    NEVER_PSEUDO_LABELLED,
    THRESHOLDS_STILL,
    prior_entropy,
    result_health,
    run_health,
)

PER_CLASS = {"A": 40, "B": 10, "C": 10, "D": 10, "E": 10, "F": 10, "G": 10}


def _result(matrix: list[list[int]], ema: float = 60.0, student: float = 60.0) -> dict:
    """A result whose test predictions are ``matrix`` (rows: true class, columns: predicted)."""
    correct = [row[i] / sum(row) * 100 for i, row in enumerate(matrix)]
    return {
        "run_id": "m__10pct__seed0__00000000",
        "dataset": "toy",
        "method": "flexmatch",
        "split": {"per_class": PER_CLASS},
        "config": {"data": {"balanced_sampling": False}, "method": {"name": "flexmatch"}},
        "metrics": {
            "top1": ema,
            "mean_class_acc": sum(correct) / len(correct),
            "confusion_matrix": matrix,
        },
        "student_metrics": {"top1": student},
    }


def _diagonal(right: int = 8, wrong: int = 2) -> list[list[int]]:
    """Seven classes, each mostly right, its errors on the next class."""
    return [
        [right if j == i else wrong if j == (i + 1) % 7 else 0 for j in range(7)] for i in range(7)
    ]


def _steps(loss_sup: float, mask: float, moving: bool, n: int = 40) -> list[dict]:
    """``n`` step records every 20 steps: labelled loss falling to ``loss_sup`` by the last
    quarter, a constant mask rate, thresholds that move (or not)."""
    rows = []
    for i in range(1, n + 1):
        late = i > 0.75 * n
        move = 0.3 * i / n if moving else 0.0
        rows.append(
            {
                "step": 20 * i,
                "loss_sup": loss_sup if late else 2.5,
                "mask_rate": mask,
                "threshold": [0.5 + move] * 7,
            }
        )
    return rows


def test_healthy_run_has_no_flags():
    health = run_health(_result(_diagonal()), _steps(0.4, 0.6, moving=True), True)
    assert health.healthy and health.line() == "healthy"


def test_majority_class_predictions_are_collapsed():
    matrix = [[0, 0, 0, 10, 0, 0, 0] for _ in range(7)]  # everything predicted as class 3
    health = run_health(_result(matrix), _steps(0.4, 0.6, moving=True), True)
    assert health.flags == (COLLAPSED,)
    assert "100% of test predictions in class 3" in health.reasons[0]


def test_just_under_the_majority_share_is_not_collapsed_by_that_rule():
    # 87.5% of predictions in class 0, but every class keeps some accuracy (MCA above 1.5/C)
    rows = [[4 if j == 0 else 2 if j == i else 0 for j in range(7)] for i in range(1, 7)]
    matrix = [[60, 0, 0, 0, 0, 0, 0], *rows]
    share = sum(row[0] for row in matrix) / sum(map(sum, matrix))
    assert 0.85 < share < 0.90
    health = run_health(_result(matrix), [], False)
    assert COLLAPSED not in health.flags


def test_low_mean_class_accuracy_is_collapsed():
    # right on one class only: MCA 100/7 = 14.3 <= 1.5/C = 21.4
    matrix = _diagonal(right=0, wrong=10)
    matrix[0] = [10, 0, 0, 0, 0, 0, 0]
    health = run_health(_result(matrix), [], False)
    assert health.flags == (COLLAPSED,) and "mean class accuracy 14.3" in health.reasons[0]


def test_labelled_loss_at_the_prior_entropy_is_collapsed():
    entropy = prior_entropy(_result(_diagonal()))
    counts = list(PER_CLASS.values())
    assert math.isclose(entropy, -sum(c / 100 * math.log(c / 100) for c in counts))
    near = run_health(_result(_diagonal()), _steps(entropy + 0.09, 0.6, moving=True), True)
    assert near.flags == (COLLAPSED,) and "prior's entropy" in near.reasons[0]
    far = run_health(_result(_diagonal()), _steps(entropy - 0.2, 0.6, moving=True), True)
    assert far.healthy


def test_balanced_batches_use_the_uniform_prior():
    result = _result(_diagonal())
    result["config"]["data"]["balanced_sampling"] = True
    assert math.isclose(prior_entropy(result), math.log(7))


def test_inert_run_never_pseudo_labels_and_its_thresholds_never_move():
    health = run_health(_result(_diagonal()), _steps(0.4, 0.0, moving=False), True)
    assert health.flags == (NEVER_PSEUDO_LABELLED, THRESHOLDS_STILL)


def test_fixed_thresholds_are_not_flagged():
    # FixMatch's threshold is a constant by design: only adaptive methods are held to moving
    health = run_health(_result(_diagonal()), _steps(0.4, 0.6, moving=False), False)
    assert health.healthy


def test_a_supervised_log_has_no_mask_to_judge():
    steps = [{"step": 20 * i, "loss_sup": 0.4} for i in range(1, 41)]
    assert run_health(_result(_diagonal()), steps, False).healthy


def test_ema_more_than_five_points_behind_the_student():
    behind = run_health(_result(_diagonal(), ema=50.0, student=55.1), [], False)
    assert behind.flags == (EMA_BEHIND,)
    level = run_health(_result(_diagonal(), ema=50.0, student=55.0), [], False)
    assert level.healthy


def test_stored_result_reads_its_compact_step_log(tmp_path: Path):
    # the committed results' path: result JSON + compact step log beside it
    result = _result(_diagonal())
    folder = tmp_path / "toy"
    folder.mkdir()
    text = "".join(json.dumps(r) + "\n" for r in _steps(0.4, 0.0, moving=False))
    (folder / f"{result['run_id']}.steps.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    health = result_health(tmp_path, result)  # flexmatch: adaptive thresholds
    assert health.flags == (NEVER_PSEUDO_LABELLED, THRESHOLDS_STILL)


def test_leaderboard_marks_flagged_cells_and_lists_their_runs():
    from harness.leaderboard import render_leaderboard

    results = []
    for seed, matrix in enumerate([_diagonal(), [[0, 0, 0, 10, 0, 0, 0] for _ in range(7)]]):
        result = _result(matrix)
        result.update(
            run_id=f"flexmatch__10pct__seed{seed}__0000000{seed}",
            method_label="flexmatch",
            labels="10%",
            seed=seed,
            tag="",
        )
        result["health"] = run_health(result, [], True).as_dict()
        results.append(result)
    text = render_leaderboard(results)
    assert "⚠ collapsed 1/2" in text
    assert "- `flexmatch__10pct__seed1__00000001`: collapsed: 100% of test predictions" in text
    assert "seed0__00000000`" not in text.split("Runs whose health")[1]


def test_status_shows_a_done_runs_health(tmp_path: Path):
    from harness.launchers.status import all_statuses

    result = _result([[0, 0, 0, 10, 0, 0, 0] for _ in range(7)])
    result.update(method_label="flexmatch", labels="10%", seed=0, tag="")
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / f"{result['run_id']}.json").write_text(json.dumps(result))
    (status,) = all_statuses(tmp_path, query=lambda ids: {})
    assert status.state == "done" and status.detail == "collapsed"
