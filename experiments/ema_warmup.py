"""EMA warm-up on a short schedule (issue 10 §2): EMA-model vs student top-1 without warm-up,
with Mean Teacher's warm-up (power 1) and with timm's (power 2/3, the default).

A supervised run on a small synthfer (600 train / 300 test faces, 32 px, all labels), 600 steps
at ema.decay=0.999: a horizon longer than the run, as when a user shortens train.steps. Results
go to a scratch folder (never results/). About 15 s a run on one CPU thread.

    PYTHONPATH=. python experiments/ema_warmup.py [scratch_dir]
"""

from __future__ import annotations

import sys
import tempfile

from tabulate import tabulate

from harness.plan import build_plan
from harness.worker import run_spec

BASE = [
    "dataset.generate.train_size=600",
    "dataset.generate.test_size=300",
    "dataset.generate.image_size=48",
    "backbone=fer_cnn",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "train.steps=600",
    "train.eval_every=600",
    "train.checkpoint_every=600",
    "train.threads=1",
    "ema.decay=0.999",
]
SETTINGS = {
    "no warm-up": ["ema.warmup=false"],
    "warm-up, power 1 (Mean Teacher)": ["ema.warmup=true", "ema.warmup_power=1.0"],
    "warm-up, power 2/3 (timm, default)": ["ema.warmup=true", "ema.warmup_power=0.6667"],
}


def main() -> None:
    """Train the three settings and print EMA and student top-1 side by side."""
    scratch = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ema-warmup-")
    rows = []
    for label, overrides in SETTINGS.items():
        (spec,) = build_plan("supervised", "100%", "0", "synthfer", BASE + overrides)
        result = run_spec(spec, scratch, show_progress=False)
        ema, student = result["metrics"]["top1"], result["student_metrics"]["top1"]
        rows.append([label, f"{ema:.1f}", f"{student:.1f}", f"{ema - student:+.1f}"])
    print(tabulate(rows, headers=["EMA", "EMA top-1 %", "student top-1 %", "difference"]))


if __name__ == "__main__":
    main()
