"""A run's health: the ways a finished run can have failed without crashing, read from what its
result holds (final test predictions, EMA and student metrics) and its step log.

Computed when read (leaderboard, ``bench status``, end-of-run line), never stored: the committed
results get their health from their confusion matrix and compact step log, and a rule changed
here applies to every result at once. The rules and their thresholds (docs/health.md):

* ``collapsed``: one class takes >= :data:`MAJORITY_SHARE` of the test predictions, or the mean
  class accuracy is <= :data:`MCA_FACTOR`/C, or the labelled loss over the last quarter of the
  run is within :data:`PRIOR_ENTROPY_MARGIN` nats of the entropy of the class prior the labelled
  batches are drawn from (the network outputs the prior whatever the input);
* ``never pseudo-labelled``: a semi-supervised run (its step log has a mask rate) whose mask rate
  was 0 at every logged step: it trained as supervised;
* ``thresholds never moved``: a method with adaptive thresholds whose every per-class threshold
  stayed within :data:`THRESHOLD_STILL` of its first logged value all run;
* ``EMA behind``: the evaluated (EMA) model's final top-1 more than :data:`EMA_GAP` points below
  the student's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAJORITY_SHARE = 0.90  # share of the test predictions in one class
MCA_FACTOR = 1.5  # mean class accuracy <= 1.5 x chance (1/C)
PRIOR_ENTROPY_MARGIN = 0.1  # nats between the late labelled loss and the prior's entropy
THRESHOLD_STILL = 0.01  # largest move of any class's threshold that counts as "never moved"
EMA_GAP = 5.0  # top-1 points the EMA model may trail the student by

COLLAPSED = "collapsed"
NEVER_PSEUDO_LABELLED = "never pseudo-labelled"
THRESHOLDS_STILL = "thresholds never moved"
EMA_BEHIND = "EMA behind"
FLAGS = (COLLAPSED, NEVER_PSEUDO_LABELLED, THRESHOLDS_STILL, EMA_BEHIND)


@dataclass(frozen=True)
class Health:
    """The rules a run broke (``flags``, in :data:`FLAGS` order) and, per rule, the numbers
    that broke it (``reasons``); healthy when ``flags`` is empty."""

    flags: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """No rule fired."""
        return not self.flags

    def line(self) -> str:
        """``healthy``, or every reason joined: the end-of-run line's health part."""
        return "healthy" if self.healthy else "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON, exports)."""
        return {"flags": list(self.flags), "reasons": list(self.reasons)}


def run_health(
    result: dict[str, Any], steps: Sequence[dict[str, Any]], adaptive_thresholds: bool
) -> Health:
    """The health of ``result`` given its training-step records ``steps`` (the step log, full
    or compact; empty for runs without one: the step-log rules then cannot fire) and whether
    its method's thresholds are meant to adapt (:func:`has_adaptive_thresholds`)."""
    found: dict[str, str] = {}
    if reason := _collapsed(result, steps):
        found[COLLAPSED] = reason
    masks = [s["mask_rate"] for s in steps if _finite(s.get("mask_rate"))]
    if masks and max(masks) == 0:
        found[NEVER_PSEUDO_LABELLED] = (
            f"{NEVER_PSEUDO_LABELLED} (mask rate 0 at all {len(masks)} logged steps)"
        )
    if adaptive_thresholds and (reason := _thresholds_still(steps)):
        found[THRESHOLDS_STILL] = reason
    if reason := _ema_behind(result):
        found[EMA_BEHIND] = reason
    flags = tuple(flag for flag in FLAGS if flag in found)
    return Health(flags, tuple(found[flag] for flag in flags))


def _collapsed(result: dict[str, Any], steps: Sequence[dict[str, Any]]) -> str | None:
    """The first collapse criterion that holds, with its numbers; None when none does."""
    metrics = result.get("metrics") or {}
    matrix = metrics.get("confusion_matrix")
    if matrix:
        predicted = [sum(column) for column in zip(*matrix, strict=True)]
        total = sum(predicted)
        top = max(range(len(predicted)), key=predicted.__getitem__)
        if total and predicted[top] / total >= MAJORITY_SHARE:
            return f"{COLLAPSED}: {predicted[top] / total:.0%} of test predictions in class {top}"
        classes = len(matrix)
        mca = metrics.get("mean_class_acc")
        if mca is not None and mca <= 100 * MCA_FACTOR / classes:
            floor = 100 * MCA_FACTOR / classes
            return f"{COLLAPSED}: mean class accuracy {mca:.1f} <= {MCA_FACTOR}/C = {floor:.1f}"
    late = _late_labelled_loss(steps)
    entropy = prior_entropy(result)
    if late is not None and entropy is not None and abs(late - entropy) <= PRIOR_ENTROPY_MARGIN:
        return (
            f"{COLLAPSED}: labelled loss {late:.2f} over the last quarter, within "
            f"{PRIOR_ENTROPY_MARGIN} of the labelled prior's entropy {entropy:.2f}"
        )
    return None


