"""Paired statistics over seeds: the difference between two methods on the same labelled splits.

Every seed draws one labelled split per (dataset, label setting), shared by every method, so
two methods' results at one seed are a matched pair and their comparison is paired: the
per-seed differences ``d_i = a_i - b_i`` carry the evidence, with the split-to-split
variation (which is most of a low-label setting's spread) cancelled out.

The test is the **paired t-test** (``scipy.stats.ttest_rel``, two-sided) and the interval its
Student-t confidence interval ``mean(d) ± t_{n-1, 0.975} · sd(d) / √n``. Why not Wilcoxon's
signed-rank test: with the 3–5 seeds a benchmark affords, its exact two-sided p-value cannot go
below 2 / 2ⁿ (0.25 at n = 3, 0.125 at n = 4, 0.0625 at n = 5), so it could never report a
difference at the 5 % level; the t-test can, at the price of assuming roughly normal
differences — with n = 3 its interval is wide (t₂ = 4.30), which is the honest answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05  # two-sided significance level; the intervals are the matching 95 %


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over ``n`` matched pairs: mean, the 95 % t interval and the paired t-test's
    two-sided p. With one pair there is no spread: ``low``, ``high`` and ``p`` are NaN."""

    n: int
    mean: float
    low: float
    high: float
    p: float

    @property
    def tested(self) -> bool:
        """Whether there were enough pairs (two) for an interval and a p-value."""
        return self.n >= 2 and not math.isnan(self.p)

    @property
    def significant(self) -> bool:
        """p < :data:`ALPHA` (two-sided); never for an untested difference."""
        return self.tested and self.p < ALPHA


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """The paired comparison of ``a`` and ``b`` (``a[i]`` and ``b[i]`` from the same seed).

    Differences without spread (every ``a[i] - b[i]`` equal, n ≥ 2) have a zero-width
    interval and p = 1 when they are zero, p = 0 otherwise (the t statistic is infinite);
    scipy would warn and return NaN for the former.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if not a:
        raise ValueError("no pairs to compare")
    differences = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(differences)
    mean = sum(differences) / n
    if n == 1:
        return PairedDifference(1, mean, math.nan, math.nan, math.nan)
    if max(differences) - min(differences) <= 1e-12 * max(1.0, abs(mean)):
        return PairedDifference(n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    from scipy import stats  # imported here: scipy costs ~0.3 s, and only reports need it

    test = stats.ttest_rel(a, b)
    interval = test.confidence_interval(1 - ALPHA)
    return PairedDifference(n, mean, float(interval.low), float(interval.high), float(test.pvalue))


POWER = 0.8  # the power a planned grid should have to separate an observed difference
MAX_SEEDS = 100  # beyond this the answer is "more than 100"


def seeds_to_separate(diff: PairedDifference, power: float = POWER) -> int | None:
    """How many seeds a paired t-test (two-sided, :data:`ALPHA`) needs to separate a true
    difference of ``diff.mean`` with the spread of the observed per-seed differences, with
    probability ``power``: the smallest n whose noncentral-t power reaches it. None when the
    difference is untested, zero or has no spread; ``MAX_SEEDS + 1`` when more than
    :data:`MAX_SEEDS` would be needed. A planning figure from n pairs' own spread, itself
    uncertain with few seeds."""
    if not diff.tested or diff.mean == 0 or diff.high == diff.low:
        return None
    from scipy import stats

    half = (diff.high - diff.low) / 2
    sd = half * math.sqrt(diff.n) / stats.t.ppf(1 - ALPHA / 2, diff.n - 1)
    effect = abs(diff.mean) / sd
    for n in range(2, MAX_SEEDS + 1):
        critical = stats.t.ppf(1 - ALPHA / 2, n - 1)
        shift = effect * math.sqrt(n)
        reached = stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)
        if reached >= power:
            return n
    return MAX_SEEDS + 1


def format_p(p: float) -> str:
    """``p=0.16``, ``p=0.004``, ``p<0.001``; ``–`` when untested."""
    if math.isnan(p):
        return "–"
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.2f}" if p >= 0.01 else f"p={p:.3f}"


def format_difference(diff: PairedDifference) -> str:
    """``+7.50 [-7.14, 22.14] p=0.16 (3)``; ``+2.40 (1)`` with one pair (no interval)."""
    if not diff.tested:
        return f"{diff.mean:+.2f} ({diff.n})"
    return f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}] {format_p(diff.p)} ({diff.n})"
