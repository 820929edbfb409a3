"""Stopping on a signal without losing work: SIGTERM (SLURM's preemption, ``kill``), SIGINT (Ctrl-C) and SIGUSR2
(submitit's "time is nearly up" signal on SLURM) are caught while a sweep runs. The training loop then finishes
the step it is in, saves the run's resume state at once (``kdbench.engine.resume``, whatever
``train.checkpoint_every`` says) and raises :class:`Preempted`; the CLI prints one line and exits with 128 + the
signal's number, and the same command resumes the run. A second Ctrl-C interrupts at once.

On SLURM, submitit has its own SIGUSR2 handler, which checkpoints the job's callable and requeues the job. Ours
runs first and keeps the one it replaced: once the state is saved, :func:`hand_over` calls it, so the job is
requeued and resumes by itself from the saved state.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)

_received: list[signal.Signals] = []
_previous: dict[int, Any] = {}


class Preempted(Exception):
    """A run stopped on a signal after saving its resume state."""

    def __init__(self, signum: int, where: str = ""):
        self.signum, self.where = signum, where
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"{self.signal_name} received{f' {where}' if where else ''}; stopped, and the same command "
                         "again resumes")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> int | None:
    """The signal a stop was asked for by, if any."""
    return int(_received[0]) if _received else None


def _handler(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT and _received:  # a second Ctrl-C: stop now
        raise KeyboardInterrupt
    if not _received:
        _received.append(signal.Signals(signum))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside this block SIGTERM, SIGINT and SIGUSR2 ask for a stop (see :func:`requested`) instead of ending the
    process; the handlers it replaced come back after. Outside the main thread (where Python allows no signal
    handlers), or inside another such block, it does nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is _handler:
        yield  # no handlers here, or ours already (an enclosing block keeps the ones to hand over to)
        return
    _received.clear()
    replaced = {sig: signal.signal(sig, _handler) for sig in CAUGHT}
    _previous.update(replaced)
    try:
        yield
    finally:
        for sig, handler in replaced.items():
            signal.signal(sig, handler)
        _previous.clear()
        _received.clear()


def hand_over(exc: Preempted) -> None:
    """After a stop on SIGUSR2, call the SIGUSR2 handler ours replaced (submitit's checkpoint-and-requeue on
    SLURM), if it is a function; otherwise do nothing."""
    previous: Callable[[int, FrameType | None], Any] | Any = _previous.get(signal.SIGUSR2)
    if exc.signum == signal.SIGUSR2 and callable(previous):
        previous(signal.SIGUSR2, None)