def _late_labelled_loss(steps: Sequence[dict[str, Any]]) -> float | None:
    """Mean labelled loss over the last quarter of the logged steps (by step number)."""
    logged = [s for s in steps if _finite(s.get("loss_sup"))]
    if not logged:
        return None
    last = logged[-1]["step"]
    late = [s["loss_sup"] for s in logged if s["step"] > 0.75 * last]
    return sum(late) / len(late) if late else None


def prior_entropy(result: dict[str, Any]) -> float | None:
    """Entropy (nats) of the class prior the labelled batches are drawn from: the labelled
    split's class frequencies, or uniform when the batches are class-balanced."""
    per_class = (result.get("split") or {}).get("per_class")
    if not per_class:
        return None
    counts = [c for c in per_class.values() if c > 0]
    if ((result.get("config") or {}).get("data") or {}).get("balanced_sampling"):
        return math.log(len(counts))
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts)


def _thresholds_still(steps: Sequence[dict[str, Any]]) -> str | None:
    """The reason when every class's logged threshold stayed within THRESHOLD_STILL of its
    first value; None when one moved or none was logged."""
    rows = [s["threshold"] for s in steps if isinstance(s.get("threshold"), list)]
    if not rows:
        return None
    start = rows[0]
    moved = max(abs(t - t0) for row in rows for t, t0 in zip(row, start, strict=True))
    if moved > THRESHOLD_STILL:
        return None
    return (
        f"{THRESHOLDS_STILL} (largest move {moved:.3f} <= {THRESHOLD_STILL} "
        f"over {len(rows)} logged steps)"
    )


def _ema_behind(result: dict[str, Any]) -> str | None:
    """The reason when the evaluated EMA model ends > EMA_GAP top-1 points below the student."""
    ema, student = result.get("metrics") or {}, result.get("student_metrics") or {}
    if "top1" not in ema or "top1" not in student:
        return None
    gap = student["top1"] - ema["top1"]
    if gap <= EMA_GAP:
        return None
    return f"{EMA_BEHIND}: EMA top-1 {ema['top1']:.1f}, {gap:.1f} points below the student's"


def has_adaptive_thresholds(result: dict[str, Any]) -> bool:
    """Whether the result's method adapts its thresholds in this run: its class's
    ``adaptive_thresholds`` (True, or the name of the boolean setting that switches them on,
    e.g. DTA+SNL's ``dta``), read from its source where it can be; False for a method no
    longer registered."""
    from harness.registry import UnknownMethodError, method_attribute

    try:  # read from the method's source where it can be: no torch import per result
        method = result.get("method") or result["method_label"]
        switch = method_attribute(method, "adaptive_thresholds", False)
    except UnknownMethodError:
        return False
    if isinstance(switch, str):
        return bool(((result.get("config") or {}).get("method") or {}).get(switch, False))
    return bool(switch)


def result_health(results_dir: Path, result: dict[str, Any]) -> Health:
    """The health of a stored result, from its compact step log (or full one) and itself."""
    from harness.steplog import run_step_log

    steps = run_step_log(results_dir, result) if result.get("run_id") else []
    return run_health(result, steps, has_adaptive_thresholds(result))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def attach_health(
    results_dir: Path,
    results: list[dict[str, Any]],
    known: Mapping[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``results`` with each one's health under ``"health"`` (in memory only: the files are
    never rewritten), as the leaderboard reads it: ``known[run_id]`` where given (the results
    index, :func:`harness.result_index.healths`), else from the result and its step log."""
    known = known or {}
    for result in results:
        cached = known.get(str(result.get("run_id", "")))
        if cached is None:
            cached = result_health(results_dir, result).as_dict()
        result["health"] = cached
    return results


def short(health: Health) -> str:
    """``healthy`` or the flags joined: a table cell (``bench status``)."""
    return "healthy" if health.healthy else "; ".join(health.flags)


def stored_health(results_dir: Path, dataset: str, run_id: str) -> Health | None:
    """The health of the stored result ``<results_dir>/<dataset>/<run_id>.json``; None when it
    cannot be read."""
    import json

    path = Path(results_dir) / dataset / f"{run_id}.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result_health(results_dir, result)
