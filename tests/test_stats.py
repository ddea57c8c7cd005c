"""The paired statistics, pinned on hand-made per-seed numbers with known answers."""

from __future__ import annotations

import math

import pytest

from harness.stats import format_difference, format_p, paired_difference

# Student's t with 2 degrees of freedom has a closed form: P(|T| > t) = 1 - t / sqrt(t² + 2),
# and its 97.5 % quantile is 4.302653 — so the answers below are derived by hand, not by scipy.
T2_975 = 4.302653


def _p_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_issue_example_fixmatch_minus_supervised_at_5pct() -> None:
    # Per-seed differences +2.5, +6.0, +14.0: mean 7.5, sd sqrt(34.75), t = 7.5 / (sd / √3).
    supervised = [40.0, 45.0, 30.0]
    fixmatch = [42.5, 51.0, 44.0]
    diff = paired_difference(fixmatch, supervised)
    sd = math.sqrt(34.75)
    half = T2_975 * sd / math.sqrt(3)
    assert diff.n == 3 and diff.mean == pytest.approx(7.5)
    assert (diff.low, diff.high) == pytest.approx((7.5 - half, 7.5 + half), abs=1e-4)
    assert (round(diff.low, 1), round(diff.high, 1)) == (-7.1, 22.1)
    assert diff.p == pytest.approx(_p_df2(7.5 / (sd / math.sqrt(3))), abs=1e-9)
    assert round(diff.p, 2) == 0.16 and not diff.significant
    assert format_difference(diff) == "+7.50 [-7.14, +22.14] p=0.16 (3)"


def test_consistent_small_gain_is_significant() -> None:
    # Differences 1, 2, 3: mean 2, sd 1, t = 2√3; p = 1 - 2√3/√14 = 0.0742 (not < 0.05).
    diff = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert diff.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), abs=1e-9)
    assert diff.low == pytest.approx(2 - T2_975 / math.sqrt(3), abs=1e-5)
    assert not diff.significant
    # Differences 1.8, 2.0, 2.2: sd 0.2, t = 2 / (0.2/√3) = 17.32, p = 0.0033 → significant.
    diff = paired_difference([11.8, 12.0, 12.2], [10.0, 10.0, 10.0])
    assert diff.p == pytest.approx(_p_df2(2 / (0.2 / math.sqrt(3))), abs=1e-9)
    assert diff.significant and diff.low > 0
    assert format_p(diff.p) == "p=0.003"


def test_pairing_matters() -> None:
    # The same numbers unpaired would be hopeless; paired, the shift is the only variation.
    a, b = [30.0, 50.0, 70.0, 90.0], [29.0, 49.2, 68.8, 89.1]
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(0.975) and diff.significant


def test_one_pair_makes_no_claim() -> None:
    diff = paired_difference([50.0], [40.0])
    assert diff.mean == 10.0 and math.isnan(diff.p) and math.isnan(diff.low)
    assert not diff.tested and not diff.significant
    assert format_difference(diff) == "+10.00 (1)"
    assert format_p(diff.p) == "–"


def test_differences_without_spread() -> None:
    same = paired_difference([50.0, 52.0], [50.0, 52.0])
    assert (same.mean, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_difference([47.0, 49.0], [50.0, 52.0])
    assert (shifted.mean, shifted.low, shifted.high, shifted.p) == (-3.0, -3.0, -3.0, 0.0)
    assert shifted.significant


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no pairs"):
        paired_difference([], [])
