"""Size of a kept-weights file (``results/runs/<run>/weights.pt``) per backbone.

Builds each model as a run does (``harness.models.build_model``, 7 classes, no pretrained
weights), counts its parameters (× 4 bytes: float32), then writes one real weights file (EMA +
student, as the worker keeps them) and reports its size. Rerun: ``python
experiments/weights_size.py [backbone ...]`` (default: fer_cnn resnet18 resnet50).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness.models import build_model
from harness.saved_model import FORMAT, save_weights

MIB = 1 << 20


def measure(name: str, num_classes: int = 7) -> tuple[int, int, int]:
    """(parameters, parameter bytes of one model, bytes of the weights file)."""
    model, _ = build_model(name, num_classes)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.pt"
        meta = {"format": FORMAT, "backbone": {"name": name}}
        ema = model.state_dict()
        # A copy: torch.save stores a storage shared by both dicts once, a real run's two
        # models share none.
        student = {key: value.clone() for key, value in ema.items()}
        saved = save_weights(path, meta, ema, student)
    return params, params * 4, saved["bytes"]


def main(names: list[str]) -> None:
    print("| backbone | parameters | one model (params × 4 B) | weights.pt (EMA + student) |")
    print("|---|---:|---:|---:|")
    for name in names:
        params, one, file_bytes = measure(name)
        print(f"| {name} | {params:,} | {one / MIB:.1f} MiB | {file_bytes / MIB:.1f} MiB |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["fer_cnn", "resnet18", "resnet50"])
