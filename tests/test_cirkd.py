"""CIRKD, mini-batch variant (Yang et al., CVPR 2022): golden values of the pixel-to-pixel and pixel-to-region
terms against loop-by-loop NumPy readings of the formulas, gradients, the projection head, the method on ViT and
CNN students, and a run through ``kdbench run``."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from kdbench.distill import resize_to
from kdbench.errors import UserError
from kdbench.method import METHODS, Batch
from kdbench.testing.methods import (
    CLASSES,
    build_method,
    has_grad,
    run_smoke,
    student_input_weight,
    tiny_batch,
    train_tiny,
)
from kdbench_methods.cirkd import CrossImageRelationalKD, pixel_region_loss, pixel_relation_loss

IGNORE = 255

# ------------------------------------------------------------------------------------------ references


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def pixels(fmap: np.ndarray, n: int) -> list[list[float]]:
    """Image n's unit pixel vectors, row-major."""
    _, c, h, w = fmap.shape
    return [unit([float(fmap[n, ch, i, j]) for ch in range(c)]) for i in range(h) for j in range(w)]


def dot(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v, strict=True))


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    e = [math.exp(v - top) for v in values]
    return [x / sum(e) for x in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def ref_avg_pool(fmap: np.ndarray) -> np.ndarray:
    """2×2 average pool, stride 2, ceil mode: a window cut by the border averages the cells it has."""
    b, c, h, w = fmap.shape
    oh, ow = -(-h // 2), -(-w // 2)
    out = np.zeros((b, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = fmap[:, :, 2 * i: 2 * i + 2, 2 * j: 2 * j + 2].mean(axis=(2, 3))
    return out


def ref_pixel_relation(student: np.ndarray, teacher: np.ndarray, tau: float, pool: bool = False) -> float:
    """1/B² Σ_(i,j) 1/N Σ_rows KL(softmax(t_p·t_q/τ over q in j) || softmax(s_p·s_q/τ over q in j))."""
    if pool:
        student, teacher = ref_avg_pool(student), ref_avg_pool(teacher)
    b = student.shape[0]
    s = [pixels(student, n) for n in range(b)]
    t = [pixels(teacher, n) for n in range(b)]
    total = 0.0
    for i in range(b):
        for j in range(b):
            pair = 0.0
            for p in range(len(s[i])):
                p_s = softmax([dot(s[i][p], q) / tau for q in s[j]])
                p_t = softmax([dot(t[i][p], q) / tau for q in t[j]])
                pair += kl(p_t, p_s)
            total += pair / len(s[i])
    return total / (b * b)


def ref_pixel_region(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """Regions: per image and class present, the unit mean of the unit teacher pixels; anchors: valid pixels of the
    whole batch; mean over anchors of KL(softmax(t̂·r/τ over regions) || softmax(ŝ·r/τ over regions))."""
    b, _, h, w = teacher.shape
    regions, anchors = [], []
    for n in range(b):
        t_pix, s_pix = pixels(teacher, n), pixels(student, n)
        flat = [int(x) for x in labels[n].ravel()]
        for k in sorted(set(flat) - {IGNORE}):
            members = [t_pix[p] for p in range(h * w) if flat[p] == k]
            regions.append(unit([sum(col) / len(members) for col in zip(*members, strict=True)]))
        anchors += [(s_pix[p], t_pix[p]) for p in range(h * w) if flat[p] != IGNORE]
    total = 0.0
    for s_p, t_p in anchors:
        total += kl(softmax([dot(t_p, r) / tau for r in regions]), softmax([dot(s_p, r) / tau for r in regions]))
    return total / len(anchors)


def random_maps(b: int, cs: int, ct: int, h: int, w: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, cs, h, w)), rng.normal(size=(b, ct, h, w))


def random_labels(b: int, h: int, w: int, ignore: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    labels = rng.integers(0, CLASSES, size=(b, h, w))
    labels[rng.random((b, h, w)) < ignore] = IGNORE
    return labels


def t(x: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)


HAND_KL = (math.e / (1 + math.e)) * math.log(2 * math.e / (1 + math.e)) + (1 / (1 + math.e)) * math.log(
    2 / (1 + math.e))  # KL(softmax([1, 0]) || uniform over two)

# ------------------------------------------------------------------------------------------ golden values


def test_pixel_relation_hand_checked_case():
    # teacher pixels orthogonal: each row's logits are [1, 0] (τ = 1); a 1-d student has all similarities 1,
    # so its rows are uniform; every row (and so the mean) is KL(softmax([1, 0]) || [½, ½])
    teacher = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    student = torch.tensor([[[[2.0, 0.5]]]])
    assert math.isclose(float(pixel_relation_loss(student, teacher, 1.0)), HAND_KL, rel_tol=1e-6)
    assert math.isclose(HAND_KL, 0.1109441, rel_tol=1e-5)


def test_pixel_region_hand_checked_case_drops_ignore_anchors():
    # regions of class 0 and 1 are the teacher's (1,0) and (0,1); the ignore pixel (1,1)/√2 is neither a region
    # member nor an anchor (as an anchor it would add a zero and the mean would fall to 2/3 of the value)
    teacher = torch.tensor([[[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])
    student = torch.tensor([[[[1.0, 1.0, 0.3]], [[1.0, 1.0, -2.0]]]])
    labels = torch.tensor([[[0, 1, IGNORE]]])
    got = float(pixel_region_loss(student, teacher, labels, CLASSES, 1.0))
    assert math.isclose(got, HAND_KL, rel_tol=1e-6)


@pytest.mark.parametrize(("b", "cs", "ct", "h", "w", "tau", "pool", "seed"), [
    (2, 4, 4, 3, 3, 0.1, False, 0),
    (1, 3, 7, 3, 5, 0.1, False, 1),   # one sample, odd grid, different widths
    (3, 5, 2, 2, 3, 0.5, False, 2),
    (2, 3, 6, 3, 5, 0.1, True, 3),    # pooled: ceil-mode windows cut by the border
    (1, 2, 2, 5, 4, 0.2, True, 4),
])
def test_pixel_relation_matches_reference(b, cs, ct, h, w, tau, pool, seed):
    student, teacher = random_maps(b, cs, ct, h, w, seed)
    got = float(pixel_relation_loss(t(student), t(teacher), tau, pool))
    assert math.isclose(got, ref_pixel_relation(student, teacher, tau, pool), rel_tol=1e-4)
    assert got > 0


def test_pixel_relation_couples_images_across_the_batch():
    # a change in image 1 alone must change the loss seen from image 0's rows (pairs (0, 1) and (1, 0))
    student, teacher = random_maps(2, 3, 3, 2, 2, 9)
    base = pixel_relation_loss(t(student), t(teacher), 0.1)
    per_image = sum(float(pixel_relation_loss(t(student[n: n + 1]), t(teacher[n: n + 1]), 0.1)) for n in range(2))
    assert not math.isclose(float(base), per_image / 4, rel_tol=1e-3)


@pytest.mark.parametrize(("b", "c", "h", "w", "tau", "ignore", "seed"), [
    (2, 4, 4, 4, 0.1, 0.0, 0),
    (1, 5, 3, 5, 0.1, 0.3, 1),   # one sample, odd grid
    (3, 2, 2, 3, 0.3, 0.5, 2),
    (2, 8, 5, 1, 0.1, 0.2, 3),
])
def test_pixel_region_matches_reference(b, c, h, w, tau, ignore, seed):
    student, teacher = random_maps(b, c, c, h, w, seed)
    labels = random_labels(b, h, w, ignore, seed)
    got = float(pixel_region_loss(t(student), t(teacher), t(labels, torch.int64), CLASSES, tau))
    assert math.isclose(got, ref_pixel_region(student, teacher, labels, tau), rel_tol=1e-4)
    assert got > 0


def test_losses_are_zero_where_they_should_be():
    student, teacher = random_maps(2, 3, 5, 3, 3, 5)
    labels = t(random_labels(2, 3, 3, 0.2, 5), torch.int64)
    tt = t(teacher)
    assert float(pixel_relation_loss(tt.clone(), tt, 0.1)) < 1e-6
    assert float(pixel_region_loss(tt.clone(), tt, labels, CLASSES, 0.1)) < 1e-6
    # the pixel term is width-free: an isometric embedding and a per-pixel positive scale keep every cosine
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(9, 5)))
    wider = t(np.einsum("dc,bchw->bdhw", q, teacher))
    scale = t(np.random.default_rng(1).uniform(0.5, 3.0, size=(2, 1, 3, 3)))
    assert float(pixel_relation_loss(wider * scale, tt, 0.1)) < 1e-6
    assert float(pixel_relation_loss(t(student), tt, 0.1)) > 1e-2
    # nothing valid: zero, but still attached to the student's graph
    s = t(random_maps(2, 5, 5, 3, 3, 6)[0]).requires_grad_(True)
    none_valid = pixel_region_loss(s, tt, torch.full_like(labels, IGNORE), CLASSES, 0.1)
    assert float(none_valid.detach()) == 0.0 and none_valid.requires_grad
    # one image of one class: a single region, every distribution is a point mass, nothing to distil; the same
    # class in two images gives two regions, and a signal
    one = torch.zeros_like(labels)
    assert float(pixel_region_loss(s[:1], tt[:1], one[:1], CLASSES, 0.1).detach()) < 1e-6
    assert float(pixel_region_loss(s, tt, one, CLASSES, 0.1).detach()) > 1e-4


def test_gradients_reach_the_student_never_the_teacher():
    student, teacher = random_maps(2, 4, 4, 3, 3, 8)
    s, tt = t(student).requires_grad_(True), t(teacher).requires_grad_(True)
    labels = t(random_labels(2, 3, 3, 0.2, 8), torch.int64)
    (pixel_relation_loss(s, tt, 0.1) + pixel_region_loss(s, tt, labels, CLASSES, 0.1)).backward()
    assert has_grad(s)
    assert tt.grad is None


# ------------------------------------------------------------------------------------------ the method


build = functools.partial(build_method, "cirkd")


def batch(method: CrossImageRelationalKD) -> Batch:
    """Labels 255 on whole rows 0-2 (row 0 of the teacher's 4×4 grid), no scattered ignore pixels."""
    return tiny_batch(method, ignore_fraction=0, ignore_rows=3)


def test_projection_head_is_the_official_conv_bn_relu_conv_to_teacher_width():
    head = build("tiny-resnet").head
    assert [type(m) for m in head] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert (head[0].in_channels, head[0].out_channels, head[3].out_channels) == (512, 32, 32)
    assert head[0].kernel_size == head[3].kernel_size == (1, 1) and head[0].bias is None and head[3].bias is None


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-resnet", {"level": 1}),
                                             ("tiny-vit-s", {"tau": 0.3, "pixel_weight": 2.0, "pool": True})])
def test_method_terms_are_weights_times_references(student, hp):
    method = build(student, **hp)
    bt = batch(method)
    with torch.no_grad():
        s_out, t_out = method.student(bt.images), method.teacher(bt.images)
        terms = method.loss(method.stages()[0], bt, s_out, t_out)
        level, tau = method.hp["level"], method.hp["tau"]
        teacher = t_out.features[level]
        embedding = resize_to(method.head(s_out.features[level]), (4, 4))  # head, then the teacher's grid
    student_map = resize_to(s_out.features[level], (4, 4))
    labels = bt.labels.numpy()[:, ::4, ::4]  # nearest from 16×16 to 4×4: every fourth row and column
    hp_ = method.hp
    want_pixel = hp_["pixel_weight"] * ref_pixel_relation(student_map.double().numpy(), teacher.double().numpy(),
                                                          tau, hp_["pool"])
    want_region = hp_["region_weight"] * ref_pixel_region(embedding.double().numpy(), teacher.double().numpy(),
                                                          labels, tau)
    assert set(terms) == {"task", "pixel", "region"}
    assert math.isclose(float(terms["pixel"]), want_pixel, rel_tol=1e-4)
    assert math.isclose(float(terms["region"]), want_region, rel_tol=1e-4)


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-resnet", {"level": 1})])
def test_method_gradients_reach_student_and_head_never_teacher(student, hp):
    method = build(student, **hp)
    for p in method.teacher.parameters():
        p.requires_grad_(True)
    bt = batch(method)
    t_out = method.teacher(bt.images)  # autograd on: only the method's own detaching protects the teacher
    terms = method.loss(method.stages()[0], bt, method.student(bt.images), t_out)
    (terms["pixel"] + terms["region"]).backward()
    assert has_grad(student_input_weight(method))
    assert all(has_grad(p) for p in method.head.parameters())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.extra_modules() == [method.head]


def test_pixel_term_alone_reaches_the_student_without_the_head():
    method = build()
    bt = batch(method)
    with torch.no_grad():
        t_out = method.teacher(bt.images)
    method.loss(method.stages()[0], bt, method.student(bt.images), t_out)["pixel"].backward()
    assert has_grad(method.student.backbone.vit.patch_embed.proj.weight)
    assert all(p.grad is None for p in method.head.parameters())


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-resnet", {})])
def test_training_steps_move_student_and_head_and_leave_the_teacher(student, hp):
    method = build(student, seed=1, **hp)
    teacher_before = copy.deepcopy(method.teacher.state_dict())
    student_before = copy.deepcopy(method.student.state_dict())
    head_before = copy.deepcopy(method.head.state_dict())
    logs = train_tiny(method)
    assert all(torch.equal(v, method.teacher.state_dict()[k]) for k, v in teacher_before.items())
    after = method.student.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in student_before.items() if k.startswith("backbone."))
    assert any(not torch.equal(v, method.head.state_dict()[k]) for k, v in head_before.items())
    for term in ("pixel", "region"):
        assert all(math.isfinite(row[f"loss/{term}"]) for row in logs)


def test_hyperparameters_overrides_and_refusals():
    cls = METHODS.get("cirkd")
    assert cls is CrossImageRelationalKD
    assert cls.defaults == {"pixel_weight": 1.0, "region_weight": 0.1, "tau": 0.1, "pool": False, "level": -1}
    assert cls.teacher_taps(cls.resolve_hparams({})) == frozenset({"features"})
    assert cls.description().startswith("CIRKD (mini-batch):")
    cls.check_search_space()
    method = build(tau="0.2", pool="true", region_weight="1")
    assert method.hp["tau"] == 0.2 and method.hp["pool"] is True and method.hp["region_weight"] == 1.0
    with pytest.raises(UserError, match=r"method\.cirkd\.region_weight must be >= 0"):
        build(region_weight=-0.1)
    with pytest.raises(UserError, match=r"method\.cirkd\.tau must be > 0"):
        build(tau=0.0)
    with pytest.raises(UserError, match=r"method\.cirkd\.level=4 is out of range"):
        build(level=4)


def test_cli_runs_cirkd_on_the_smoke_suite(tmp_path):
    mine, metrics = run_smoke("cirkd", tmp_path / "out", settings=["method.cirkd.tau=0.2"])
    assert {r["domain"] for r in mine} == {"game", "city", "dashcam", "street"}
    assert all(r["hparams"] == {**CrossImageRelationalKD.defaults, "tau": 0.2} for r in mine)
    rows = metrics["tiny-f2l"]
    assert rows and all(all(math.isfinite(row[f"loss/{k}"]) for k in ("task", "pixel", "region")) for row in rows)
    assert any(row["loss/pixel"] > 0 and row["loss/region"] > 0 for row in rows)
