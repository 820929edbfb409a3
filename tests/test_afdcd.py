"""Af-DCD (Fan et al., NeurIPS 2023): golden values of its two loss terms against references written here from the
published formula with plain Python loops, plus gradient flow and training steps for ViT and CNN students."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kdbench.config import TrainConfig
from kdbench.data.domains import get_domain
from kdbench.data.loaders import StageData
from kdbench.data.synthetic import make_split
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import train_method
from kdbench.errors import UserError
from kdbench.method import METHODS, Batch, RunContext
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import MODELS
from kdbench_methods.afdcd import (
    AfDCD,
    afdcd_losses,
    center_keep_mask,
    contrast_layout,
    effective_groups,
    mimicking_loss,
    omni_contrastive_loss,
    random_keep_mask,
)

# ------------------------------------------------------------------------------------------ references


def ref_omni_contrastive(student, teacher, tau, groups, window):
    """The omni-contrastive loss sample by sample. A sample is (image, window, position in it, channel group): the
    C/groups-vector of that group's channels at that position. Logits against the teacher's samples of the same
    window are −L1/τ; the positive is the same position and group, the negatives every sample of another group
    (any position). Cross-entropy of the positive, summed over samples, divided by B·H·W."""
    b, c, h, w = student.shape
    cg = c // groups
    wh, ww = window

    def vec(x, n, y, xx, g):
        return [float(x[n, g * cg + k, y, xx]) for k in range(cg)]

    total = 0.0
    for n in range(b):
        for wy in range(h // wh):
            for wx in range(w // ww):
                cells = [(wy * wh + dy, wx * ww + dx) for dy in range(wh) for dx in range(ww)]
                samples = [(y, x, g) for (y, x) in cells for g in range(groups)]
                for (y, x, g) in samples:
                    s = vec(student, n, y, x, g)

                    def logit(yy, xx, gg, s=s, n=n):
                        return -sum(abs(a - t) for a, t in zip(s, vec(teacher, n, yy, xx, gg), strict=True)) / tau

                    pos = logit(y, x, g)
                    row = [pos] + [logit(yy, xx, gg) for (yy, xx, gg) in samples if gg != g]
                    top = max(row)
                    total += -(pos - top - math.log(sum(math.exp(v - top) for v in row)))
    return total / (b * h * w)


def ref_max_pool_crop(x, factor, window):
    """Max over factor×factor blocks (trailing rows/columns dropped), then crop to whole windows, in plain loops."""
    b, c, h, w = x.shape
    ph, pw = h // factor, w // factor
    ph, pw = ph - ph % window[0], pw - pw % window[1]
    out = torch.empty(b, c, ph, pw, dtype=torch.float64)
    for n in range(b):
        for ch in range(c):
            for y in range(ph):
                for xx in range(pw):
                    out[n, ch, y, xx] = max(float(x[n, ch, y * factor + i, xx * factor + j])
                                            for i in range(factor) for j in range(factor))
    return out


def ref_sum_sq_over_batch(a, t):
    b = a.shape[0]
    return sum((float(u) - float(v)) ** 2 for u, v in zip(a.flatten(), t.flatten(), strict=True)) / b


# ------------------------------------------------------------------------------------------ golden values


def test_omni_contrastive_hand_value_single_position_two_groups():
    # One position, two channel groups of one channel each, student == teacher = (0, 1), τ = 1.
    # Group 0: positive |0-0| = 0, negative (group 1) |0-1| = 1 -> ℓ = log(1 + e^-1); group 1 the same by symmetry.
    # Sum over the two samples / (B·H·W = 1).
    x = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    got = float(omni_contrastive_loss(x, x.clone(), tau=1.0, groups=2, window=1))
    assert math.isclose(got, 2 * math.log(1 + math.exp(-1)), rel_tol=1e-6)


def test_omni_contrastive_hand_value_with_temperature_and_positions():
    # 1×2 window, one channel in each of two groups. Student (a_pos0, b_pos0, a_pos1, b_pos1) = (1, 0, 0, 0),
    # teacher all zeros, τ = 0.5. Sample (pos0, group0): positive |1-0|, negatives = group-1 samples at pos0 and pos1,
    # both |1-0|: three equal logits -> log 3. Every other sample is at distance 0 from every teacher sample: its
    # row holds the positive and two negatives, all 0 -> log 3. Four samples, B·H·W = 2 -> 4·log 3 / 2.
    s = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])  # B1, C2, 1×2
    t = torch.zeros_like(s)
    got = float(omni_contrastive_loss(s, t, tau=0.5, groups=2, window=(1, 2)))
    assert math.isclose(got, 2 * math.log(3), rel_tol=1e-6)


def test_same_group_other_positions_are_not_negatives():
    # One channel group: no sample has a negative, whatever the features are, so the loss is exactly 0.
    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 4, 2, 2, generator=gen), torch.randn(2, 4, 2, 2, generator=gen)
    assert float(omni_contrastive_loss(s, t, tau=0.07, groups=1, window=2)) == 0.0


@pytest.mark.parametrize(("shape", "groups", "window", "tau"), [
    ((2, 4, 2, 2), 2, (2, 2), 0.5),
    ((1, 6, 2, 4), 3, (2, 2), 1.0),
    ((2, 4, 3, 2), 4, (1, 2), 0.2),
    ((1, 8, 2, 2), 2, (1, 1), 0.07),
])
def test_omni_contrastive_matches_reference(shape, groups, window, tau):
    gen = torch.Generator().manual_seed(sum(shape) + groups)
    s = torch.randn(*shape, generator=gen) * 0.3
    t = torch.randn(*shape, generator=gen) * 0.3
    got = float(omni_contrastive_loss(s, t, tau, groups, window))
    assert math.isclose(got, ref_omni_contrastive(s, t, tau, groups, window), rel_tol=1e-4)


def test_mimicking_loss_matches_reference():
    gen = torch.Generator().manual_seed(0)
    g, t = torch.randn(3, 2, 2, 3, generator=gen), torch.randn(3, 2, 2, 3, generator=gen)
    assert math.isclose(float(mimicking_loss(g, t)), ref_sum_sq_over_batch(g, t), rel_tol=1e-5)
    # Hand check: one image, two elements off by 1 and 2 -> 1 + 4 = 5.
    assert float(mimicking_loss(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2))) == 5.0


@pytest.mark.parametrize(("size", "pool", "window", "mask_seed"), [
    ((8, 8), 4, 2, 0),   # pool 4 leaves one 2×2 window
    ((9, 10), 2, 2, 1),  # pool 2 -> 4×5, cropped to 4×4 (two by two windows)
    ((3, 3), 4, 4, 2),   # too small to pool; the window shrinks to 3×3
])
def test_afdcd_losses_match_reference(size, pool, window, mask_seed):
    gen = torch.Generator().manual_seed(10 + mask_seed)
    b, c, tau, groups = 2, 4, 0.3, 2
    student = torch.randn(b, c, *size, generator=gen) * 0.5
    teacher = torch.randn(b, c, *size, generator=gen) * 0.5
    keep = random_keep_mask(b, *size, 0.5, generator=torch.Generator().manual_seed(mask_seed))

    def projector(x):
        return 2.0 * x + 0.25  # elementwise, so the reference can apply it by hand

    mimic, contrast = afdcd_losses(student, teacher, keep, projector, tau, groups, window, pool)

    generated = torch.empty(b, c, *size, dtype=torch.float64)
    for n in range(b):
        for ch in range(c):
            for y in range(size[0]):
                for x in range(size[1]):
                    generated[n, ch, y, x] = 2.0 * float(student[n, ch, y, x]) * float(keep[n, 0, y, x]) + 0.25
    assert math.isclose(float(mimic), ref_sum_sq_over_batch(generated, teacher), rel_tol=1e-5)

    factor, win = contrast_layout(*size, pool, window)
    expected_layout = {(8, 8): (4, (2, 2)), (9, 10): (2, (2, 2)), (3, 3): (1, (3, 3))}[size]
    assert (factor, win) == expected_layout
    ref = ref_omni_contrastive(ref_max_pool_crop(generated, factor, win), ref_max_pool_crop(teacher, factor, win),
                               tau, groups, win)
    assert math.isclose(float(contrast), ref, rel_tol=1e-4)


def test_contrast_layout_and_groups():
    assert contrast_layout(64, 128, 4, 4) == (4, (4, 4))  # official Cityscapes: 64×128 -> 16×32, 4×4 windows
    assert contrast_layout(8, 8, 4, 4) == (2, (4, 4))     # synth5 teacher map
    assert contrast_layout(4, 4, 4, 4) == (1, (4, 4))     # smoke teacher map
    assert contrast_layout(2, 5, 4, 4) == (1, (2, 4))
    assert contrast_layout(1, 1, 4, 4) == (1, (1, 1))
    assert effective_groups(2048, 16) == 16 and effective_groups(32, 16) == 16
    assert effective_groups(24, 16) == 12 and effective_groups(10, 16) == 10 and effective_groups(7, 4) == 1


def test_masks():
    keep = random_keep_mask(4, 50, 50, 0.75, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (4, 1, 50, 50) and set(keep.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(1 - keep.mean()) - 0.75) < 0.02
    assert float(random_keep_mask(1, 4, 4, 0.0).min()) == 1.0 and float(random_keep_mask(1, 4, 4, 1.0).max()) == 0.0
    center = center_keep_mask(1, 6, 6)[0, 0]
    expected = torch.ones(6, 6)
    expected[2:4, 2:4] = 0
    assert torch.equal(center, expected)


# ------------------------------------------------------------------------------------------ the method


CONTEXT = RunContext("F2F", 16, 6, torch.device("cpu"))


def seg(name: str, classes: int = 6) -> Segmentor:
    torch.manual_seed(0)
    bb = MODELS.get(name).build_backbone(16)
    return Segmentor(bb, LightHead(bb.level_channels, classes))


@pytest.mark.parametrize("student_name", ["tiny-vit-s", "tiny-resnet"])
def test_gradients_reach_student_adapter_and_projector_never_teacher(student_name):
    teacher, student = seg("tiny-vit-b"), seg(student_name)
    method = AfDCD(teacher, student, CONTEXT)
    assert isinstance(method.align, torch.nn.Conv2d)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 16, 16, generator=gen)
    labels = torch.randint(0, 6, (2, 16, 16), generator=gen)
    teacher_out = teacher(images)  # with autograd on, so only the method's own detaching protects the teacher
    terms = method.loss(method.stages()[0], Batch(images, labels), student(images), teacher_out)
    assert set(terms) == {"task", "fd", "ctr"} and all(torch.isfinite(v) for v in terms.values())
    (terms["fd"] + terms["ctr"]).backward()  # the distillation terms alone
    grads = [p.grad for p in student.backbone.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    for module in (method.align, method.projector):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert "teacher" not in dict(method.named_children())
    assert method.extra_parameter_count() == sum(p.numel() for p in method.align.parameters()) + sum(
        p.numel() for p in method.projector.parameters())


@pytest.fixture(scope="module")
def data():
    split = make_split(get_domain("game"), "train", 16, 16)
    return StageData(split, "urban", 16, torch.device("cpu"))


@pytest.mark.parametrize("student_name", ["tiny-vit-s", "tiny-resnet"])
def test_training_steps_for_vit_and_cnn_students(student_name, data):
    teacher, student = seg("tiny-vit-b"), seg(student_name)
    for p in teacher.parameters():
        p.requires_grad_(False)
    method = AfDCD(teacher, student, CONTEXT, projector="enhanced")
    before_t = copy.deepcopy(teacher.state_dict())
    before_extra = copy.deepcopy(method.projector.state_dict())
    logs = []
    train_method(method, lambda st: data.batches(st.data, 4, 0), TrainConfig(steps=2, batch_size=4, log_every=1),
                 resolve_runtime("cpu", "off"), logs.append)
    assert {"loss/task", "loss/fd", "loss/ctr"} <= set(logs[0])
    assert all(math.isfinite(row["loss/ctr"]) and row["loss/ctr"] > 0 for row in logs)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_t.items())
    assert any(not torch.equal(v, method.projector.state_dict()[k]) for k, v in before_extra.items())


def test_hyperparameters_registry_and_refusals():
    assert METHODS.get("afdcd") is AfDCD
    teacher, student = seg("tiny-vit-b"), seg("tiny-vit-s")
    method = AfDCD(teacher, student, CONTEXT, tau="0.1", lambda_ctr="1e-3", mask="center")
    assert method.hp["tau"] == 0.1 and isinstance(method.hp["tau"], float) and method.hp["lambda_ctr"] == 1e-3
    assert all(isinstance(AfDCD.defaults[k], float) for k in ("lambda_fd", "lambda_ctr", "tau", "mask_ratio"))
    assert isinstance(AfDCD(teacher, seg("tiny-vit-b"), CONTEXT).align, torch.nn.Identity)  # equal widths: no adapter
    with pytest.raises(UserError, match="mask"):
        AfDCD(teacher, student, CONTEXT, mask="block")
    with pytest.raises(UserError, match="projector"):
        AfDCD(teacher, student, CONTEXT, projector="mlp")
    with pytest.raises(UserError, match="groups"):
        AfDCD(teacher, student, CONTEXT, groups=0)
