"""The measured effect of each speed option (issue 7 §1), each against its own off switch, side by side.

Every test times its arms in turn over the same rounds in one process (``kdbench.testing.timing.alternate``) on the
same models and batch, and prints the median ms per step of each and their ratio. The workload is GKD's stage 1b
(the feature-distillation stage the paper spends its compute on) on the real architectures with random weights:
DINOv2-B -> DeiT-S at 224² and batch 4 on a CPU; DINOv2-L -> DeiT-B at 512² and batch 16 on a GPU. Channels-last
is timed on a CNN student (ResNet-50, student-only), the only place it acts; data loading on GTA5-sized images
through the real training pipeline. docs/performance.md lists the figures. Run:
``.venv/bin/pytest benchmarks/test_speed_options.py --benchmark-enable -s`` (``KDBENCH_BENCH_ROUNDS`` sets the
timed rounds).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.config import TrainConfig
from kdbench.data.real.catalog import get_dataset
from kdbench.data.real.files import read_image, read_label
from kdbench.data.real.streams import ImageItem, RealBatchStream, TrainImages
from kdbench.engine.distributed import DistInfo
from kdbench.engine.runtime import apply_speed_options
from kdbench.method import Batch, Method, Stage
from kdbench.testing.fixtures import write_palette, write_rgb
from kdbench.testing.timing import alternate, medians
from kdbench.testing.workloads import StepWorkload, step_workload

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
DEFAULT_AMP = "bf16" if GPU else "off"
PAIR, SIZE, BATCH = ("f2l-dinov2-l-deit-b", 512, 16) if GPU else ("f2l-dinov2-b-deit-s", 224, 4)
ROUNDS, STEPS = (10, 5) if GPU else (5, 2)
ROUNDS = int(os.environ.get("KDBENCH_BENCH_ROUNDS", ROUNDS))


def gkd_stage_1b(amp: str = DEFAULT_AMP) -> StepWorkload:
    return step_workload("gkd", PAIR, "domain-agnostic", SIZE, BATCH, DEVICE, amp)


def report(benchmark, option: str, arms: dict[str, Callable[[], None]], rounds: int = ROUNDS,
           steps: int = STEPS) -> dict[str, float]:
    """Time the arms side by side; print and record each arm's median ms per step and its ratio to the first."""
    if benchmark.disabled:
        rounds = 1
    ms = {name: 1000 * t / steps for name, t in medians(alternate(arms, rounds, torch.device(DEVICE))).items()}
    first = next(iter(ms.values()))
    shown = ", ".join(f"{name} {value:.1f} ms ({value / first:.3f})" for name, value in ms.items())
    print(f"\n{option} [{DEVICE}, {torch.get_num_threads()} threads, {rounds} rounds of {steps} steps]: {shown}")
    benchmark.extra_info.update({"device": DEVICE, "threads": torch.get_num_threads(),
                                 **{f"{name}_ms": round(value, 2) for name, value in ms.items()}})
    benchmark.pedantic(lambda: None, rounds=1)
    return ms


def test_autocast(benchmark):
    arms = {"fp32": gkd_stage_1b("off"), "bf16": gkd_stage_1b("bf16")}
    if GPU:
        arms["fp16"] = gkd_stage_1b("fp16")
    report(benchmark, "autocast", {name: lambda w=w: w.run(STEPS) for name, w in arms.items()})


