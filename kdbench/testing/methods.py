"""Checks a method's own tests can call (kdbench's and plugins'): tiny teacher/student pairs and a batch, and
one training step's gradient flow as the trainer runs it.

    from kdbench.testing.methods import build_method, check_gradient_flow

    def test_token_mse_gradients():
        check_gradient_flow(build_method("token-mse"))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import TrainConfig
from kdbench.data.domains import get_domain
from kdbench.data.loaders import StageData
from kdbench.data.synthetic import make_split
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import method_step, set_trainable, train_method
from kdbench.method import METHODS, Batch, Method, RunContext
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import MODELS

#: the tiny models of the smoke suite: a ViT teacher, a ViT student and a CNN student
TINY_TEACHER, TINY_VIT_STUDENT, TINY_CNN_STUDENT = "tiny-vit-b", "tiny-vit-s", "tiny-resnet"
CLASSES, SIZE = 6, 16


def tiny_segmentor(model: str, classes: int = CLASSES, size: int = SIZE) -> Segmentor:
    """A zoo model's backbone (random weights) with kdbench's light decode head."""
    backbone = MODELS.get(model).build_backbone(size)
    return Segmentor(backbone, LightHead(backbone.level_channels, classes))


def tiny_context(pair_kind: str) -> RunContext:
    """The run context of a tiny ``pair_kind`` ("F2F" or "F2L") pair: the tiny size and classes, on the CPU."""
    return RunContext(pair_kind, SIZE, CLASSES, torch.device("cpu"))


def pair_kind_of(student: str) -> str:
    """The kind of a pair with ``student``, as a composed pair gets it (``kdbench.models.zoo.get_pair``): F2F for a
    foundation student (``tiny-vit-s``), F2L for a local one (``tiny-deit-s``, ``tiny-resnet``)."""
    return "F2F" if MODELS.get(student).model_role == "foundation" else "F2L"


def build_method(method: str | type[Method], student: str = TINY_VIT_STUDENT, teacher: str = TINY_TEACHER,
                 seed: int = 0, pair_kind: str | None = None, **hparams: Any) -> Method:
    """A method (a registered name, or a class not registered yet) on a tiny teacher and student
    (``student=TINY_CNN_STUDENT`` for a CNN), built with the run context a run of these two models has: the tiny
    size and classes, and the pair kind ``pair_kind`` or, by default, the student's (:func:`pair_kind_of`: the
    default ViT student makes an F2F pair, the CNN an F2L one)."""
    cls = METHODS.get(method) if isinstance(method, str) else method
    context = tiny_context(pair_kind or pair_kind_of(student))
    torch.manual_seed(seed)
    return cls(tiny_segmentor(teacher), tiny_segmentor(student), context, **hparams)


def tiny_batch(method: Method, batch: int = 2, seed: int = 6, ignore_fraction: float = 0.1,
               ignore_rows: int = 0) -> Batch:
    """Random images and labels at the tiny size: about ``ignore_fraction`` of the labels 255 (ignore) at random
    pixels, and the first ``ignore_rows`` rows of every label map 255 too."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (batch, SIZE, SIZE), generator=gen)
    labels[torch.rand(batch, SIZE, SIZE, generator=gen) < ignore_fraction] = 255
    labels[:, :ignore_rows] = 255
    return Batch(images=torch.randn(batch, 3, SIZE, SIZE, generator=gen), labels=labels)


