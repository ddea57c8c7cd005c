"""Seeds paired for a comparison: the one rule the leaderboard's tables and the
paired-difference figure both use.

Two runs pair when they share the seed, the labelled split (its hash) and the pretrained
backbone file (its SHA-256: one pretraining key can name other bytes on another machine,
docs/pretraining.md); an input either run does not record does not block the pair. Several runs
of one seed (a cell mixing experiments) count as their mean, and drop out when they disagree on
an input.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.frame import same_inputs
from harness.stats import PairedDifference, paired_difference


class Pairing:
    """The per-seed values of ``metric`` in ``frame`` (:func:`~harness.report.frame.results_frame`)
    for paired comparisons, grouped once: a section asks for a paired difference per cell, and
    slicing the frame for each of them cost most of ``bench leaderboard``'s time on 10,000
    results."""

    def __init__(self, frame: pd.DataFrame, metric: str) -> None:
        rows = frame[frame[metric].notna()]
        inputs = ["split_hash", "pretrain_file"]
        # "" (not recorded) as missing, so that counting and picking skip it: vectorised, as a
        # Python function per seed cost 0.8 s a table on 10,000 results.
        grouped = rows.assign(**{c: rows[c].replace("", None) for c in inputs}).groupby(
            ["labels", "method_label", "seed"]
        )
        values = grouped[metric].mean()
        agree = (grouped[inputs].nunique() <= 1).all(axis=1)  # one recorded value, or none
        recorded = grouped[inputs].first().fillna("")
        self._cells: dict[tuple[str, str], dict[Any, tuple[float, str, str]]] = {}
        for (setting, label, seed), value, one, split, weights in zip(
            values.index,
            values,
            agree,
            recorded["split_hash"],
            recorded["pretrain_file"],
            strict=True,
        ):
            if one:  # a seed whose runs disagree on an input compares no single input: unpaired
                self._cells.setdefault((setting, label), {})[seed] = (value, split, weights)

    def paired(self, setting: str, label: str, other: str) -> PairedDifference | None:
        """``label`` minus ``other`` at ``setting`` over the seeds both ran on the same inputs;
        None when no seed pairs."""
        a = self._cells.get((setting, label), {})
        b = self._cells.get((setting, other), {})
        pairs = [
            (a[seed][0], b[seed][0])
            for seed in sorted(a.keys() & b.keys())  # the seeds' order, as a merge gives it
            if same_inputs(a[seed][1:], b[seed][1:])
        ]
        if not pairs:
            return None
        return paired_difference([x for x, _ in pairs], [y for _, y in pairs])


def paired(
    frame: pd.DataFrame, metric: str, setting: str, label: str, other: str
) -> PairedDifference | None:
    """``label`` minus ``other`` at ``setting``, paired by seed under :class:`Pairing`'s rule;
    None when no seed pairs. (Many of them on one frame: :class:`Pairing`.)"""
    return Pairing(frame, metric).paired(setting, label, other)
