#!/usr/bin/env bash
# The methods experiment on the built-in dataset (issue 3): every method at a low (5%) and a
# medium (25%) label setting, plus the DTA+SNL ablation rows at 5% and the fully supervised
# (100%) reference, over seeds 0, 1, 2, on the synthfer CPU default schedule (fer_cnn at 48 px,
# 1,200 steps, batch 64 + 64 unlabelled). Findings: docs/methods_experiment_from_scratch.md.
#
# Rerunnable and resumable: finished runs are skipped, a killed run resumes from its checkpoint.
# Seeds go in the outer loop so that an interrupted pass still leaves one complete seed of every
# row. Extra arguments go to every `bench run` (e.g. `--launcher slurm launcher.partition=cpu`,
# or `launcher.parallel=2`, which on 2 cores finishes two runs per ~16 minutes).
#
#   bash experiments/synthfer_ssl.sh [bench run arguments ...]
#   bench leaderboard          # regenerate results/leaderboard.md
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-bench}

METHODS="supervised,fixmatch,flexmatch,freematch,adacm,dta_snl"
# docs/methods/dta_snl.md's ablation rows; FixMatch ("none of the four") is already in METHODS. Also
# without class-balanced labelled batches, the one default that is not among the four.
ABLATIONS="dta_snl[dta=false],dta_snl[snl=false],dta_snl[local_attention=false],dta_snl[feature_drop_p=0]"
ABLATIONS="$ABLATIONS,dta_snl[balanced_sampling=false]"

for seed in 0 1 2; do
  "$BENCH" run --methods "$METHODS,$ABLATIONS" --labels 5% --seeds "$seed" "$@"
  "$BENCH" run --methods "$METHODS" --labels 25% --seeds "$seed" "$@"
done
# The fully supervised reference row (protocols.md): the ceiling every method is measured against.
"$BENCH" run --methods supervised --labels 100% --seeds 0,1,2 "$@"
"$BENCH" report
