"""Side-by-side timing for benchmarks: arms timed in turn, round after round, in one process, so a drift in
machine load (another process, thermal throttling) falls on every arm alike and their ratio stays fair."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from kdbench.engine.flops import synchronise


def alternate(arms: dict[str, Callable[[], object]], rounds: int,
              device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds of each call of each arm: one call of every arm per round, in order, after one untimed warm-up
    call of each (on a GPU ``device``, its queue is drained around every call)."""
    device = device or torch.device("cpu")
    for run in arms.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(rounds):
        for name, run in arms.items():
            synchronise(device)
            start = time.perf_counter()
            run()
            synchronise(device)
            times[name].append(time.perf_counter() - start)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}
