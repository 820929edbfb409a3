"""Checks a method's own tests can call (kdbench's and plugins'): tiny teacher/student pairs and a batch, and
one training step's gradient flow as the trainer runs it.

    from kdbench.testing.methods import build_method, check_gradient_flow

    def test_token_mse_gradients():
        check_gradient_flow(build_method("token-mse"))
"""

from __future__ import annotations

from typing import Any

import torch

from kdbench.engine.trainer import method_step, set_trainable
from kdbench.method import METHODS, Batch, Method
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import MODELS

#: the tiny models of the smoke suite: a ViT teacher, a ViT student and a CNN student
TINY_TEACHER, TINY_VIT_STUDENT, TINY_CNN_STUDENT = "tiny-vit-b", "tiny-vit-s", "tiny-resnet"
CLASSES, SIZE = 6, 16


def tiny_segmentor(model: str, classes: int = CLASSES, size: int = SIZE) -> Segmentor:
    """A zoo model's backbone (random weights) with kdbench's light decode head."""
    backbone = MODELS.get(model).build_backbone(size)
    return Segmentor(backbone, LightHead(backbone.level_channels, classes))


def build_method(method: str | type[Method], student: str = TINY_VIT_STUDENT, teacher: str = TINY_TEACHER,
                 seed: int = 0, **hparams: Any) -> Method:
    """A method (a registered name, or a class not registered yet) on a tiny teacher and student
    (``student=TINY_CNN_STUDENT`` for a CNN)."""
    cls = METHODS.get(method) if isinstance(method, str) else method
    torch.manual_seed(seed)
    return cls(tiny_segmentor(teacher), tiny_segmentor(student), **hparams)


def tiny_batch(method: Method, batch: int = 2, seed: int = 6, ignore_fraction: float = 0.1) -> Batch:
    """Random images and labels at the tiny size, some labels 255 (ignore)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (batch, SIZE, SIZE), generator=gen)
    labels[torch.rand(batch, SIZE, SIZE, generator=gen) < ignore_fraction] = 255
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
            assert any(_has_grad(p) for p in layer.parameters()), \
                f"stage {stage.name!r}: no gradient reaches the student backbone's input layer ({name})"
        if "extra" in stage.train:
            reached |= {module for module, child in method.named_children()
                        if module != "student" and any(_has_grad(p) for p in child.parameters())}
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


def _has_grad(p: torch.Tensor) -> bool:
    return p.grad is not None and float(p.grad.abs().sum()) > 0