def check_gradient_flow(method: Method, batch: Batch | None = None) -> dict[str, float]:
    """One training step of every stage of ``method``, as the trainer runs it (trainable parts set per stage, the
    teacher under inference mode): every loss term is finite; the teacher gets no gradient, even with its
    parameters marked trainable; in a stage that trains the backbone, its input layer gets a non-zero gradient;
    each of the method's own modules gets one in some stage that trains them (single parameters may stay dead by
    design, as GKD's CLS query: a softmax over one key). Raises
    ``AssertionError`` naming what failed; returns the last stage's terms."""
    batch = batch or tiny_batch(method)
    for p in method.teacher.parameters():
        p.requires_grad_(True)
    reached: set[str] = set()
    terms: dict[str, float] = {}
    for stage in method.stages():
        set_trainable(method, stage)
        method.zero_grad(set_to_none=True)
        stage_batch = batch if stage.data == "source" else Batch(batch.images, None, batch.meta)
        out = method_step(method, stage)(stage_batch)
        for name, value in out.items():
            assert torch.isfinite(value).all(), f"stage {stage.name!r}: loss term {name!r} is {float(value)}"
        sum(v.float() for v in out.values()).backward()
        assert all(p.grad is None for p in method.teacher.parameters()), \
            f"stage {stage.name!r}: a gradient reached the teacher"
        if "backbone" in stage.train:
            name, layer = input_layer(method.student.backbone)
            assert any(has_grad(p) for p in layer.parameters()), \
                f"stage {stage.name!r}: no gradient reaches the student backbone's input layer ({name})"
        if "extra" in stage.train:
            reached |= {module for module, child in method.named_children()
                        if module != "student" and any(has_grad(p) for p in child.parameters())}
        terms = {name: float(value.detach()) for name, value in out.items()}
    if any("extra" in stage.train for stage in method.stages()):
        own = {module for module, child in method.named_children()
               if module != "student" and any(True for _ in child.parameters())}
        missing = sorted(own - reached)
        assert not missing, f"no gradient reaches the method's own module(s): {', '.join(missing)}"
    return terms


def input_layer(backbone: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The first module without children that owns parameters (a ViT's patch embedding, a CNN's stem conv)."""
    for name, module in backbone.named_modules():
        if not any(True for _ in module.children()) and any(True for _ in module.parameters(recurse=False)):
            return name, module
    raise AssertionError("the backbone has no layer with parameters")


def has_grad(p: torch.Tensor) -> bool:
    """Whether a backward pass left ``p`` a gradient with a non-zero entry."""
    return p.grad is not None and float(p.grad.abs().sum()) > 0


def student_input_weight(method: Method) -> torch.Tensor:
    """The weight of the student backbone's :func:`input_layer` (a ViT's patch embedding, a CNN's stem conv): the
    tensor a distillation term's gradient has to reach to train the whole backbone."""
    return input_layer(method.student.backbone)[1].weight


def train_tiny(method: Method, steps: int = 2, batch_size: int = 4) -> list[dict[str, float]]:
    """Train ``method`` as ``kdbench run`` does, on the CPU in fp32, for ``steps`` steps of every stage on 8
    synthetic ``game`` images at the tiny size (seeded: the same batches every call); returns the rows it logs,
    one a step (``loss/<term>`` among them)."""
    data = StageData(make_split(get_domain("game"), "train", 8, SIZE), "urban", SIZE, torch.device("cpu"))
    logs: list[dict[str, float]] = []
    train_method(method, lambda stage: data.batches(stage.data, batch_size, 0),
                 TrainConfig(steps=steps, batch_size=batch_size, log_every=1), resolve_runtime("cpu", "off"),
                 logs.append)
    return logs


class SmokeRun(NamedTuple):
    """What :func:`run_smoke` leaves: one method's result records, and its logged training rows per pair."""

    records: list[dict[str, Any]]
    metrics: dict[str, list[dict[str, Any]]]


def run_smoke(method: str, out: str | Path, pairs: Sequence[str] = ("tiny-f2l",), benchmark: str = "game2real",
              settings: Sequence[str] = ()) -> SmokeRun:
    """``kdbench run --suite smoke --methods METHOD --pairs PAIRS --benchmarks BENCHMARK --seeds 0 --out OUT``
    (with ``--set`` for each of ``settings``, as ``"method.x.weight=2"``) through click's test runner. Asserts that
    it exits 0 (its output in the message) and that it wrote exactly one ``metrics.jsonl`` for ``method`` on each
    pair; returns the records of ``method`` (every ``records.jsonl`` under ``out``) and those files' rows."""
    out = Path(out)
    args = ["run", "--suite", "smoke", "--methods", method, "--pairs", ",".join(pairs), "--benchmarks", benchmark,
            "--seeds", "0", "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    records = [r for p in out.rglob("records.jsonl") for r in map(json.loads, p.read_text().splitlines())
               if r["method"] == method]
    metrics = {}
    for pair in pairs:
        files = list((out / "smoke" / benchmark / pair / method).rglob("metrics.jsonl"))
        assert len(files) == 1, f"{pair}: {len(files)} metrics.jsonl for {method!r}, not one"
        metrics[pair] = [json.loads(line) for line in files[0].read_text().splitlines()]
    return SmokeRun(records, metrics)
