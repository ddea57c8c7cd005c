"""The requeue signal is deferred to the end of a training step, with a grace period.

The real path (SLURM's signal → checkpoint at that step → submitit requeues → the run resumes)
is tested against the cluster in test_slurm_dispatch; here the handler submitit would have
installed is a recording function, so the deferral itself can be pinned in-process.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

import pytest

from harness.launchers.preemption import DeferredRequeue, requeue_signal


@pytest.fixture
def submitit_calls() -> list[int]:
    """Stand in for submitit's requeue handler (which would requeue and exit) with a recorder."""
    calls: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    sig = requeue_signal()
    previous = signal.signal(sig, handler)
    yield calls
    signal.signal(sig, previous)


def test_the_signal_is_only_recorded_until_the_step_ends(submitit_calls: list[int]) -> None:
    sig = requeue_signal()
    handler, alarm = signal.getsignal(sig), signal.getsignal(signal.SIGALRM)
    with DeferredRequeue(grace_s=60) as requeue:
        assert not requeue.requested()
        os.kill(os.getpid(), sig)
        assert requeue.requested()
        assert submitit_calls == [], "submitit must not requeue in the middle of a step"
        requeue.hand_over()  # what SlurmRun does once the engine saved the checkpoint
        assert submitit_calls == [sig]
    assert signal.getsignal(sig) is handler, "submitit's handler is back afterwards"
    assert signal.getsignal(signal.SIGALRM) is alarm


def test_without_a_step_end_within_the_grace_period_submitit_requeues_anyway(
    submitit_calls: list[int],
) -> None:
    with DeferredRequeue(grace_s=1) as requeue:
        os.kill(os.getpid(), requeue.signum)
        deadline = time.monotonic() + 10
        while not submitit_calls and time.monotonic() < deadline:
            time.sleep(0.05)
    assert submitit_calls == [requeue_signal()]


def test_the_signal_name_follows_submitit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert requeue_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert requeue_signal() == signal.SIGUSR1
