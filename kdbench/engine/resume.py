"""Crash-safe training: a run's whole training state, saved atomically every ``train.checkpoint_every`` steps and at
every stage end, so the same command after a crash (or ``kill -9``) goes on from the last save.

The state is the method (student and the method's own modules), the optimiser and gradient scaler of the current
stage, the finished stages' results, the batch stream's position, every random number generator (torch, CUDA,
numpy, Python), the number of ``metrics.jsonl`` lines written so far (later ones are dropped on resume, so no
logged step appears twice) and the seconds trained so far. On CPU a resumed run ends with the same records,
bit for bit, as one never interrupted (``tests/test_resume.py``).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdbench.models.checkpoints import atomic_save
from kdbench.results import RESUME


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class ResumePoint:
    """Where an interrupted run goes on: stage ``stage`` (an index into ``Method.stages()``) at step ``step``."""

    stage: int
    step: int
    state: dict[str, Any]


class RunCheckpoint:
    """Saves and finds a run's resume state in its run directory; ``every`` steps (0: only at stage ends). With
    several processes every one reads it and only rank 0 (``writer``) writes it."""

    def __init__(self, run_path: Path, every: int, writer: bool = True):
        self.path = Path(run_path) / RESUME
        self.every, self.writer = every, writer

    def due(self, steps_done: int, steps: int) -> bool:
        return self.every > 0 and steps_done % self.every == 0 and steps_done < steps

    def save(self, state: dict[str, Any]) -> None:
        if self.writer:
            atomic_save({**state, "rng": rng_state()}, self.path)

    def load(self) -> ResumePoint | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # written by another version, say: start the run again rather than stop
            warnings.warn(f"{self.path}: unreadable resume state ({type(exc).__name__}); the run starts over",
                          stacklevel=2)
            self.remove()
            return None
        return ResumePoint(state["stage"], state["step"], state)

    def remove(self) -> None:
        if self.writer:
            self.path.unlink(missing_ok=True)
