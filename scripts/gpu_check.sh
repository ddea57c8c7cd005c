#!/usr/bin/env bash
# The GPU check in one command, on a node with one CUDA device (issue 13):
#   1. install into .venv exactly as the README's test command does;
#   2. run every test marked `gpu` (bf16 autocast, channels_last, train.compile=true, exact
#      resume on CUDA, batched augmentation CUDA = CPU), in any file under tests/;
#   3. run the throughput benchmark on CUDA, which writes docs/performance/throughput-cuda.json
#      and regenerates docs/performance.md with the GPU section.
# Budget: under 8 minutes on one GPU (install ~1.5 min, tests, benchmark). Commit the two files
# of step 3 afterwards. Environment: SKIP_INSTALL=1 reuses an existing .venv; PYTHON picks the
# interpreter for the venv; BENCH_ARGS adds flags to the benchmark (e.g. "--steps 20").
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
phase() { echo "== gpu_check [$((SECONDS - started)) s]: $*"; }

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  phase "installing into .venv"
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 -e '.[test]'
fi
.venv/bin/python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device is visible (torch %s, built for CUDA %s): run it on a GPU node"
             % (torch.__version__, torch.version.cuda))
print("gpu_check: device", torch.cuda.get_device_name(0), "| torch", torch.__version__,
      "| CUDA", torch.version.cuda)
PY

# cuBLAS reads this at its first handle: deterministic GEMMs for the exact-resume test.
export CUBLAS_WORKSPACE_CONFIG=:4096:8
phase "tests marked gpu"
# -rs lists skips: on a GPU node none is expected, and a skip here would hide a missed check.
.venv/bin/python -m pytest -m gpu -q -rs -p no:cacheprovider

phase "throughput benchmark on CUDA"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
.venv/bin/python benchmarks/throughput.py --device cuda ${BENCH_ARGS:-}

phase "done: figures in docs/performance/throughput-cuda.json and docs/performance.md"
