"""FLOP counting and utilisation (kdbench.engine.flops), checked against FLOPs written out by hand from the
architectures, and the side-by-side timer the benchmarks use."""

import pytest
import torch
from torch import nn

from kdbench.engine.flops import counted_flops, spec_peak_flops, utilisation
from kdbench.models.zoo import MODELS
from kdbench.testing.timing import alternate
from kdbench.testing.workloads import step_workload


def vit_forward_flops(batch: int, size: int, patch: int, width: int, depth: int) -> int:
    """Multiply-adds x2 of a ViT forward: patch embedding, then per block qkv, QKᵀ, AV, projection and the 4x
    MLP over T = patches + CLS tokens."""
    patches = (size // patch) ** 2
    tokens = patches + 1
    embed = 2 * patches * width * 3 * patch * patch
    block = 2 * tokens * width * 3 * width + 2 * 2 * tokens * tokens * width + 2 * tokens * width * width \
        + 2 * 2 * tokens * width * 4 * width
    return batch * (embed + depth * block)


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "explicit-attention"])
def test_vit_forward_flops_match_the_architecture(fused):
    backbone = MODELS.get("tiny-dinov2").build_backbone(64)
    for module in backbone.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        counted = counted_flops(lambda: backbone(images))
    assert counted == vit_forward_flops(3, 64, 16, 32, 4)


def test_backward_is_counted():
    """Forward 2B(ih + ho); backward: both weight gradients, and the input gradient of the second layer only
    (the input needs none)."""
    b, i, h, o = 5, 7, 11, 3
    net = nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))
    x = torch.randn(b, i)
    assert counted_flops(lambda: net(x).sum().backward()) == 2 * b * (i * h + h * o) + 2 * b * i * h + 4 * b * h * o


def test_a_training_step_counts_teacher_forward_and_student_forward_backward():
    """student-only's step is the student's forward and backward; kd adds the teacher's forward alone."""
    alone = step_workload("student-only", "tiny-real-f2l", "train", 32, 2).flops()
    with_teacher = step_workload("kd", "tiny-real-f2l", "train", 32, 2)
    teacher = with_teacher.method.teacher
    with torch.no_grad():
        teacher_forward = counted_flops(lambda: teacher(with_teacher.batch.images, with_logits=True))
    assert alone > 0 and with_teacher.flops() == alone + teacher_forward


def test_a_step_is_counted_at_full_precision_whatever_its_autocast():
    """The count of a bf16 workload is its fp32 count: FLOPs do not depend on the precision, and counting under
    autocast failed on CUDA (torch 2.11, an H200; tests/test_gpu.py checks it there)."""
    fp32 = step_workload("gkd", "tiny-real-f2l", "domain-agnostic", 32, 2).flops()
    bf16 = step_workload("gkd", "tiny-real-f2l", "domain-agnostic", 32, 2, amp="bf16")
    calls = []
    original = bf16.run
    bf16.run = lambda *args, **kwargs: calls.append(kwargs["runtime"].amp_dtype) or original(*args, **kwargs)
    assert bf16.flops() == fp32 > 0 and calls == [None]


def test_peak_lookup_and_utilisation(monkeypatch):
    monkeypatch.delenv("KDBENCH_PEAK_TFLOPS", raising=False)
    assert spec_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert spec_peak_flops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756e12)
    assert spec_peak_flops("NVIDIA A100-SXM4-80GB", "fp16") == pytest.approx(312e12)
    assert spec_peak_flops("NVIDIA H100 80GB HBM3", "fp32") is None
    assert spec_peak_flops("cpu", "bf16") is None
    monkeypatch.setenv("KDBENCH_PEAK_TFLOPS", "100")
    assert spec_peak_flops("cpu", "fp32") == pytest.approx(1e14)
    assert utilisation(35e12, 0.5, 200e12) == pytest.approx(0.35)


def test_alternate_times_every_arm_in_turn():
    calls = []
    times = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b"] * 4
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)
