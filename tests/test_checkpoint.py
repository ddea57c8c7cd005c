"""The checkpoint: one mapping of everything a run resumes from, strict about its keys."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import stop_after
from torch import nn

import harness.checkpoint as checkpoint
from harness.checkpoint import TrainState, previous_path, read_checkpoint, resume
from harness.engine import CHECKPOINT_NAME, TrainingStopped
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
    state.load_state_dict(read_checkpoint(tmp_path / "c.pt"), tmp_path / "c.pt")

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
    with pytest.raises(TrainingStopped):
        run_spec(spec, results, show_progress=False, stop_requested=stop_after(3))
    return spec, run_dir(results, spec) / CHECKPOINT_NAME


@pytest.mark.slow
def test_a_run_checkpoints_exactly_the_listed_keys_and_refuses_a_tampered_file(
    tiny: list[str], tmp_path: Path
) -> None:
    spec, path = _stopped_run(tiny, tmp_path)
    saved = read_checkpoint(path)
    legacy = dict(saved)
    assert set(saved) == KEYS
    assert saved["step"] == 3 and set(saved["streams"]) == {"labelled", "unlabelled"}

    del saved["rng"]
    torch.save(saved, path)
    with pytest.raises(ConfigError, match=r"missing keys \['rng'\]"):
        run_spec(spec, tmp_path, show_progress=False)

    # A file from before checkpoints had a header (plain torch.save of numpy RNG states, no
    # checksum) still loads, weights-only.
    torch.save(legacy, path)
    assert read_checkpoint(path)["step"] == 3


REPO = Path(__file__).resolve().parents[1]


def _state(step: int, size: int = 200_000) -> TrainState:
    """A checkpointable state whose every value says which step wrote it."""
    return TrainState(step=step, config_hash="h", weights=torch.full((size,), float(step)))


def _resumed(path: Path) -> tuple[TrainState, bool, list[str]]:
    state, warnings = _state(-1, 1), []
    return state, resume(state, path, torch.device("cpu"), warnings.append), warnings


@pytest.mark.slow
def test_a_checkpoint_write_survives_a_kill_at_any_point(tmp_path: Path) -> None:
    # A real process saving checkpoints as fast as it can, killed by SIGKILL (as SLURM does at
    # the time limit) at arbitrary moments: a whole checkpoint of a recent step always resumes.
    path = tmp_path / "run" / CHECKPOINT_NAME
    child = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from harness.checkpoint import TrainState\n"
        "path, step = Path(sys.argv[1]), int(sys.argv[2])\n"
        "while True:\n"
        "    TrainState(step=step, config_hash='h',\n"
        "               weights=torch.full((200_000,), float(step))).save(path)\n"
        "    print(step, flush=True)\n"
        "    step += 1\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    last = -1
    for kill in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", child, str(path), str(last + 1)],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            for _ in range(2 + kill):  # a different moment of a save each time
                saved = int(proc.stdout.readline())
            time.sleep(0.001 * kill)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state, resumed, warnings = _resumed(path)
        # Killed between moving the last checkpoint aside and publishing the new one, the
        # run resumes from the previous one (and says so); nothing is ever damaged.
        assert resumed and not [w for w in warnings if "damaged" in w], warnings
        assert state["step"] >= saved - 1, "the newest whole checkpoint (or the one before it)"
        assert torch.equal(state["weights"], torch.full((200_000,), float(state["step"])))
        last = state["step"]
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) <= 6, leftovers  # at most one per kill, never read as a checkpoint


class _Planted:
    """A pickle that runs code when unpickled: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("header", [True, False], ids=["with-checksum", "plain-torch-file"])
def test_a_planted_checkpoint_runs_no_code_on_resume(
    header: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = tmp_path / CHECKPOINT_NAME, tmp_path / "ran"
    content = {**_state(5).state_dict(), "payload": _Planted(marker)}
    if header:  # a well-formed file with a matching checksum: the checksum is no defence
        monkeypatch.setattr(checkpoint, "to_safe", lambda value: value)
        checkpoint.save_checkpoint(content, path)
    else:
        torch.save(content, path)
    state, resumed, warnings = _resumed(path)
    assert not marker.exists(), "unpickling the planted file ran its code"
    assert not resumed and state["step"] == -1
    assert "weights-only" in warnings[0] and "restarts from step 0" in warnings[-1]
    assert not path.exists(), "set aside, so a requeued job does not trip over it again"
    assert [p.name.split("-")[0] for p in tmp_path.glob("*.damaged-*")] == ["checkpoint.pt.damaged"]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_checkpoint_resumes_from_the_previous_one(damage: str, tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    _state(10).save(path)
    _state(20).save(path)
    assert previous_path(path).is_file()
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2 :]
    else:  # a flipped byte inside a tensor: torch.load alone would read it silently
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    state, resumed, warnings = _resumed(path)
    assert resumed and state["step"] == 10
    assert torch.equal(state["weights"], torch.full((200_000,), 10.0))
    assert "damaged" in warnings[0] and "previous checkpoint" in warnings[1]
    # Both damaged: a restart from step 0 with a warning, once; then a clean start.
    previous_path(path).write_bytes(b"\0" * 100)
    _state(30).save(path)
    path.write_bytes(path.read_bytes()[:50])
    state, resumed, warnings = _resumed(path)
    assert not resumed and "restarts from step 0" in warnings[-1]
    assert _resumed(path)[1:] == (False, []), "no crash loop: the next attempt starts clean"


def test_a_non_finite_loss_fails_the_run_naming_the_step_and_keeps_the_last_checkpoint(
    tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from dataclasses import replace

    from harness.engine import NonFiniteLossError
    from harness.failure import FAILED_NAME
    from methods.supervised import Supervised

    real = Supervised.training_loss

    def nan_from_step_12(self: Supervised, ctx: object) -> object:
        out = real(self, ctx)
        return replace(out, loss=out.loss * float("nan")) if ctx.step >= 12 else out

    monkeypatch.setattr(Supervised, "training_loss", nan_from_step_12)
    (spec,) = build_plan("supervised", "25%", "0", "synthfer", tiny)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 12"):
        run_spec(spec, tmp_path, show_progress=False)
    work = run_dir(tmp_path, spec)
    failure = json.loads((work / FAILED_NAME).read_text())
    assert failure["step"] == 12 and "loss is nan at step 12" in failure["error"]
    saved = read_checkpoint(work / CHECKPOINT_NAME)  # whole, from before the bad step
    assert saved["step"] == 10
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
