"""Harness overhead: kdbench's training step (``train_steps`` over ``method_step``: schedule, autocast context,
teacher under inference mode, named terms, clipping, logging and checkpoint hooks) against a bare PyTorch loop
doing the same forward passes, loss, backward, clipping and AdamW step on the same models and batch.

The two are timed side by side, alternating, in one process, so machine load affects both alike; the ratio of
their medians is the overhead (target: at most 1.05 on CPU). Run:
``.venv/bin/pytest benchmarks/test_overhead.py --benchmark-enable -s``; docs/performance.md lists the figures.
"""

import pytest
import torch
from torch import nn

from kdbench.config import TrainConfig
from kdbench.engine.optim import make_optimizer
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import method_step, stage_groups, train_steps
from kdbench.testing.timing import alternate, medians
from kdbench.testing.workloads import step_workload

SIZE, BATCH, STEPS, ROUNDS = 32, 32, 5, 8


def build(method_name: str):
    workload = step_workload(method_name, "f2l", "train", SIZE, BATCH, classes=6)
    return workload.method, workload.stage, workload.batch


def kdbench_steps(method, stage, batch, cfg, runtime) -> None:
    groups = stage_groups(method, stage, cfg)
    train_steps(method_step(method, stage), groups, iter(lambda: batch, None), STEPS, cfg, runtime, "bench",
                log=lambda row: None)


def bare_steps(method, stage, batch, cfg) -> None:
    """The same work written as a plain loop: no schedule, no logging, no hooks, no output cloning."""
    groups = stage_groups(method, stage, cfg)
    optimizer = make_optimizer(groups)
    params = [p for g in groups for p in g["params"]]
    taps = method.teacher_taps(method.hp)
    for _ in range(STEPS):
        teacher_out = None
        if taps:
            with torch.inference_mode():
                teacher_out = method.teacher(batch.images, with_logits="logits" in taps)
            teacher_out.logits = teacher_out.logits.clone()
        student_out = method.student(batch.images, with_logits=True)
        loss = sum(method.loss(stage, batch, student_out, teacher_out).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()


@pytest.mark.parametrize("method_name", ["kd", "student-only"])
def test_harness_overhead_ratio(benchmark, method_name):
    method, stage, batch = build(method_name)
    cfg = TrainConfig(steps=STEPS, batch_size=BATCH, log_every=1, checkpoint_every=0)
    runtime = resolve_runtime("cpu", "off")
    rounds = 1 if benchmark.disabled else ROUNDS
    times = medians(alternate({"kdbench": lambda: kdbench_steps(method, stage, batch, cfg, runtime),
                               "bare": lambda: bare_steps(method, stage, batch, cfg)}, rounds))
    harness, bare = times["kdbench"], times["bare"]
    ratio = harness / bare
    benchmark.extra_info.update({"ratio": round(ratio, 4), "threads": torch.get_num_threads(),
                                 "harness_step_ms": 1000 * harness / STEPS,
                                 "bare_step_ms": 1000 * bare / STEPS})
    print(f"\n{method_name}: kdbench {1000 * harness / STEPS:.1f} ms/step, bare "
          f"{1000 * bare / STEPS:.1f} ms/step, ratio {ratio:.3f} "
          f"({torch.get_num_threads()} threads, {rounds} rounds of {STEPS} steps)")
    benchmark.pedantic(kdbench_steps, args=(method, stage, batch, cfg, runtime), rounds=3)
