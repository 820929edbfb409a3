"""The training loop: one function for any stage of any method, and one that runs a method's stages in order."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from kdbench.config import TrainConfig
from kdbench.engine.optim import lr_factor, make_optimizer, param_groups
from kdbench.engine.runtime import Runtime
from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput

StepFn = Callable[[Batch], dict[str, torch.Tensor]]
LogFn = Callable[[dict], None]


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, say); the run fails with this reason, the sweep goes on."""


@dataclass
class StageResult:
    name: str
    steps: int
    wall_s: float
    last: dict[str, float]


def train_steps(step_fn: StepFn, groups: list[dict], batches: Iterator[Batch], steps: int, cfg: TrainConfig,
                runtime: Runtime, desc: str, log: LogFn | None = None) -> dict[str, float]:
    """Run ``steps`` optimiser steps: warm-up + schedule, autocast, gradient clipping, named-loss logging."""
    optimizer = make_optimizer(groups)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    params = [p for g in groups for p in g["params"]]
    last: dict[str, float] = {}
    for step in tqdm(range(steps), desc=desc, leave=False, disable=None):
        factor = lr_factor(step, steps, cfg.warmup, cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        batch = next(batches)
        with runtime.autocast():
            terms = step_fn(batch)
        loss = sum(t.float() for t in terms.values())
        if not torch.isfinite(loss):
            shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise TrainingError(f"non-finite loss at step {step} of {desc} ({shown})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if log is not None and (step % cfg.log_every == 0 or step == steps - 1):
            last = {k: round(float(v.detach()), 6) for k, v in terms.items()}
            log({"stage": desc, "step": step, "lr": optimizer.param_groups[0]["lr"],
                 "loss": round(float(loss.detach()), 6), **{f"loss/{k}": v for k, v in last.items()}})
    return last


def _clone_out(out: SegOutput, taps: frozenset[str]) -> SegOutput:
    """Teacher outputs made under inference mode, cloned into ordinary tensors so losses may save them (only the
    tapped ones; the rest are dropped)."""
    def c(t):
        return None if t is None else t.clone()
    return SegOutput(logits=c(out.logits), features=[f.clone() for f in out.features] if "features" in taps else [],
                     tokens=c(out.tokens) if "tokens" in taps else None, num_prefix=out.num_prefix,
                     blocks=[b.clone() for b in out.blocks] if "blocks" in taps and out.blocks is not None else None,
                     grid=out.grid)


def method_step(method: Method, stage: Stage) -> StepFn:
    """One step's forward passes and loss terms: the teacher (only when the stage uses it, under inference mode,
    only the taps the method declares), then the student, then the method's loss."""
    run_teacher = stage.uses_teacher and bool(method.teacher_taps)
    teacher_logits = "logits" in method.teacher_taps
    student_logits = "logits" in stage.student_taps

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        teacher_out = None
        if run_teacher:
            with torch.inference_mode():
                teacher_out = method.teacher(batch.images, with_logits=teacher_logits)
            teacher_out = _clone_out(teacher_out, method.teacher_taps)
        student_out = method.student(batch.images, with_logits=student_logits)
        return method.loss(stage, batch, student_out, teacher_out)

    return step


def set_trainable(method: Method, stage: Stage) -> None:
    """Trainable parts get gradients and train mode; frozen parts neither (so BatchNorm statistics stay put)."""
    parts = {"backbone": [method.student.backbone], "head": [method.student.head], "extra": method.extra_modules()}
    for part, modules in parts.items():
        on = part in stage.train
        for module in modules:
            module.train(on)
            for p in module.parameters():
                p.requires_grad_(on)


def stage_groups(method: Method, stage: Stage, cfg: TrainConfig) -> list[dict]:
    base = stage.lr if stage.lr is not None else cfg.lr
    named = {}
    if "backbone" in stage.train:
        named["backbone"] = (list(method.student.backbone.parameters()), base * cfg.backbone_lr_mult)
    if "head" in stage.train:
        named["head"] = (list(method.student.head.parameters()), base)
    if "extra" in stage.train:
        extra = [p for m in method.extra_modules() for p in m.parameters()]
        if extra:
            named["extra"] = (extra, base)
    return param_groups(named, cfg.weight_decay)


def train_method(method: Method, batches_for: Callable[[Stage], Iterator[Batch]], cfg: TrainConfig,
                 runtime: Runtime, log: LogFn | None = None,
                 on_stage_end: Callable[[Stage], None] | None = None) -> list[StageResult]:
    """Run every stage of ``method``. The teacher stays frozen in eval mode and runs under inference mode, and
    only when the stage uses it."""
    teacher = method.teacher
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    results = []
    for stage in method.stages():
        set_trainable(method, stage)
        groups = stage_groups(method, stage, cfg)
        if not groups:
            raise TrainingError(f"stage {stage.name!r} of {method.registered_name!r} has nothing to train")
        steps = stage.steps if stage.steps is not None else cfg.steps
        start = time.perf_counter()
        last = train_steps(method_step(method, stage), groups, batches_for(stage), steps, cfg, runtime, stage.name,
                           log)
        results.append(StageResult(stage.name, steps, time.perf_counter() - start, last))
        if on_stage_end is not None:
            on_stage_end(stage)
    return results
