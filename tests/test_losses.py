"""Golden values: each loss against a reference written independently from the published formula."""

import math

import torch

from kdbench_methods.kd import pixel_kd_loss


def reference_pixel_kd(student, teacher, temperature):
    """KL(p_t || p_s) per pixel with p = softmax(z / T) over classes, averaged over pixels, times T²,
    computed pixel by pixel with plain Python math."""
    b, k, h, w = student.shape
    total = 0.0
    for n in range(b):
        for y in range(h):
            for x in range(w):
                zs = [float(student[n, c, y, x]) / temperature for c in range(k)]
                zt = [float(teacher[n, c, y, x]) / temperature for c in range(k)]
                ms, mt = max(zs), max(zt)
                ps = [math.exp(v - ms) for v in zs]
                pt = [math.exp(v - mt) for v in zt]
                ss, st = sum(ps), sum(pt)
                total += sum((pt[c] / st) * math.log((pt[c] / st) / (ps[c] / ss)) for c in range(k))
    return total / (b * h * w) * temperature**2


def test_pixel_kd_matches_formula_at_several_temperatures():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 4, 3, 3, generator=gen) * 2
    teacher = torch.randn(2, 4, 3, 3, generator=gen) * 2
    for t in (1.0, 2.0, 4.0):
        got = float(pixel_kd_loss(student, teacher, t))
        assert math.isclose(got, reference_pixel_kd(student, teacher, t), rel_tol=1e-5)


def test_pixel_kd_fixed_value():
    student = torch.tensor([[[[1.0]], [[0.0]]]])  # B1, K2, 1×1
    teacher = torch.tensor([[[[0.0]], [[1.0]]]])
    # p_t = (1/(1+e), e/(1+e)), p_s reversed: KL = (e-1)/(1+e) * 1 (log ratio is ±1)
    expected = (math.e - 1) / (math.e + 1)
    assert math.isclose(float(pixel_kd_loss(student, teacher, 1.0)), expected, rel_tol=1e-6)


def test_pixel_kd_zero_when_equal_and_gradient_reaches_student_only():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(1, 3, 2, 2, generator=gen)
    student = teacher.clone().requires_grad_(True)
    loss = pixel_kd_loss(student, teacher, 2.0)
    assert abs(float(loss.detach())) < 1e-7
    student2 = torch.randn(1, 3, 2, 2, generator=gen, requires_grad=True)
    pixel_kd_loss(student2, teacher, 2.0).backward()
    assert student2.grad is not None and student2.grad.abs().sum() > 0
    assert teacher.grad is None
