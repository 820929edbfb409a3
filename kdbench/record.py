"""A run's result records: one :class:`Record` per evaluated (domain, split), written by the launcher into
``records.jsonl`` and read back by the report.

The schema is versioned. Records written before it existed (schema 1: no ``schema`` field) lack fields added later;
:func:`upgrade` is the one place that fills them in, so the report reads every record as the current schema and
never guesses a missing field.

Reference rows are declared by role, not by name: ``reference`` is ``"teacher"`` for the teacher's own row (the
pseudo-method :data:`TEACHER`, evaluated, never trained by the sweep), ``"baseline"`` for the no-distillation
baseline every Δ column is measured against (a method whose class sets ``Method.reference = "baseline"``),
``"reference"`` for any other row shown for comparison but never ranked (a plugin's frozen foundation model of the
student's size, say), and ``""`` for the methods the table compares.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
#: the pseudo-method of the teacher's own row
TEACHER = "teacher"
#: reference roles a row may have; "" is a compared method
REFERENCE_ROLES = {
    "teacher": "the teacher's own row: an upper reference, never ranked",
    "baseline": "the no-distillation baseline every Δ column is measured against; never ranked against itself",
    "reference": "shown for comparison, never ranked (not marked best, never a best baseline)",
}


@dataclass(frozen=True, kw_only=True)
class Record:
    """One run's score on one (domain, split), with everything that says how the run was made. The fields without
    a default are what makes a record a record; a field with a default may be absent from a record written before
    it existed, and its default is what that absence meant (no trial: trial 0; no split: the test split)."""

    suite: str
    benchmark: str
    pair: str
    pair_kind: str = ""
    teacher: str = ""
    student: str = ""
    method: str
    #: the row's reference role (:data:`REFERENCE_ROLES`), "" for a compared method
    reference: str = ""
    hparams: dict[str, Any] = field(default_factory=dict)
    trial: int = 0
    seed: int
    protocol: str = ""
    protocol_caption: str = ""
    checkpoint: str = "last"
    train_steps: int = 0
    #: per training stage: name, steps, wall_s, teacher_cached (where recorded)
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: the method's own trainable parameters (adapters, projectors); None: not counted when the run was recorded
    extra_params: int | None = None
    student_params: int | None = None
    #: GFLOPs of one forward of the row's model (the teacher in its own row) on one image of ``flops_input`` pixels
    #: square, fp32 (``kdbench.engine.cost``); None: not counted when the run was recorded
    gflops: float | None = None
    #: the side of the square input ``gflops`` was counted on: the image (whole-image) or one window (sliding)
    flops_input: int | None = None
    #: images the training stages drew per wall second of them; None: the teacher row, or not measured
    train_images_per_s: float | None = None
    wall_s: float | None = None
    train_wall_s: float | None = None
    prepare_s: float | None = None
    #: per real labelled split, images left out for want of a label file (``data.missing_labels=skip``)
    images_without_labels: dict[str, int] = field(default_factory=dict)
    teacher_digest: str | None = None
    student_init_digest: str | None = None
    peak_memory_mb: float | None = None
    peak_memory_kind: str = ""
    device: str = ""
    precision: str = ""
    threads: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    run_dir: str = ""
    created: str = ""
    domain: str
    #: the domain's role in the benchmark: "source" or "target"
    role: str
    #: "test" (the tables) or "val" (model selection only)
    split: str = "test"
    miou: float
    per_class_iou: dict[str, float] = field(default_factory=dict)
    images: int | None = None
    #: wall seconds spent scoring this (domain, split): loading, inference and the metric; None before it was recorded
    eval_s: float | None = None
    schema: int = SCHEMA_VERSION
    #: fields of a newer writer this version does not know, kept as they were
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.reference and self.reference not in REFERENCE_ROLES:
            raise ValueError(f"record reference {self.reference!r}: must be '' or one of {sorted(REFERENCE_ROLES)}")
        if self.role not in ("source", "target"):
            raise ValueError(f"record role {self.role!r}: must be 'source' or 'target'")

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``records.jsonl`` (field order as declared)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """A record read from ``records.jsonl``, of any schema version (:func:`upgrade`); a required field missing
        is a ``ValueError`` naming it."""
        data = upgrade(data)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        missing = [name for name, f in fields.items() if name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"record lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in fields},
                   extra={k: v for k, v in data.items() if k not in fields})


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A raw record brought to :data:`SCHEMA_VERSION`. Schema 1 (no ``schema`` field) records lack fields added
    over time, which read as their defaults (:class:`Record`), and name no ``reference`` role, which comes from the
    method's class (:func:`reference_of`). A record of a newer schema than this code is refused."""
    version = data.get("schema", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"record schema {version!r} is newer than this kdbench reads ({SCHEMA_VERSION}); "
                         "upgrade kdbench")
    if version == SCHEMA_VERSION:
        return data
    return {**data, "reference": reference_of(str(data.get("method", ""))), "schema": SCHEMA_VERSION}


def reference_of(method: str) -> str:
    """The reference role of a row of ``method``: "teacher" for :data:`TEACHER`, else its class's
    ``Method.reference`` ("" where the method is not installed: it is then shown as a compared method)."""
    if method == TEACHER:
        return "teacher"
    from kdbench.errors import UserError
    from kdbench.method import METHODS

    try:
        return METHODS.get(method).reference
    except UserError:
        return ""
