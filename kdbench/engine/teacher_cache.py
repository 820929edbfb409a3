"""An exact cache of the frozen teacher's outputs on a fixed input set (``train.teacher_cache``).

Where a stage's batches are drawn from a fixed finite set (synth5's source split, each image as it is or flipped:
:class:`kdbench.data.loaders.FixedInputs`), the teacher, frozen and in eval mode, gives the same outputs at every
draw. They are computed once per (teacher, input set, tap, precision, device), kept in memory for the sweep and on
disk in the cache folder, and looked up by input id at every step instead of running the teacher. Augmented
streams (real data: random crops and photometric distortion) and proxy streams are new at every draw and are
never cached. Results differ from the uncached run only by float rounding (the teacher runs on other batch
compositions), and the cache is not part of a run's identity.

A file is named by a content key over the teacher's weight digest and architecture, the input set's content
digest, the tap, the precision and the device type, so a file made for other weights, inputs or settings is
never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdbench.data.loaders import FixedInputs
from kdbench.engine.runtime import Runtime
from kdbench.errors import UserError
from kdbench.method import Method, Stage
from kdbench.models.checkpoints import atomic_save
from kdbench.models.segmentor import Segmentor, SegOutput

MODES = ("auto", "on", "off")
#: bump when a change to the models or the lookup changes what a cached file would hold
FORMAT = 1
#: images per teacher forward pass while filling (fixed, so a file's contents never depend on the run's batch)
FILL_BATCH = 64

Notify = Callable[[str], None]


@dataclass
class TeacherTable:
    """The teacher's tapped outputs for every input id of a :class:`FixedInputs`: row ``i`` is input ``i``."""

    parts: dict[str, Any]
    num_prefix: int
    grid: tuple[int, int] | None

    def lookup(self, ids: torch.Tensor) -> SegOutput:
        """The outputs of one batch, as the teacher would have returned them for those inputs (taps not cached are
        absent, as the trainer drops them from a live forward pass)."""
        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, ids.to(t.device))

        def part(name: str):
            value = self.parts.get(name)
            if value is None:
                return None
            return [rows(t) for t in value] if isinstance(value, list) else rows(value)

        return SegOutput(logits=part("logits"), features=part("features") or [], tokens=part("tokens"),
                         num_prefix=self.num_prefix, blocks=part("blocks"), grid=self.grid)


