"""Training throughput: bare model step vs data path vs the engine's step (issue 13).

    python benchmarks/throughput.py --device cpu --threads 1
    python benchmarks/throughput.py --device cuda          # what scripts/gpu_check.sh runs

Writes docs/performance/throughput-<cpu|cuda>.json and regenerates docs/performance.md. The
measurement lives in :mod:`harness.throughput` so that an installed ``bench speed`` runs it too.
"""

import sys

from harness.throughput import main

if __name__ == "__main__":
    sys.exit(main())
