#!/usr/bin/env bash
# Issue 10 §6: what the fidelity changes do on the built-in dataset, before the full experiment is
# rerun. FixMatch and DTA+SNL at 5% labels, seed 0, on the synthfer CPU default schedule, with
# today's defaults: USB's strong view (RandAugment, N = 3, random magnitudes, then Cutout), EMA
# warm-up, DTA+SNL revision 2 (bias-corrected statistics, L_neg in log space). Tagged `fidelity`
# so the leaderboard shows them in a section of their own, beside (never mixed with) the
# committed runs of the same cells, which were made with the old strong view and revision 1.
# Findings: docs/fidelity.md.
#
# Rerunnable and resumable: finished runs are skipped, a killed run resumes from its checkpoint.
#
#   bash experiments/fidelity_before_after.sh [bench run arguments ...]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-bench}

"$BENCH" run --methods fixmatch,dta_snl --labels 5% --seeds 0 tag=fidelity train.threads=1 \
    launcher.parallel=2 "$@"
python experiments/diagnostics.py --dataset synthfer
"$BENCH" report