def cached_stages(method: Method, data: Any, mode: str) -> dict[str, FixedInputs]:
    """The stages of ``method`` whose teacher outputs come from the cache under ``mode`` (``train.teacher_cache``),
    each with its input set: with ``auto``, every teacher-using stage whose data is a fixed set; with ``on``, the
    same, and a :class:`UserError` for a teacher-using stage whose data is not one; with ``off``, none."""
    if mode not in MODES:
        raise UserError(f"train.teacher_cache must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off" or not method.teacher_taps(method.hp):
        return {}
    plan = {}
    for stage in method.stages():
        if not stage.uses_teacher:
            continue
        inputs = data.fixed_inputs(stage.data)
        if inputs is not None:
            plan[stage.name] = inputs
        elif mode == "on":
            raise UserError(uncacheable(method.registered_name, stage))
    return plan


@dataclass
class StageTables:
    """A run's cached stages (``plan``: stage name -> input set) and how to get a table for one (``fetch``); called
    with a stage, the table of that stage or ``None`` (the teacher runs)."""

    plan: dict[str, FixedInputs]
    fetch: Callable[[FixedInputs], TeacherTable]

    def __call__(self, stage: Stage) -> TeacherTable | None:
        inputs = self.plan.get(stage.name)
        return None if inputs is None else self.fetch(inputs)

    @property
    def cached(self) -> frozenset[str]:
        return frozenset(self.plan)


def uncacheable(method: str, stage: Stage) -> str:
    """Why ``train.teacher_cache=on`` cannot hold for ``stage``: one line."""
    drawn = "proxy images, new at every draw" if stage.data == "proxy" else \
        "augmented crops, new at every draw"
    return (f"train.teacher_cache=on: stage {stage.name!r} of method {method!r} feeds the teacher {drawn}, so its "
            f"outputs cannot be cached; use train.teacher_cache=auto (caches exactly where inputs are a fixed set) "
            f"or off")


class TeacherCache:
    """The teacher tables of one sweep: in memory for the current (teacher, input set), on disk under ``folder``
    (``None``: memory only)."""

    def __init__(self, folder: Path | None, runtime: Runtime, notify: Notify = print):
        self.folder, self.runtime, self.notify = folder, runtime, notify
        self._memory: dict[str, Any] = {}
        self._layout: dict[str, tuple[int, tuple[int, int] | None]] = {}
        self._current: str | None = None

    def key(self, teacher_id: Mapping[str, Any], inputs: FixedInputs, tap: str) -> str:
        payload = {"format": FORMAT, "teacher": dict(teacher_id), "inputs": inputs.digest, "count": len(inputs),
                   "tap": tap, "precision": self.runtime.precision, "device": self.runtime.device.type}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"teacher-outputs-{key}.pt"

    def table(self, teacher: Segmentor, teacher_id: Mapping[str, Any], inputs: FixedInputs,
              taps: frozenset[str]) -> TeacherTable:
        """The table of ``taps`` for ``teacher`` (identified by ``teacher_id``: weight digest and architecture) on
        ``inputs``: from memory, from disk, or computed now (and saved)."""
        group = json.dumps([teacher_id, inputs.digest], sort_keys=True, default=str)
        if group != self._current:  # a sweep moves on benchmark by benchmark: keep one input set in memory
            self._memory.clear()
            self._layout.clear()
            self._current = group
        keys = {tap: self.key(teacher_id, inputs, tap) for tap in sorted(taps)}
        missing = [tap for tap, key in keys.items() if key not in self._memory and not self._load(key)]
        if missing:
            self._fill(teacher, inputs, {tap: keys[tap] for tap in missing})
        num_prefix, grid = self._layout[keys[sorted(taps)[0]]]
        return TeacherTable({tap: self._memory[key] for tap, key in keys.items()}, num_prefix, grid)

    def _load(self, key: str) -> bool:
        path = self.path(key)
        if path is None or not path.is_file():
            return False
        saved = torch.load(path, map_location=self.runtime.device, weights_only=True)
        self._memory[key] = saved["value"]
        self._layout[key] = (saved["num_prefix"], tuple(saved["grid"]) if saved["grid"] is not None else None)
        return True

    def _fill(self, teacher: Segmentor, inputs: FixedInputs, keys: dict[str, str]) -> None:
        """One pass of the teacher over every input, keeping the ``keys`` taps; each tap saved to its own file."""
        self.notify(f"caching the teacher's {', '.join(keys)} on {len(inputs)} fixed inputs (once; reused by every "
                    f"run on them)")
        collected: dict[str, list] = {tap: [] for tap in keys}
        out = None
        teacher.eval()
        with torch.inference_mode(), self.runtime.autocast():
            for start in range(0, len(inputs), FILL_BATCH):
                ids = torch.arange(start, min(start + FILL_BATCH, len(inputs)))
                out = teacher(inputs.batch(ids), with_logits="logits" in keys)
                for tap in keys:
                    collected[tap].append(getattr(out, tap))
        layout = (out.num_prefix, out.grid)
        for tap, key in keys.items():
            chunks = collected[tap]
            if chunks[0] is None:  # a tap this teacher does not have (blocks of a CNN)
                value = None
            elif tap in ("features", "blocks"):
                value: Any = [torch.cat([c[level] for c in chunks]).clone() for level in range(len(chunks[0]))]
            else:
                value = torch.cat(chunks).clone()
            self._memory[key], self._layout[key] = value, layout
            path = self.path(key)
            if path is not None:
                atomic_save({"value": value, "num_prefix": layout[0], "grid": layout[1]}, path)
