"""IFVD (Wang et al., ECCV 2020): golden values of the loss against a loop-by-loop NumPy reading of the paper's
formula, the shared nearest-neighbour label helper, gradients, the method on ViT and CNN students, and a run
through ``kdbench run``."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch

from kdbench.distill import labels_to_grid, resize_to
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
from kdbench_methods.ifvd import IntraClassFeatureVariation, ifvd_loss, intra_class_feature_variation

IGNORE = 255

# ------------------------------------------------------------------------------------------ references


def ref_labels_to_grid(labels: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest neighbour as the official ``nn.Upsample(mode='nearest')``: source index floor(i·H/h)."""
    b, big_h, big_w = labels.shape
    out = np.zeros((b, h, w), dtype=labels.dtype)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                out[n, i, j] = labels[n, (i * big_h) // h, (j * big_w) // w]
    return out


def cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def ref_ifv(feat: np.ndarray, labels: np.ndarray) -> dict[tuple[int, int, int], float]:
    """IFV of every non-ignore pixel: cosine between its feature and the mean feature of its class in its image."""
    b, c, h, w = feat.shape
    ifv = {}
    for n in range(b):
        for k in sorted({int(x) for x in labels[n].ravel()} - {IGNORE}):
            pixels = [(i, j) for i in range(h) for j in range(w) if labels[n, i, j] == k]
            proto = [sum(float(feat[n, ch, i, j]) for i, j in pixels) / len(pixels) for ch in range(c)]
            for i, j in pixels:
                ifv[(n, i, j)] = cosine([float(feat[n, ch, i, j]) for ch in range(c)], proto)
    return ifv


def ref_ifvd(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray) -> float:
    """Σ over valid pixels of (IFV_s − IFV_t)², divided by every pixel of the batch (the official MSELoss)."""
    ifv_s, ifv_t = ref_ifv(student, labels), ref_ifv(teacher, labels)
    assert ifv_s.keys() == ifv_t.keys()
    return sum((ifv_s[p] - ifv_t[p]) ** 2 for p in ifv_s) / labels.size


def random_case(b: int, cs: int, ct: int, h: int, w: int, ignore: float, seed: int):
    rng = np.random.default_rng(seed)
    student = rng.normal(size=(b, cs, h, w))
    teacher = rng.normal(size=(b, ct, h, w))
    labels = rng.integers(0, CLASSES, size=(b, h, w))
    labels[rng.random((b, h, w)) < ignore] = IGNORE
    return student, teacher, labels


def t(x: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)


# ------------------------------------------------------------------------------------------ the label helper


@pytest.mark.parametrize(("size", "grid"), [((16, 16), (4, 4)), ((16, 16), (5, 3)), ((7, 9), (3, 4)),
                                            ((5, 3), (8, 7)), ((1, 1), (2, 3))])
def test_labels_to_grid_matches_nearest_reference_and_keeps_ignore(size, grid):
    rng = np.random.default_rng(sum(size) + sum(grid))
    labels = rng.integers(0, CLASSES, size=(2, *size))
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    got = labels_to_grid(t(labels, torch.int64), grid)
    assert got.dtype == torch.int64 and tuple(got.shape) == (2, *grid)
    np.testing.assert_array_equal(got.numpy(), ref_labels_to_grid(labels, *grid))
    assert set(np.unique(got.numpy())) <= set(np.unique(labels))


def test_labels_to_grid_is_a_no_op_on_its_own_grid_and_keeps_255_whole():
    labels = torch.full((1, 8, 8), IGNORE, dtype=torch.int64)
    labels[0, :4] = 3
    assert labels_to_grid(labels, (8, 8)) is labels
    np.testing.assert_array_equal(labels_to_grid(labels, (2, 2)).numpy(), [[[3, 3], [IGNORE, IGNORE]]])


# ------------------------------------------------------------------------------------------ golden values


def test_hand_checked_case_with_an_ignore_pixel_and_different_widths():
    # teacher pixels (1,0), (0,1) of class 0: prototype (½,½), both IFVs 1/√2; the student is 1-d and positive,
    # so both IFVs are 1; the ignore pixel adds nothing but counts in the denominator (3 pixels)
    teacher = torch.tensor([[[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])
    student = torch.tensor([[[[1.0, 2.0, 5.0]]]])
    labels = torch.tensor([[[0, 0, IGNORE]]])
    want = 2 * (1 - 1 / math.sqrt(2)) ** 2 / 3
    assert math.isclose(float(ifvd_loss(student, teacher, labels, CLASSES)), want, rel_tol=1e-6)
    ifv = intra_class_feature_variation(teacher, labels, CLASSES)
    np.testing.assert_allclose(ifv[0, :2].numpy(), [1 / math.sqrt(2)] * 2, rtol=1e-6)


def test_a_class_with_one_pixel_has_ifv_one():
    feat = torch.tensor([[[[3.0, -1.0]], [[0.5, 2.0]]]])
    ifv = intra_class_feature_variation(feat, torch.tensor([[[1, 4]]]), CLASSES)
    np.testing.assert_allclose(ifv.numpy(), [[1.0, 1.0]], rtol=1e-6)


@pytest.mark.parametrize(("b", "cs", "ct", "h", "w", "ignore", "seed"), [
    (2, 4, 4, 4, 4, 0.0, 0),
    (1, 3, 7, 3, 5, 0.3, 1),   # one sample, odd grid, different widths
    (3, 16, 5, 5, 2, 0.5, 2),
    (2, 1, 2, 7, 7, 0.2, 3),   # a single student channel
])
def test_ifvd_matches_reference(b, cs, ct, h, w, ignore, seed):
    student, teacher, labels = random_case(b, cs, ct, h, w, ignore, seed)
    got = float(ifvd_loss(t(student), t(teacher), t(labels, torch.int64), CLASSES))
    assert math.isclose(got, ref_ifvd(student, teacher, labels), rel_tol=1e-5, abs_tol=1e-8)
    assert got > 0


def test_ifv_map_matches_reference_pixel_by_pixel():
    _, teacher, labels = random_case(2, 1, 6, 3, 4, 0.25, 7)
    got = intra_class_feature_variation(t(teacher), t(labels, torch.int64), CLASSES).reshape(2, 3, 4)
    for (n, i, j), value in ref_ifv(teacher, labels).items():
        assert math.isclose(float(got[n, i, j]), value, rel_tol=1e-5, abs_tol=1e-7)


def test_loss_is_zero_where_it_should_be():
    student, teacher, labels = random_case(2, 5, 5, 4, 4, 0.2, 11)
    tt, lab = t(teacher), t(labels, torch.int64)
    assert float(ifvd_loss(tt.clone(), tt, lab, CLASSES)) == 0.0
    # an isometric embedding into a wider space keeps every cosine: no adapter is needed across widths
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(9, 5)))
    wider = t(np.einsum("dc,bchw->bdhw", q, teacher))
    assert float(ifvd_loss(wider, tt, lab, CLASSES)) < 1e-10
    assert float(ifvd_loss(2.5 * tt, tt, lab, CLASSES)) < 1e-10  # a global scale changes no cosine
    assert float(ifvd_loss(t(student), tt, torch.full_like(lab, IGNORE), CLASSES)) == 0.0
    assert float(ifvd_loss(t(student), tt, lab, CLASSES)) > 1e-3


def test_gradients_reach_the_student_never_the_teacher():
    student, teacher, labels = random_case(2, 3, 4, 4, 4, 0.2, 5)
    s, tt = t(student).requires_grad_(True), t(teacher).requires_grad_(True)
    ifvd_loss(s, tt, t(labels, torch.int64), CLASSES).backward()
    assert has_grad(s)
    assert tt.grad is None


# ------------------------------------------------------------------------------------------ the method


build = functools.partial(build_method, "ifvd")


def batch(method: IntraClassFeatureVariation) -> Batch:
    """Labels 255 on whole rows 0-2 (row 0 of the teacher's 4×4 grid), no scattered ignore pixels."""
    return tiny_batch(method, ignore_fraction=0, ignore_rows=3)


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-resnet", {"level": 1}),
                                             ("tiny-resnet", {"level": 0})])
