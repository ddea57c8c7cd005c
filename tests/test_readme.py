"""The README's quick start and CI run the same test command (.ci/run says so)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    """The lines of the code blocks before the user guide."""
    quick_start = (ROOT / "README.md").read_text().split("## User guide")[0]
    lines, inside = [], False
    for line in quick_start.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.strip())
    return lines


def test_ci_runs_the_readme_test_command() -> None:
    (test_command,) = [line for line in _quick_start_commands() if "pytest" in line]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_quick_start_runs_bench_on_the_built_in_dataset() -> None:
    (main_job,) = [line for line in _quick_start_commands() if "bench run" in line]
    assert "pip install" in main_job and "--dataset" not in main_job  # synthfer by default


def test_the_readme_method_example_trains_without_warnings() -> None:
    """The "Adding a method" snippet, run as written: one step gives a finite loss, and its
    diagnostics are plain numbers taken without torch's requires-grad warning."""
    import warnings

    import torch

    from harness import registry
    from harness.method import LabelledBatch, MethodSetup, StepContext, UnlabelledBatch
    from harness.models import build_model

    text = (ROOT / "README.md").read_text()
    source = text.split("# methods/mymethod.py\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {"__name__": "readme_mymethod"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exec(compile(source, "README.md", "exec"), namespace)
            method = registry._CLASSES["mymethod"](
                {"name": "mymethod"}, MethodSetup(3, 8, torch.tensor([0, 1, 2]), 10)
            )
            model, _ = build_model("fer_cnn", 3)
            images = torch.randn(3, 3, 32, 32)
            batch = UnlabelledBatch(images, images.flip(-1), torch.arange(3), torch.arange(3))
            ctx = StepContext(model, model, LabelledBatch(images, torch.arange(3)), batch, 0, 10, 3)
            out = method.training_loss(ctx)
    finally:
        registry._CLASSES.pop("mymethod", None)
        registry._REGISTRY.pop("mymethod", None)
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    assert isinstance(out.diagnostics["loss_sup"], float)
