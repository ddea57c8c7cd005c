#!/usr/bin/env bash
# The methods experiment under the field's protocol (issue 14): face-recognition pretraining on
# synthetic identities (`+pretrain=synth_faces`, docs/pretraining.md), then semi-supervised FER on
# synthfer. Findings and the reasons for the schedule: docs/methods_experiment.md.
#
#   1. The supervised baseline at 5%, 10%, 25%, 100% labels, with and without the pretraining
#      (tags `synth-faces` and `from-scratch`): what the pretraining is worth on its own.
#   2. The six methods at 5%, 10%, 25% labels, the DTA+SNL ablations at 5%, supervised at 100%,
#      all pretrained (tag `synth-faces`).
#   3. FixMatch and DTA+SNL at 5% from random weights (tag `from-scratch`): what the pretraining
#      changes for a semi-supervised method.
#
# One protocol for every run, configs/experiment/synth_faces.yaml (pretraining, 800 steps, mu = 1,
# one torch thread), chosen from measured step costs to fit about 8 CPU-hours on a 2-core machine
# with two runs at a time; `~pretrain` drops the pretraining for the from-scratch baseline.
#
# Rerunnable and resumable: finished runs are skipped, a killed run resumes from its checkpoint.
# Seeds go in the outer loop, so an interrupted pass still leaves whole seeds of every row. Extra
# arguments go to every `bench run` (e.g. `--launcher slurm launcher.partition=cpu`).
#
#   bash experiments/synthfer_pretrained.sh [bench run arguments ...]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-bench}

PROTOCOL=(+experiment=synth_faces launcher.parallel=2)

METHODS="supervised,fixmatch,flexmatch,freematch,adacm,dta_snl"
# docs/methods/dta_snl.md's ablation rows, and revision 1's statistics (no bias correction).
ABLATIONS="dta_snl[dta=false],dta_snl[snl=false],dta_snl[local_attention=false]"
ABLATIONS="$ABLATIONS,dta_snl[feature_drop_p=0],dta_snl[bias_correction=false]"

# 1. Supervised, with and without the pretraining.
for seed in 0 1 2; do
  "$BENCH" run --methods supervised --labels 5%,10%,25%,100% --seeds "$seed" \
      "${PROTOCOL[@]}" "$@"
  "$BENCH" run --methods supervised --labels 5%,10%,25%,100% --seeds "$seed" \
      "${PROTOCOL[@]}" '~pretrain' tag=from-scratch "$@"
done
# 2. The methods and the ablations, pretrained.
for seed in 0 1 2; do
  "$BENCH" run --methods "$METHODS,$ABLATIONS" --labels 5% --seeds "$seed" \
      "${PROTOCOL[@]}" "$@"
  "$BENCH" run --methods "$METHODS" --labels 10%,25% --seeds "$seed" \
      "${PROTOCOL[@]}" "$@"
done
# 3. What the pretraining changes for the semi-supervised methods: the reference method and ours
#    from random weights at 5%, on the same schedule (6 runs beyond the grid's budget).
"$BENCH" run --methods fixmatch,dta_snl --labels 5% --seeds 0,1,2 \
    "${PROTOCOL[@]}" '~pretrain' tag=from-scratch "$@"
python experiments/diagnostics.py --dataset synthfer
"$BENCH" report
