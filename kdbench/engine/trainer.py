"""The training loop: one function for any stage of any method, and one that runs a method's stages in order."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from kdbench.config import TrainConfig
from kdbench.data.loaders import INPUT_IDS, BatchStream
from kdbench.engine.distributed import DistInfo, mean_over_processes, shard, sync_batchnorm
from kdbench.engine.optim import lr_factor, make_optimizer, param_groups
from kdbench.engine.preemption import Preempted, requested
from kdbench.engine.progress import progress_steps
from kdbench.engine.resume import ResumePoint, RunCheckpoint, set_rng_state
from kdbench.engine.runtime import Runtime
from kdbench.engine.teacher_cache import TeacherTable
from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput

StepFn = Callable[[Batch], dict[str, torch.Tensor]]
LogFn = Callable[[dict], None]
#: ``(steps done, optimizer, scaler, stopping)``: the checkpoint hook; ``stopping`` means save now (a signal)
AfterStep = Callable[[int, torch.optim.Optimizer, torch.amp.GradScaler, bool], None]


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, say); the run fails with this reason, the sweep goes on."""


@dataclass
class StageResult:
    name: str
    steps: int
    wall_s: float
    last: dict[str, float]


def train_steps(step_fn: StepFn, groups: list[dict], batches: Iterator[Batch], steps: int, cfg: TrainConfig,
                runtime: Runtime, desc: str, log: LogFn | None = None, start: int = 0,
                resume_state: dict[str, Any] | None = None, after_step: AfterStep | None = None,
                distributed: bool = False) -> dict[str, float]:
    """Run optimiser steps ``start`` .. ``steps - 1``: warm-up + schedule, autocast, gradient clipping, named-loss
    logging. ``resume_state`` restores the optimiser and scaler of an interrupted run; ``after_step(done,
    optimizer, scaler)`` runs after every step (the checkpoint hook). ``distributed``: every process runs this
    loop (``step_fn`` goes through DDP); the loss checked and the terms logged are means over processes."""
    optimizer = make_optimizer(groups)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scaler.load_state_dict(resume_state["scaler"])
    params = [p for g in groups for p in g["params"]]
    last: dict[str, float] = {}
    quiet = distributed and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0
    for step in progress_steps(start, steps, desc, write=(lambda _: None) if quiet else None,
                               terminal=False if quiet else None):
        factor = lr_factor(step, steps, cfg.warmup, cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        batch = next(batches)
        with runtime.autocast():
            terms = step_fn(batch)
        loss = sum(t.float() for t in terms.values())
        total = mean_over_processes(loss) if distributed else loss
        if not torch.isfinite(total):
            shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise TrainingError(f"non-finite loss at step {step} of {desc} ({shown})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if (log is not None or distributed) and (step % cfg.log_every == 0 or step == steps - 1):
            shown = {k: mean_over_processes(v) if distributed else v for k, v in terms.items()}
            last = {k: round(float(v.detach()), 6) for k, v in shown.items()}
            if log is not None:
                log({"stage": desc, "step": step, "lr": optimizer.param_groups[0]["lr"],
                     "loss": round(float(total.detach()), 6), **{f"loss/{k}": v for k, v in last.items()}})
        # a stage's last step goes on to the stage-end save; the next stage's first step stops
        stopping = stop_requested(distributed, loss.device) if step + 1 < steps else 0
        if after_step is not None:
            after_step(step + 1, optimizer, scaler, bool(stopping))
        if stopping:
            raise Preempted(stopping, f"at step {step + 1} of {desc}")
    return last


def stop_requested(distributed: bool, device: torch.device) -> int:
    """The signal a stop was asked for by (0: none); with several processes, the same answer on every one (the
    largest), so that all stop after the same step."""
    local = requested() or 0
    if not distributed:
        return local
    flag = torch.tensor(float(local), device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())


def _clone_out(out: SegOutput, taps: frozenset[str]) -> SegOutput:
    """Teacher outputs made under inference mode, cloned into ordinary tensors so losses may save them (only the
    tapped ones; the rest are dropped)."""
    def c(t):
        return None if t is None else t.clone()
    return SegOutput(logits=c(out.logits), features=[f.clone() for f in out.features] if "features" in taps else [],
                     tokens=c(out.tokens) if "tokens" in taps else None, num_prefix=out.num_prefix,
                     blocks=[b.clone() for b in out.blocks] if "blocks" in taps and out.blocks is not None else None,
                     grid=out.grid)


def method_step(method: Method, stage: Stage, table: TeacherTable | None = None) -> StepFn:
    """One step's forward passes and loss terms: the teacher (only when the stage uses it, under inference mode,
    only the taps the method declares; looked up in ``table`` by the batch's input ids instead, when the stage's
    inputs are a cached fixed set), then the student, then the method's loss."""
    taps = method.teacher_taps(method.hp)
    run_teacher = stage.uses_teacher and bool(taps)
    teacher_logits = "logits" in taps
    student_logits = "logits" in stage.student_taps

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        teacher_out = None
        if run_teacher and table is not None:
            if INPUT_IDS not in batch.meta:
                raise RuntimeError(f"stage {stage.name!r} has cached teacher outputs but no input ids in its batches")
            teacher_out = table.lookup(batch.meta[INPUT_IDS])
        elif run_teacher:
            with torch.inference_mode():
                teacher_out = method.teacher(batch.images, with_logits=teacher_logits)
            teacher_out = _clone_out(teacher_out, taps)
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


def stage_config(stage: Stage, cfg: TrainConfig, data_size: Callable[[str], int] | None = None) -> TrainConfig:
    """The train settings of one stage: ``train.stages.<stage name>`` overrides first (``steps``, or ``epochs``
    over the stage's data of ``data_size(stage.data)`` images; ``batch_size``, ``lr``, ``schedule``, ``warmup``,
    ``backbone_lr_mult``), then the method's own ``Stage.steps`` / ``Stage.lr``, then the run's settings."""
    own = cfg.stages.get(stage.name, {})
    batch = own.get("batch_size", cfg.batch_size)
    if "steps" in own:
        steps = own["steps"]
    elif "epochs" in own:
        if data_size is None:
            raise TrainingError(f"train.stages.{stage.name}.epochs needs the size of the stage's data, unknown here")
        steps = max(1, math.ceil(own["epochs"] * data_size(stage.data) / batch))
    else:
        steps = stage.steps if stage.steps is not None else cfg.steps
    return replace(cfg, steps=steps, batch_size=batch, lr=own.get("lr", stage.lr if stage.lr is not None else cfg.lr),
                   schedule=own.get("schedule", cfg.schedule), warmup=own.get("warmup", cfg.warmup),
                   backbone_lr_mult=own.get("backbone_lr_mult", cfg.backbone_lr_mult), stages={})


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


def train_method(method: Method, batches_for: Callable[[Stage], BatchStream], cfg: TrainConfig,
                 runtime: Runtime, log: LogFn | None = None,
                 on_stage_end: Callable[[Stage], None] | None = None,
                 checkpoint: RunCheckpoint | None = None, resume: ResumePoint | None = None,
                 metrics_lines: Callable[[], int] | None = None, dist_info: DistInfo | None = None,
                 data_size: Callable[[str], int] | None = None,
                 teacher_table: Callable[[Stage], TeacherTable | None] | None = None) -> list[StageResult]:
    """Run every stage of ``method``. The teacher stays frozen in eval mode and runs under inference mode, and
    only when the stage uses it. With ``checkpoint``, the whole training state is saved every
    ``checkpoint.every`` steps and at each stage end (``kdbench.engine.resume``); ``resume`` (a state it saved,
    loaded by the caller) is where an interrupted run goes on; ``metrics_lines`` counts the log lines written so
    far. With ``dist_info`` of several processes, each stage trains through DistributedDataParallel
    (``kdbench.engine.distributed``). Each stage trains with :func:`stage_config`'s settings (``batches_for``
    must serve that stage's batch size); ``data_size`` counts a data kind's images for epoch-based stages;
    ``teacher_table(stage)`` gives the cached teacher outputs of a stage whose inputs are a fixed set (or ``None``:
    the teacher runs)."""
    distributed = dist_info is not None and dist_info.enabled
    if distributed:
        sync_batchnorm(method, runtime.device.type)
    teacher = method.teacher
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    point = resume
    results: list[StageResult] = []

    def saved_state(stage_index: int, step: int, elapsed: float) -> dict[str, Any]:
        """What every save holds; a save inside a stage adds the optimiser, scaler and batch position."""
        return {"stage": stage_index, "step": step, "method": method.state_dict(),
                "results": [vars(r) for r in results], "elapsed": elapsed,
                "metrics_lines": metrics_lines() if metrics_lines else 0}

    if point is not None:
        method.load_state_dict(point.state["method"])
        results = [StageResult(**r) for r in point.state["results"]]
    for index, stage in enumerate(method.stages()):
        if point is not None and index < point.stage:
            continue
        set_trainable(method, stage)
        stage_cfg = stage_config(stage, cfg, data_size)
        groups = stage_groups(method, replace(stage, lr=stage_cfg.lr), stage_cfg)
        if not groups:
            raise TrainingError(f"stage {stage.name!r} of {method.registered_name!r} has nothing to train")
        steps = stage_cfg.steps
        batches = batches_for(stage)
        start, resume_state, elapsed = 0, None, 0.0
        if point is not None and index == point.stage:
            start, elapsed = point.step, point.state["elapsed"]
            if point.step > 0:
                resume_state = point.state
                batches.load_state_dict(point.state["data"])
            set_rng_state(point.state["rng"])
        began = time.perf_counter() - elapsed

        def save(done: int, optimizer, scaler, stopping: bool = False, index=index, batches=batches, began=began,
                 steps=steps) -> None:
            if checkpoint is not None and (checkpoint.due(done, steps) or (stopping and done < steps)):
                checkpoint.save({**saved_state(index, done, time.perf_counter() - began),
                                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                 "data": batches.state_dict()})

        table = teacher_table(stage) if teacher_table is not None else None
        step_fn, ddp = method_step(method, stage, table), None
        if distributed:
            ddp = _ddp(method, step_fn, runtime)
            step_fn = _sharded(ddp, dist_info)
        last = train_steps(step_fn, groups, batches, steps, stage_cfg, runtime, stage.name, log, start,
                           resume_state, save, distributed)
        if ddp is not None:  # its gradient hooks must be gone before the next stage builds its own
            del ddp, step_fn
            gc.collect()
        results.append(StageResult(stage.name, steps, time.perf_counter() - began, last))
        if on_stage_end is not None:
            on_stage_end(stage)
        if checkpoint is not None:
            checkpoint.save(saved_state(index + 1, 0, 0.0))
        point = None
    return results


class _StepModule(nn.Module):
    """A method's training step as a module, so DistributedDataParallel sees the forward it must hook."""

    def __init__(self, method: Method, step_fn: StepFn):
        super().__init__()
        self.method, self.step_fn = method, step_fn

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None, input_ids: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        return self.step_fn(Batch(images=images, labels=labels, meta={} if input_ids is None else
                                  {INPUT_IDS: input_ids}))


def _ddp(method: Method, step_fn: StepFn, runtime: Runtime) -> nn.parallel.DistributedDataParallel:
    """DDP around one stage's step: it hooks the parameters trainable when it is built, so one per stage.
    ``static_graph``: a stage uses the same parameters every step; DDP learns from the first step which ones are
    unused (a method's module that a stage never calls), so they need no special care."""
    ids = [runtime.device.index or 0] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_StepModule(method, step_fn), device_ids=ids, static_graph=True)


def _sharded(ddp: nn.parallel.DistributedDataParallel, info: DistInfo) -> StepFn:
    """The DDP step on this process's slice of each global batch."""

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        part = shard(batch, info)
        return ddp(part.images, part.labels, part.meta.get(INPUT_IDS))

    return step