def test_method_term_is_weight_times_reference_on_the_teacher_grid(student, hp):
    method = build(student, **hp)
    bt = batch(method)
    with torch.no_grad():
        s_out, t_out = method.student(bt.images), method.teacher(bt.images)
        terms = method.loss(method.stages()[0], bt, s_out, t_out)
    level = method.hp["level"]
    teacher = t_out.features[level]
    assert teacher.shape[-2:] == (4, 4)
    student_map = resize_to(s_out.features[level], (4, 4))  # a CNN's level-1 map is 2×2 here
    labels = ref_labels_to_grid(bt.labels.numpy(), 4, 4)
    want = 20.0 * ref_ifvd(student_map.double().numpy(), teacher.double().numpy(), labels)
    assert set(terms) == {"task", "ifvd"}
    assert math.isclose(float(terms["ifvd"]), want, rel_tol=1e-4)


def test_cnn_deepest_single_cell_gives_a_constant_student_ifv():
    # documented: at 16 px the CNN's stride-32 map is one cell; resampled to 4×4 every pixel equals its prototype
    method = build("tiny-resnet")
    bt = batch(method)
    with torch.no_grad():
        s_out = method.student(bt.images)
    assert s_out.features[-1].shape[-2:] == (1, 1)
    ifv = intra_class_feature_variation(resize_to(s_out.features[-1], (4, 4)), labels_to_grid(bt.labels, (4, 4)),
                                        CLASSES)
    np.testing.assert_allclose(ifv.numpy(), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-resnet", {"level": 1})])
def test_method_gradients_reach_the_student_never_the_teacher(student, hp):
    method = build(student, **hp)
    for p in method.teacher.parameters():
        p.requires_grad_(True)
    bt = batch(method)
    t_out = method.teacher(bt.images)  # autograd on: only the method's own detaching protects the teacher
    terms = method.loss(method.stages()[0], bt, method.student(bt.images), t_out)
    terms["ifvd"].backward()
    assert has_grad(student_input_weight(method))
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.extra_modules() == [] and method.extra_parameter_count() == 0


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-resnet", {"level": 1})])
def test_training_steps_move_the_student_and_leave_the_teacher(student, hp):
    method = build(student, seed=1, **hp)
    teacher_before = copy.deepcopy(method.teacher.state_dict())
    student_before = copy.deepcopy(method.student.state_dict())
    logs = train_tiny(method)
    assert all(torch.equal(v, method.teacher.state_dict()[k]) for k, v in teacher_before.items())
    after = method.student.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in student_before.items() if k.startswith("backbone."))
    assert all(math.isfinite(row["loss/ifvd"]) and row["loss/ifvd"] > 0 for row in logs)


