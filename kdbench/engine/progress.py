"""Progress of a training loop: tqdm's bar (step, rate, ETA) on a terminal, a one-line heartbeat in logs.

tqdm hides itself where stderr is not a terminal (a log file, a local worker's or a SLURM job's output), which left
a sweep silent for minutes while a teacher pretrained or a run trained. There, every ``KDBENCH_HEARTBEAT_S`` seconds
(default 60; 0 turns it off) one line says where the loop is: which run and stage, step, rate and ETA.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

HEARTBEAT_ENV = "KDBENCH_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 60.0

_run_label: contextvars.ContextVar[str] = contextvars.ContextVar("kdbench_run_label", default="")


@contextlib.contextmanager
def run_label(label: str) -> Iterator[None]:
    """Heartbeat lines inside this block name the run ``label`` (``benchmark/pair/method seed s``)."""
    token = _run_label.set(label)
    try:
        yield
    finally:
        _run_label.reset(token)


def heartbeat_seconds() -> float:
    """The heartbeat interval from ``KDBENCH_HEARTBEAT_S``; a value that is not a number is the default."""
    try:
        return max(0.0, float(os.environ.get(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)))
    except ValueError:
        return DEFAULT_HEARTBEAT_S


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def heartbeat_line(desc: str, done: int, start: int, total: int, elapsed: float) -> str:
    """``<run> <desc>: step 120/300 (40%), 3.1 steps/s, ETA 58s`` for ``done`` steps of ``total``, ``start`` of
    them done before this process began (a resumed run), after ``elapsed`` seconds."""
    label = _run_label.get()
    rate = (done - start) / elapsed if elapsed > 0 else 0.0
    eta = f", ETA {_duration((total - done) / rate)}" if rate > 0 else ""
    percent = 100 * done // max(1, total)
    return f"{label + ' ' if label else ''}{desc}: step {done}/{total} ({percent}%), {rate:.2g} steps/s{eta}"


def progress_steps(start: int, total: int, desc: str, write: Callable[[str], None] | None = None,
                   clock: Callable[[], float] = time.monotonic, terminal: bool | None = None) -> Iterator[int]:
    """Steps ``start`` .. ``total - 1``, shown as a tqdm bar on a terminal or else as heartbeat lines through
    ``write`` (default: print, flushed). ``terminal`` overrides the check of stderr."""
    if terminal is None:
        terminal = sys.stderr.isatty()
    if terminal:
        yield from tqdm(range(start, total), desc=desc, leave=False, initial=start, total=total)
        return
    every = heartbeat_seconds()
    write = write or (lambda line: print(line, flush=True))
    began = last = clock()
    for step in range(start, total):
        yield step
        now = clock()
        if every and now - last >= every and step + 1 < total:
            write(heartbeat_line(desc, step + 1, start, total, now - began))
            last = now
