"""One method's training step on one pair, with a fixed batch, ready to time or to count FLOPs of: what the speed
benchmarks (``benchmarks/``) measure, through the same ``train_steps`` a run uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch

from kdbench.config import TrainConfig
from kdbench.engine.flops import counted_flops
from kdbench.engine.runtime import Runtime, resolve_runtime
from kdbench.engine.trainer import StepFn, method_step, set_trainable, stage_groups, train_steps
from kdbench.method import METHODS, Batch, Method, RunContext, Stage
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import MODELS, PAIRS


@dataclass
class StepWorkload:
    """``run(n)``: ``n`` optimiser steps of ``stage`` on ``batch`` (the step function may be replaced to time a
    variant of it)."""

    method: Method
    stage: Stage
    batch: Batch
    cfg: TrainConfig
    runtime: Runtime
    step_fn: StepFn | None = None
    groups: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        set_trainable(self.method, self.stage)
        for p in self.method.teacher.parameters():
            p.requires_grad_(False)
        self.step_fn = self.step_fn or method_step(self.method, self.stage)
        self.groups = stage_groups(self.method, self.stage, self.cfg)

    def run(self, steps: int = 1, batches: Iterator[Batch] | None = None, runtime: Runtime | None = None) -> None:
        """``steps`` steps on the fixed batch, or on ``batches`` where given (under ``runtime``, the workload's
        own unless given)."""
        batches = batches if batches is not None else iter(lambda: self.batch, None)
        train_steps(self.step_fn, self.groups, batches, steps, self.cfg, runtime or self.runtime, "benchmark",
                    log=lambda row: None)

    def flops(self) -> int:
        """FLOPs of one step (forward passes and backward), counted with autocast off: a count does not depend on
        the precision, and torch 2.11's counter fails under CUDA autocast (it decomposes ``conv2d`` past autocast's
        cast, so a bf16 input meets an fp32 bias; seen on an H200)."""
        return counted_flops(lambda: self.run(1, runtime=replace(self.runtime, amp_dtype=None)))

    def with_step(self, make_step: Callable[[Method, Stage], StepFn]) -> StepWorkload:
        return StepWorkload(self.method, self.stage, self.batch, self.cfg, self.runtime, make_step(self.method,
                                                                                                  self.stage))


def segmentor(model: str, image_size: int, classes: int) -> Segmentor:
    backbone = MODELS.get(model).build_backbone(image_size)
    return Segmentor(backbone, LightHead(backbone.level_channels, classes))


def step_workload(method_name: str, pair_name: str, stage_name: str, image_size: int, batch_size: int,
                  device: str = "cpu", amp: str = "off", classes: int = 19, seed: int = 0) -> StepWorkload:
    """``method_name``'s stage ``stage_name`` on ``pair_name`` (randomly initialised models, light head, the run
    context of that pair) with a random batch of ``batch_size`` images of ``image_size``² and labels of ``classes``
    classes."""
    torch.manual_seed(seed)
    runtime = resolve_runtime(device, amp)
    pair = PAIRS.get(pair_name)
    teacher = segmentor(pair.teacher, image_size, classes).eval()
    context = RunContext(pair.kind, image_size, classes, runtime.device)
    method = METHODS.get(method_name)(teacher, segmentor(pair.student, image_size, classes), context).to(runtime.device)
    stage = next((s for s in method.stages() if s.name == stage_name), None)
    if stage is None:
        raise ValueError(f"{method_name} has no stage {stage_name!r}: {[s.name for s in method.stages()]}")
    gen = torch.Generator().manual_seed(seed)
    batch = Batch(images=torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(runtime.device),
                  labels=torch.randint(0, classes, (batch_size, image_size, image_size), generator=gen
                                       ).to(runtime.device))
    cfg = TrainConfig(steps=1, batch_size=batch_size, log_every=10**9, checkpoint_every=0)
    return StepWorkload(method, stage, batch, cfg, runtime)