def test_hyperparameters_overrides_and_refusals():
    cls = METHODS.get("ifvd")
    assert cls is IntraClassFeatureVariation and cls.defaults == {"weight": 20.0, "level": -1}
    assert cls.teacher_taps(cls.resolve_hparams({})) == frozenset({"features"})
    assert cls.description().startswith("IFVD: per-pixel cosine similarity to its class prototype")
    cls.check_search_space()
    method = build(weight="200")
    assert method.hp["weight"] == 200.0 and isinstance(method.hp["weight"], float)
    with pytest.raises(UserError, match=r"method\.ifvd\.weight must be >= 0"):
        build(weight=-1.0)
    with pytest.raises(UserError, match=r"method\.ifvd\.level=5 is out of range"):
        build(level=5)
    with pytest.raises(UserError, match="has no hyper-parameter 'lambda_ifv'"):
        build(lambda_ifv=1.0)


def test_cli_runs_ifvd_on_the_smoke_suite(tmp_path):
    mine, metrics = run_smoke("ifvd", tmp_path / "out", settings=["method.ifvd.weight=30"])
    assert {r["domain"] for r in mine} == {"game", "city", "dashcam", "street"}
    assert all(r["hparams"] == {"weight": 30.0, "level": -1} for r in mine)
    rows = metrics["tiny-f2l"]
    assert rows and all(math.isfinite(row["loss/ifvd"]) and math.isfinite(row["loss/task"]) for row in rows)
    assert any(row["loss/ifvd"] > 0 for row in rows)
