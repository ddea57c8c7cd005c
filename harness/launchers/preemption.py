"""Save a checkpoint at the signal that ends a SLURM job early, then let submitit requeue it.

SLURM sends USR2 ``signal_delay_s`` before a job's time limit (and on preemption, where the
cluster is set up to signal). submitit's handler answers by requeueing the job and exiting at
once, wherever the signal landed: in the middle of an optimiser step nothing can be saved
consistently, so the requeued job would lose every step since the last periodic checkpoint.
:class:`DeferredRequeue` takes the signal instead and only records it; the engine sees the
request after the step in progress, saves a checkpoint at that step and raises
:class:`~harness.engine.TrainingStopped`, and then submitit's own handler runs (``checkpoint()``,
requeue, exit). If no step ends within ``grace_s`` (a long evaluation, say), submitit's
handler runs anyway and the run resumes from its last periodic checkpoint instead.
"""

from __future__ import annotations

import os
import signal
from types import FrameType, TracebackType
from typing import Any

# The variable submitit reads to choose its requeue signal (USR2 unless set).
_SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def requeue_signal() -> signal.Signals:
    """The signal submitit's requeue handler is bound to in this job."""
    return signal.Signals["SIG" + os.environ.get(_SUBMITIT_SIGNAL_ENV, "USR2")]


class DeferredRequeue:
    """Context manager: while active, the requeue signal only sets :meth:`requested`.

    On exit the previous handlers are back and a pending grace alarm is cancelled.
    """

    def __init__(self, grace_s: int) -> None:
        self.grace_s = max(1, int(grace_s))
        self.signum = requeue_signal()
        self._received = False
        self._submitit_handler: Any = None
        self._previous_alarm: Any = None

    def __enter__(self) -> DeferredRequeue:
        self._submitit_handler = signal.getsignal(self.signum)
        self._previous_alarm = signal.getsignal(signal.SIGALRM)
        signal.signal(self.signum, self._record)
        signal.signal(signal.SIGALRM, self._grace_over)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._previous_alarm)
        signal.signal(self.signum, self._submitit_handler)

    def requested(self) -> bool:
        """True once the requeue signal has arrived: the engine stops after this step."""
        return self._received

    def hand_over(self) -> None:
        """Run submitit's handler now (it requeues the job and exits); the checkpoint is saved."""
        signal.alarm(0)
        if callable(self._submitit_handler):
            self._submitit_handler(self.signum, None)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if not self._received:
            self._received = True
            signal.alarm(self.grace_s)

    def _grace_over(self, signum: int, frame: FrameType | None) -> None:
        self.hand_over()
