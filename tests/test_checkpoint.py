"""The checkpoint: one mapping of everything a run resumes from, strict about its keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.engine import CHECKPOINT_NAME, TrainingStopped, TrainState
from harness.errors import ConfigError
from harness.plan import build_plan
from harness.store import run_dir
from harness.worker import run_spec

# The checkpoint's keys since the first release: a file with these keys resumes.
KEYS = {
    "step", "config_hash", "model", "ema", "optimizer", "scheduler", "streams", "method",
    "diagnostics", "rng", "elapsed", "images_seen", "evaluations",
}  # fmt: skip


def _trained_linear() -> tuple[nn.Linear, torch.optim.SGD]:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_stateful_values_round_trip_and_plain_values_are_replaced(tmp_path: Path) -> None:
    model, optimizer = _trained_linear()
    TrainState(step=7, model=model, optimizer=optimizer, evaluations=[{"step": 5}]).save(
        tmp_path / "c.pt"
    )
    fresh_model = nn.Linear(3, 2)
    fresh_optimizer = torch.optim.SGD(fresh_model.parameters(), lr=0.1, momentum=0.9)
    state = TrainState(step=0, model=fresh_model, optimizer=fresh_optimizer, evaluations=[])
    state.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=False), tmp_path / "c.pt")

    assert state["step"] == 7 and state["evaluations"] == [{"step": 5}]
    assert state["model"] is fresh_model, "stateful objects are loaded in place, not replaced"
    torch.testing.assert_close(fresh_model.state_dict(), model.state_dict(), rtol=0, atol=0)
    momentum = fresh_optimizer.state_dict()["state"][0]["momentum_buffer"]
    torch.testing.assert_close(momentum, optimizer.state_dict()["state"][0]["momentum_buffer"])


@pytest.mark.parametrize(("change", "named"), [("drop", "missing keys ['step']"),
                                               ("add", "unknown keys ['extra']")])  # fmt: skip
def test_a_missing_or_extra_key_is_refused_before_anything_loads(
    change: str, named: str, tmp_path: Path
) -> None:
    model, optimizer = _trained_linear()
    saved = TrainState(step=7, model=model, optimizer=optimizer).state_dict()
    if change == "drop":
        del saved["step"]
    else:
        saved["extra"] = 1
    fresh = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    state = TrainState(step=0, model=fresh, optimizer=torch.optim.SGD(fresh.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match=r"c\.pt does not match .*" + re.escape(named)):
        state.load_state_dict(saved, tmp_path / "c.pt")
    torch.testing.assert_close(fresh.state_dict(), before, rtol=0, atol=0)


def _stopped_run(tiny: list[str], results: Path) -> tuple[object, Path]:
    """A fixmatch run stopped after 3 steps: its spec and its checkpoint."""
    (spec,) = build_plan("fixmatch", "25%", "0", "synthfer", tiny)
    asked: list[bool] = []

    def after_three_steps() -> bool:
        asked.append(True)
        return len(asked) >= 3

    with pytest.raises(TrainingStopped):
        run_spec(spec, results, show_progress=False, stop_requested=after_three_steps)
    return spec, run_dir(results, spec) / CHECKPOINT_NAME


def test_a_run_checkpoints_exactly_the_listed_keys_and_refuses_a_tampered_file(
    tiny: list[str], tmp_path: Path
) -> None:
    spec, path = _stopped_run(tiny, tmp_path)
    saved = torch.load(path, weights_only=False)
    assert set(saved) == KEYS
    assert saved["step"] == 3 and set(saved["streams"]) == {"labelled", "unlabelled"}

    del saved["rng"]
    torch.save(saved, path)
    with pytest.raises(ConfigError, match=r"missing keys \['rng'\]"):
        run_spec(spec, tmp_path, show_progress=False)

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"cannot read checkpoint .*checkpoint\.pt"):
        run_spec(spec, tmp_path, show_progress=False)