def fused_attention(model: torch.nn.Module, on: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = on


def attention_arms(size: int, batch: int, steps: int) -> dict[str, Callable[[], None]]:
    """GKD stage 1b with timm's fused SDPA attention and with the explicit softmax(QKᵀ)V it replaces."""
    fused = step_workload("gkd", PAIR, "domain-agnostic", size, batch, DEVICE, DEFAULT_AMP)
    explicit = step_workload("gkd", PAIR, "domain-agnostic", size, batch, DEVICE, DEFAULT_AMP)
    fused_attention(explicit.method, False)
    return {"sdpa": lambda: fused.run(steps), "explicit": lambda: explicit.run(steps)}


def test_fused_attention(benchmark):
    report(benchmark, f"attention at {SIZE}²", attention_arms(SIZE, BATCH, STEPS))


@pytest.mark.skipif(GPU, reason="the GPU workload already runs at 512²")
def test_fused_attention_at_512(benchmark):
    """At the paper's 512² crops a ViT sees 1025 tokens, and attention's share of the step grows with their
    square; batch 1 keeps a CPU step to seconds."""
    report(benchmark, "attention at 512², batch 1", attention_arms(512, 1, 1), steps=1)


def teacher_under(context: Callable[[], contextlib.AbstractContextManager]) -> Callable[[Method, Stage], Callable]:
    """GKD's step with its teacher under ``context`` instead of ``torch.inference_mode``."""
    def make(method: Method, stage: Stage):
        def step(batch: Batch) -> dict[str, torch.Tensor]:
            with context():
                teacher_out = method.teacher(batch.images, with_logits=False)
            student_out = method.student(batch.images, with_logits=False)
            return method.loss(stage, batch, student_out, teacher_out)
        return step
    return make


def test_teacher_inference_mode(benchmark):
    base = gkd_stage_1b()
    arms = {"inference_mode": base, "no_grad": base.with_step(teacher_under(torch.no_grad)),
            "grad_mode_on": base.with_step(teacher_under(contextlib.nullcontext))}
    report(benchmark, "frozen teacher", {name: lambda w=w: w.run(STEPS) for name, w in arms.items()})


def test_compile(benchmark):
    eager, compiled = gkd_stage_1b(), gkd_stage_1b()
    apply_speed_options(compiled.method, TrainConfig(compile=True))
    start = time.perf_counter()
    compiled.run(1)
    print(f"\ncompile: first compiled step (compilation included) {time.perf_counter() - start:.1f} s")
    report(benchmark, "compile", {"eager": lambda: eager.run(STEPS), "compiled": lambda: compiled.run(STEPS)})


def test_channels_last(benchmark):
    size, batch = (512, 16) if GPU else (224, 8)
    pair = "f2l-dinov2-b-resnet50"
    dense = step_workload("student-only", pair, "train", size, batch, DEVICE, DEFAULT_AMP)
    last = step_workload("student-only", pair, "train", size, batch, DEVICE, DEFAULT_AMP)
    apply_speed_options(last.method, TrainConfig(channels_last=True))
    report(benchmark, "channels_last (ResNet-50 student)",
           {"contiguous": lambda: dense.run(STEPS), "channels_last": lambda: last.run(STEPS)})


def gta_sized_images(folder: Path, count: int) -> list[ImageItem]:
    """``count`` 1914×1052 PNG images (GTA5's size) with smooth content and labels, as GTA5's files are laid out."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        coarse = rng.integers(0, 256, (34, 60, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((1914, 1052), Image.BILINEAR))
        noisy = np.clip(image.astype(np.int16) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
        labels = np.asarray(Image.fromarray(coarse[..., 0] % 34).resize((1914, 1052), Image.NEAREST))
        items.append(ImageItem(write_rgb(folder / "images" / f"{i:05d}.png", noisy),
                               write_palette(folder / "labels" / f"{i:05d}.png", labels, ())))
    return items


def loader_stream(items: list[ImageItem], crop: int, labelled: bool, batch: int, workers: int) -> RealBatchStream:
    spec = get_dataset("gta5")
    dataset = TrainImages(items, read_image, lambda path: read_label(spec, path), crop, labelled, seed=0)
    return RealBatchStream(dataset, batch, 0, torch.device(DEVICE), workers, DistInfo())


def test_loader_workers(benchmark, tmp_path):
    """Images per second of a stage's batch stream by worker count: the labelled pipeline (GKD/Rein's, 512 crops,
    batch 8) alone, from the stream's start (worker start-up included) over 12 batches, one worker count after
    the other (a stream's workers keep prefetching, so they cannot be timed in turn). Pinned memory only acts
    when batches are copied to a GPU."""
    items = gta_sized_images(tmp_path, 12)
    batch, batches = 8, 2 if benchmark.disabled else 12
    rates = {}
    for workers in (0, 1, 2):
        stream = loader_stream(items, 512, True, batch, workers)
        start = time.perf_counter()
        for _ in range(batches):
            next(stream)
        rates[f"workers={workers}"] = batch * batches / (time.perf_counter() - start)
        del stream
    print(f"\nloader [{DEVICE}, {batches} batches of {batch}, 512 crops]: "
          + ", ".join(f"{name} {rate:.1f} images/s" for name, rate in rates.items()))
    benchmark.extra_info.update({f"{name}_images_per_s": round(rate, 2) for name, rate in rates.items()})
    benchmark.pedantic(lambda: None, rounds=1)


def test_training_while_loading(benchmark, tmp_path):
    """GKD stage 1b fed by a real stream of stage-1 views (timm's transform at the workload's size) instead of a
    fixed batch: a step's time with loading in the main process against loading in 2 workers."""
    items = gta_sized_images(tmp_path, 12)
    arms = {}
    for workers in (0, 2):
        workload = gkd_stage_1b()
        stream = loader_stream(items, SIZE, False, BATCH, workers)
        arms[f"workers={workers}"] = lambda w=workload, s=stream: w.run(STEPS, s)
    report(benchmark, "training while loading", arms)
