"""The Method plugin API: what a distillation method is, what it sees, what it returns.

A method is a small ``nn.Module`` in one file (in the spirit of mdistiller's ``Distiller``): it owns the student
and any extra modules it needs (adapters, projection heads), declares its training stages and which outputs it
taps, and turns one batch's student and teacher outputs into named loss terms. The trainer owns everything else:
data, optimiser, schedule, AMP, the teacher's forward pass under ``torch.inference_mode()``, logging, checkpoints.

A method is built with its :class:`RunContext` (pair kind, image size, classes, device), derived from the job by
whoever builds it, so everything it decides (its stages, its modules) is a function of what it was built with.

Register a method with an entry point in the ``kdbench.methods`` group (built-ins do exactly that), or with the
``register_method`` decorator for code that runs in-process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.config import coerce_scalar
from kdbench.errors import UserError, did_you_mean
from kdbench.models.segmentor import Segmentor, SegOutput
from kdbench.registry import Registry
from kdbench.search import Distribution, check_space

IGNORE_INDEX = 255
TAPS = frozenset({"logits", "features", "tokens", "blocks"})
DATA_KINDS = {
    "source": "labelled source-domain training images",
    "source-images": "the same source images with labels withheld",
    "proxy": "unlabelled images of the proxy distribution (the stand-in for ImageNet)",
}
TRAINABLE_PARTS = {"backbone", "head", "extra"}
#: GKD's two settings: a foundation teacher distilled into a foundation-pretrained student (F2F) or into a locally
#: (ImageNet-) pretrained one (F2L)
PAIR_KINDS = ("F2F", "F2L")


@dataclass(frozen=True)
class RunContext:
    """What a method knows of its run when it is built, derived from the job (``kdbench.launch.build_method``).

    ``pair_kind``: one of :data:`PAIR_KINDS` (GKD runs its proxy-image stage for F2L pairs only). ``image_size``:
    the training crop side, ``data.image_size``. ``num_classes``: the source domain's label-space size (the decode
    heads' output width). ``device``: where the run trains (the method is built on the CPU and moved there).

    Not part of a run's identity: every field follows from the job's benchmark, pair and config, which are.
    """

    pair_kind: str
    image_size: int
    num_classes: int
    device: torch.device

    def __post_init__(self) -> None:
        if self.pair_kind not in PAIR_KINDS:
            raise ValueError(f"run context: pair_kind must be one of {', '.join(PAIR_KINDS)}, not {self.pair_kind!r}")
        for name in ("image_size", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"run context: {name} must be a positive int, not {value!r}")
        object.__setattr__(self, "device", torch.device(self.device))


@dataclass(frozen=True)
class Stage:
    """One phase of a method's training.

    ``data``: one of :data:`DATA_KINDS`. ``train``: which parts learn, from ``backbone`` and ``head`` (the
    student's) and ``extra`` (the method's own modules); everything else is frozen and kept in eval mode.
    ``steps``: optimiser steps, ``None`` meaning the run's ``train.steps``. ``lr``: overrides ``train.lr``.
    ``uses_teacher``: whether the teacher runs in this stage (skipped when ``False``, saving its forward pass).
    ``student_taps``: outputs the student must compute (``logits`` costs the decode head).
    """

    name: str
    data: str = "source"
    train: tuple[str, ...] = ("backbone", "head", "extra")
    steps: int | None = None
    lr: float | None = None
    uses_teacher: bool = True
    student_taps: frozenset[str] = frozenset({"logits"})

    def __post_init__(self) -> None:
        if self.data not in DATA_KINDS:
            raise ValueError(f"stage {self.name!r}: data must be one of {sorted(DATA_KINDS)}, not {self.data!r}")
        bad = set(self.train) - TRAINABLE_PARTS
        if bad:
            raise ValueError(f"stage {self.name!r}: unknown trainable parts {sorted(bad)}")
        if not set(self.student_taps) <= TAPS:
            raise ValueError(f"stage {self.name!r}: unknown taps {sorted(set(self.student_taps) - TAPS)}")


@dataclass
class Batch:
    """``images``: B×3×H×W normalised floats. ``labels``: B×H×W int64 with 255 = ignore, or ``None`` when the
    stage's data carries no labels."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of every distillation method.

    Subclasses set ``defaults`` (every hyper-parameter with its default; overridable from YAML and
    ``--set method.<name>.<key>=<value>``), ``student_kinds`` and ``teacher_kinds`` (backbone kinds the method
    supports, checked before a sweep starts), override :meth:`teacher_taps` (outputs the teacher must compute) and
    implement :meth:`loss`. ``search_space`` maps the hyper-parameters worth tuning to
    distributions from :mod:`kdbench.search` (empty: the method is run at its defaults only).
    Multi-stage methods override :meth:`stages`. A method is built with its run's :class:`RunContext`
    (``self.context``, a required argument), and what it decides from the run it reads there (GKD: its stages
    from the pair kind). An ablation names the method it ablates in ``ablation_of``, so the
    report never counts it as that method's competitor ("best baseline").
    """

    registered_name: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    search_space: ClassVar[Mapping[str, Distribution]] = {}
    student_kinds: ClassVar[frozenset[str]] = frozenset({"vit", "cnn"})
    teacher_kinds: ClassVar[frozenset[str]] = frozenset({"vit", "cnn"})
    ablation_of: ClassVar[str | None] = None
    #: True where a ViT student's patch tokens must lie on the teacher's token grid (the method pairs them token
    #: for token); a pair whose grids differ at the run's image size is refused before any work
    same_grid: ClassVar[bool] = False
    #: a reference row's role (``kdbench.record.REFERENCE_ROLES``: "baseline" for the no-distillation baseline the
    #: Δ columns measure against, "reference" for a row shown but never ranked); "" for a compared method
    reference: ClassVar[str] = ""

    def __init__(self, teacher: Segmentor, student: Segmentor, context: RunContext, **hparams: Any):
        super().__init__()
        if not isinstance(context, RunContext):
            raise TypeError(f"method {self.registered_name or type(self).__name__!r}: context must be a RunContext, "
                            f"not {type(context).__name__}")
        self.context = context
        self.student = student
        # The teacher is deliberately not a submodule: it never appears in parameters() or state_dict().
        object.__setattr__(self, "teacher", teacher)
        self.hp = self.resolve_hparams(hparams)
        for role, model in (("student", student), ("teacher", teacher)):
            problem = self.kind_problem(role, getattr(model.backbone, "kind", "?"))
            if problem:
                raise UserError(problem)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        taps = cls.__dict__.get("teacher_taps")
        if taps is not None and not isinstance(taps, classmethod):
            raise TypeError(f"{cls.__qualname__}.teacher_taps must be a classmethod teacher_taps(cls, hp) returning "
                            f"the teacher's outputs as a frozenset, not a {type(taps).__name__}")

    @classmethod
    def teacher_taps(cls, hp: Mapping[str, Any]) -> frozenset[str]:
        """The outputs (from :data:`TAPS`) the teacher must compute under the resolved hyper-parameters ``hp``; empty
        (the default) means the teacher never runs. Call it on an instance as ``method.teacher_taps(method.hp)``.

        A classmethod of the hyper-parameters alone, not of a built method: the pre-flight check asks it of every
        selected method before any model exists (a method tapping the teacher cannot cache it on augmented real
        crops), and what a teacher must compute cannot depend on weights. CWD taps logits or features by ``on``."""
        return frozenset()

    @classmethod
    def description(cls) -> str:
        """The docstring's first paragraph, on one line."""
        paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())

    @classmethod
    def kind_problem(cls, role: str, kind: str) -> str | None:
        """Why this method cannot take a ``role`` ("student" or "teacher") backbone of ``kind``; ``None`` if it can."""
        kinds = cls.student_kinds if role == "student" else cls.teacher_kinds
        if kind in kinds:
            return None
        return f"method {cls.registered_name!r} does not support {kind} {role}s; it supports {', '.join(sorted(kinds))}"

    @classmethod
    def resolve_hparams(cls, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated by ``overrides``, with unknown keys and wrong types refused by name."""
        resolved = dict(cls.defaults)
        for key, value in overrides.items():
            if key not in cls.defaults:
                valid = ", ".join(sorted(cls.defaults)) or "none"
                raise UserError(f"method {cls.registered_name!r} has no hyper-parameter {key!r};"
                                f"{did_you_mean(key, cls.defaults)} valid: {valid}")
            resolved[key] = coerce(value, cls.defaults[key], f"method.{cls.registered_name}.{key}")
        cls.check_hparams(resolved)
        return resolved

    @classmethod
    def check_hparams(cls, hp: Mapping[str, Any]) -> None:
        """Refuse values no run could use (a ratio outside [0, 1], an unknown mode, a missing file) with a
        ``UserError`` naming ``method.<name>.<key>``. Runs in the pre-flight check, before any work."""

    @classmethod
    def check_search_space(cls) -> None:
        """Refuse a ``search_space`` naming a key not in ``defaults``, an impossible range or a value of the wrong
        type with a one-line ``UserError`` naming ``method.<name>.<key>`` (:func:`kdbench.search.check_space`).
        For the pre-flight check, before any work."""
        check_space(cls)

    def stages(self) -> list[Stage]:
        """Default: one stage on labelled source data, everything trainable, teacher running if tapped."""
        return [Stage("train", uses_teacher=bool(self.teacher_taps(self.hp)))]

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        """Named loss terms for one batch; the trainer sums them and logs each."""
        raise NotImplementedError

    def extra_modules(self) -> list[nn.Module]:
        """The method's own trainable modules (adapters, heads): every child except the student."""
        return [m for name, m in self.named_children() if name != "student"]

    def extra_parameter_count(self) -> int:
        return sum(p.numel() for m in self.extra_modules() for p in m.parameters())

    @staticmethod
    def task_loss(student_out: SegOutput, batch: Batch) -> torch.Tensor:
        """The decode head's training loss: pixel-wise cross-entropy at the input resolution ignoring label 255,
        or, for a head with its own loss (Mask2Former: matched class, mask and dice terms), the sum of its terms.

        A batch with no labelled pixel at all (random crops of GTA5's void regions) gives 0 with a zero gradient, as
        mmsegmentation does, instead of the NaN of a mean over no pixels that would fail the run; Mask2Former's
        terms are 0 there too (its class term would otherwise push every query to "no object" on no evidence)."""
        if batch.labels is None:
            raise RuntimeError("task loss needs labels; this stage's data has none")
        if not bool((batch.labels != IGNORE_INDEX).any()):
            return student_out.logits.float().sum() * 0.0
        if student_out.head_loss is not None:
            return sum(student_out.head_loss(batch.labels).values())
        return F.cross_entropy(student_out.logits.float(), batch.labels, ignore_index=IGNORE_INDEX)


def coerce(value: Any, default: Any, key: str) -> Any:
    """``value`` converted to the type of ``default`` (any value where the default is ``None``)."""
    if default is None or type(default) not in (bool, int, float, str):
        return value
    return coerce_scalar(value, type(default), key)


METHODS: Registry[type[Method]] = Registry("method", entry_point_group="kdbench.methods")


def register_method(name: str):
    """Decorator for methods defined in-process (scripts, notebooks, tests). Packages use entry points."""
    return METHODS.register(name)
