"""Close vs not separated in the leaderboard (issue 21 §5): the mark, the Δ and the seeds a
paired t-test would need (harness/stats.seeds_to_separate)."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.leaderboard import NOT_SEPARATED_MARK, TIED_MARK, standing
from harness.stats import MAX_SEEDS, paired_difference, seeds_to_separate


def test_seeds_to_separate_flexmatch_at_10pct():
    # the committed synth-faces runs: FlexMatch 10% against FixMatch, seeds 0-2 (p = 0.07)
    diff = paired_difference([38.2, 39.5333, 57.1333], [68.2667, 68.6667, 67.4])
    assert diff.p == pytest.approx(0.0696, abs=1e-3)
    assert seeds_to_separate(diff) == 5


def test_seeds_grow_as_the_effect_shrinks_and_stop_at_the_cap():
    wide = paired_difference([1.0, -2.0, 3.5], [0.0, 0.0, 0.0])
    tight = paired_difference([5.0, 6.0, 5.5], [0.0, 0.0, 0.0])
    assert seeds_to_separate(tight) < seeds_to_separate(wide)
    tiny = paired_difference([0.01, -5.0, 5.1], [0.0, 0.0, 0.0])
    assert seeds_to_separate(tiny) == MAX_SEEDS + 1
    assert seeds_to_separate(paired_difference([1.0], [0.0])) is None  # untested


def _frame(best: list[float], other: list[float]) -> pd.DataFrame:
    rows = [
        {
            "method_label": label,
            "labels": "10%",
            "seed": seed,
            "top1": value,
            "split_hash": "s",
            "pretrain_file": "",
        }
        for label, values in (("a", best), ("b", other))
        for seed, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_close_and_not_separated_are_marked_apart():
    close = standing(_frame([60.0, 61.0, 62.0], [59.8, 60.9, 61.7]), "top1", "10%", "b", "a")
    assert close == TIED_MARK
    apart = _frame([68.3, 68.7, 67.4], [38.2, 39.5, 57.1])
    mark = standing(apart, "top1", "10%", "b", "a")
    assert mark.startswith(f"{NOT_SEPARATED_MARK} Δ-23.2, ") and mark.endswith("seeds")
    below = standing(_frame([60.0, 61.0, 62.0], [50.0, 51.2, 51.9]), "top1", "10%", "b", "a")
    assert below == ""
