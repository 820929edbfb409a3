"""Live curves (``train.tensorboard=true``): TensorBoard event files of a run, beside its ``metrics.jsonl``.

Each run writes into ``<run dir>/tensorboard/``, so ``tensorboard --logdir OUT`` shows a whole sweep, one run per
run directory. A logged training row becomes scalars under its own ``metrics.jsonl`` keys (``loss``,
``loss/<term>``, ``lr``) at the run's global step (the steps of the stages before it plus the row's step), with
``stage`` (the stage's index) at every logged step and a text entry ``stage`` at each stage's first step; the
finished run adds ``miou/<split>/<domain>`` at its step count. Nothing here imports TensorBoard until a run asks
for it, so with the setting off it costs nothing.

A resumed run appends: a new event file in the same folder, whose steps go on from the resumed step. TensorBoard
then drops what the interrupted attempt logged from that step on, as ``metrics.jsonl`` drops those lines, so no
step shows twice: its Python loader at the new file's first event (``purge_step``), its fast (Rust) loader as each
tag's steps start again below the last one seen. A run started afresh removes the folder of an earlier attempt.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kdbench.config import TrainConfig
from kdbench.engine.resume import ResumePoint
from kdbench.engine.trainer import LogFn, stage_config
from kdbench.method import Method

#: the event folder's name inside a run directory
FOLDER = "tensorboard"
#: the row keys that place a row, not values to plot
_PLACE = ("stage", "step")


def available() -> bool:
    """Whether the tensorboard package is installed (looked up, not imported)."""
    return importlib.util.find_spec("tensorboard") is not None


class Curves:
    """A training log callback that forwards every row to ``log`` and writes it to TensorBoard (``plan``: each
    stage's name and steps, in order; ``start``: the global step a resumed run goes on from, None for a fresh one).
    Flushed after every row, so a sweep can be watched as it trains."""

    def __init__(self, log: LogFn, folder: Path, plan: list[tuple[str, int]], start: int | None):
        from torch.utils.tensorboard import SummaryWriter

        if start is None:
            shutil.rmtree(folder, ignore_errors=True)
        self.log, self.plan = log, plan
        self.index = {name: i for i, (name, _) in enumerate(plan)}
        self.offsets = [sum(steps for _, steps in plan[:i]) for i in range(len(plan) + 1)]
        self.writer = SummaryWriter(str(folder), purge_step=start)

    def __call__(self, row: dict[str, Any]) -> None:
        self.log(row)
        index = self.index[row["stage"]]
        step = self.offsets[index] + row["step"]
        for key, value in row.items():
            if key not in _PLACE and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.add_scalar("stage", index, step)
        if row["step"] == 0:
            self.writer.add_text("stage", f"stage {index + 1} of {len(self.plan)}: {row['stage']} (steps {step}-"
                                          f"{self.offsets[index + 1] - 1})", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def live_curves(log: LogFn | None, run_path: Path, method: Method, cfg: TrainConfig,
                data_size: Callable[[str], int] | None = None, resume: ResumePoint | None = None
                ) -> Iterator[LogFn | None]:
    """The log callback of a run's training: ``log`` itself where ``cfg.tensorboard`` is off or ``log`` is None
    (ranks > 0), else a :class:`Curves` around it, closed on leaving (an error or a preemption included)."""
    if log is None or not cfg.tensorboard:
        yield log
        return
    plan = [(stage.name, stage_config(stage, cfg, data_size).steps) for stage in method.stages()]
    start = None
    if resume is not None:
        start = sum(steps for _, steps in plan[:resume.stage]) + resume.step
    curves = Curves(log, Path(run_path) / FOLDER, plan, start)
    try:
        yield curves
    finally:
        curves.close()


def live_scores(cfg: TrainConfig, run_path: Path, records: list[dict[str, Any]]) -> None:
    """Where ``cfg.tensorboard`` is on: a finished run's ``miou/<split>/<domain>`` at its last training step
    (``train_steps``; 0 for the teacher row), appended to its event folder; scores an earlier attempt wrote there
    (one that ended before it was marked done) are dropped by the same ``purge_step``."""
    if not cfg.tensorboard or not records:
        return
    from torch.utils.tensorboard import SummaryWriter

    step = records[0].get("train_steps", 0)
    with SummaryWriter(str(Path(run_path) / FOLDER), purge_step=step) as writer:
        for record in records:
            writer.add_scalar(f"miou/{record.get('split', 'test')}/{record['domain']}", record["miou"], step)
