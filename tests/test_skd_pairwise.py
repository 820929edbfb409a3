"""SKD's pair-wise term (Liu et al., CVPR 2019): golden values against a plain-Python reading of the paper's
formula (max-pooled patches as nodes, cosine similarity of every node pair, squared difference averaged over
pairs and batch), zero cases, gradients, the method on ViT and CNN students, and a smoke run through the CLI."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from kdbench.engine.trainer import method_step
from kdbench.errors import UserError
from kdbench.method import METHODS
from kdbench.search import draw_trials
from kdbench.testing.methods import build_method, has_grad, run_smoke, student_input_weight, tiny_batch, train_tiny
from kdbench_methods.skd_pairwise import (
    PairwiseSimilarityKD,
    pairwise_similarity_loss,
    patch_kernel,
    pool_into_patches,
)

# ------------------------------------------------------------------------------------------ references


def ref_pool(fmap: list, scale: float) -> list:
    """C×h×w nested list -> C×h'×w': max over kernel×kernel windows (kernel = max(1, floor(side·scale))) that
    tile the map from the top-left, the last row/column of windows cut short by the map's edge."""
    h, w = len(fmap[0]), len(fmap[0][0])
    kh, kw = max(1, math.floor(h * scale)), max(1, math.floor(w * scale))
    rows = [(y, min(y + kh, h)) for y in range(0, h, kh)]
    cols = [(x, min(x + kw, w)) for x in range(0, w, kw)]
    return [[[max(ch[y][x] for y in range(y0, y1) for x in range(x0, x1)) for (x0, x1) in cols]
             for (y0, y1) in rows] for ch in fmap]


def ref_cosine_matrix(fmap: list) -> list:
    """Nodes in row-major order; a_ij = <f_i, f_j> / (|f_i| |f_j|)."""
    c, h, w = len(fmap), len(fmap[0]), len(fmap[0][0])
    nodes = [[fmap[k][y][x] for k in range(c)] for y in range(h) for x in range(w)]
    norms = [math.sqrt(sum(v * v for v in n)) for n in nodes]
    return [[sum(a * b for a, b in zip(ni, nj, strict=True)) / (norms[i] * norms[j]) for j, nj in enumerate(nodes)]
            for i, ni in enumerate(nodes)]


def ref_pairwise(student: torch.Tensor, teacher: torch.Tensor, scale: float) -> float:
    """(1/B) Σ_b (1/N²) Σ_i Σ_j (a^s_ij − a^t_ij)² on the pooled maps, N = nodes per sample."""
    total, batch = 0.0, student.shape[0]
    for s_b, t_b in zip(student.double().tolist(), teacher.double().tolist(), strict=True):
        a_s, a_t = ref_cosine_matrix(ref_pool(s_b, scale)), ref_cosine_matrix(ref_pool(t_b, scale))
        n = len(a_s)
        total += sum((a_s[i][j] - a_t[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2
    return total / batch


def ref_bilinear(fmap: list, size: tuple[int, int]) -> list:
    """Bilinear resampling with half-pixel centres and edge clamping (align_corners=False), C×h×w -> C×H×W."""
    h, w = len(fmap[0]), len(fmap[0][0])

    def taps(dst: int, src_len: int, dst_len: int) -> tuple[int, int, float]:
        src = max((dst + 0.5) * src_len / dst_len - 0.5, 0.0)
        i0 = min(int(src), src_len - 1)
        return i0, min(i0 + 1, src_len - 1), src - i0

    out = []
    for ch in fmap:
        rows = []
        for y in range(size[0]):
            y0, y1, ly = taps(y, h, size[0])
            row = []
            for x in range(size[1]):
                x0, x1, lx = taps(x, w, size[1])
                top = (1 - lx) * ch[y0][x0] + lx * ch[y0][x1]
                bottom = (1 - lx) * ch[y1][x0] + lx * ch[y1][x1]
                row.append((1 - ly) * top + ly * bottom)
            rows.append(row)
        out.append(rows)
    return out


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ golden values


def test_hand_value_four_nodes_two_kinds():
    # 2×2 map, scale 0.5 -> kernel 1, four nodes. Teacher nodes (1,0), (0,1), (0,1), (1,0): similarity 1 between
    # equal kinds, 0 across kinds. The student's nodes are all the same 3-vector: every similarity 1. The 8
    # cross-kind entries of the 4×4 matrix differ by 1: 8 / 4² = 0.5 (one sample).
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]).unsqueeze(0)
    student = torch.tensor([2.0, 0.5, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert math.isclose(float(pairwise_similarity_loss(student, teacher, 0.5)), 0.5, rel_tol=1e-6)
    # two samples, the second identical in student and teacher: the batch mean halves it
    both_s = torch.cat([student[:, :2], teacher])  # the first sample: still one 2-vector everywhere
    both_t = torch.cat([teacher, teacher])
    assert math.isclose(float(pairwise_similarity_loss(both_s, both_t, 0.5)), 0.25, rel_tol=1e-6)


def test_pooling_takes_channel_wise_maxima_over_ceil_windows():
    # 5×5 at scale 0.5: kernel 2, windows rows/cols {0,1}, {2,3}, {4}: 3×3 nodes, the last from one pixel
    x = torch.arange(2 * 25, dtype=torch.float32).view(1, 2, 5, 5)
    x[0, 1] = -x[0, 1]  # channel 1 decreasing: its maxima sit at each window's top-left corner
    pooled = pool_into_patches(x, 0.5)
    assert pooled.shape == (1, 2, 3, 3)
    assert pooled[0, 0].tolist() == [[6.0, 8.0, 9.0], [16.0, 18.0, 19.0], [21.0, 23.0, 24.0]]
    assert pooled[0, 1].tolist() == [[-25.0, -27.0, -29.0], [-35.0, -37.0, -39.0], [-45.0, -47.0, -49.0]]
    assert patch_kernel(65, 65, 0.5) == (32, 32)  # the official Cityscapes map: 3×3 nodes with ceil_mode
    assert patch_kernel(1, 7, 0.5) == (1, 3) and patch_kernel(8, 8, 0.125) == (1, 1)


@pytest.mark.parametrize(("b", "c_s", "c_t", "h", "w", "scale"), [
    (2, 3, 5, 4, 4, 0.5),    # different widths, 2×2 nodes
    (1, 4, 2, 5, 7, 0.5),    # one sample, odd sizes: 3×3 windows of 2×3 with ragged edges
    (3, 6, 6, 8, 8, 0.25),   # 4×4 nodes
    (1, 2, 3, 3, 2, 0.125),  # kernel 1: every position a node
    (2, 5, 3, 6, 9, 0.4),    # kernel 2×3
])
def test_loss_matches_reference(b, c_s, c_t, h, w, scale):
    seed = b * 100 + h * 10 + w
    student, teacher = randn(b, c_s, h, w, seed=seed), randn(b, c_t, h, w, seed=seed + 1)
    got = float(pairwise_similarity_loss(student, teacher, scale))
    assert got > 0
    assert math.isclose(got, ref_pairwise(student, teacher, scale), rel_tol=1e-5)


def test_loss_is_zero_where_the_structure_agrees():
    teacher = randn(2, 4, 6, 6, seed=0)
    assert float(pairwise_similarity_loss(teacher.clone(), teacher, 0.5)) == pytest.approx(0.0, abs=1e-12)
    # a positive scale per position leaves every cosine unchanged (so does max-pooling a scaled map only where
    # the scale is constant over each window: scale 1/6 pools 1×1 windows)
    scaled = teacher * (randn(2, 1, 6, 6, seed=1).abs() + 0.1)
    assert float(pairwise_similarity_loss(scaled, teacher, 1 / 6)) == pytest.approx(0.0, abs=1e-10)
    # channel-free: a wider student holding the teacher's vectors through orthonormal columns
    q, _ = torch.linalg.qr(randn(9, 4, seed=2))
    wider = torch.einsum("dc,bchw->bdhw", q, teacher)
    assert float(pairwise_similarity_loss(wider, teacher, 1 / 6)) == pytest.approx(0.0, abs=1e-10)
    # ...but a student whose positions are shuffled is not zero
    shuffled = teacher.flatten(2)[..., torch.randperm(36, generator=torch.Generator().manual_seed(3))]
    assert float(pairwise_similarity_loss(shuffled.view_as(teacher), teacher, 1 / 6)) > 1e-3
    # a single node (1×1 map) always has similarity 1 with itself
    assert float(pairwise_similarity_loss(randn(2, 3, 1, 1, seed=4), randn(2, 5, 1, 1, seed=5), 0.5)) < 1e-12


def test_mismatched_grids_are_refused_by_the_loss():
    with pytest.raises(ValueError, match="share batch size and grid"):
        pairwise_similarity_loss(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 2, 2), 0.5)


# ------------------------------------------------------------------------------------------ the method


build = functools.partial(build_method, PairwiseSimilarityKD)
batch = functools.partial(tiny_batch, ignore_fraction=0)  # the pair-wise term reads no labels: none ignored


def test_registered_with_documented_defaults_and_space():
    assert METHODS.get("skd-pairwise") is PairwiseSimilarityKD
    assert PairwiseSimilarityKD.defaults == {"weight": 0.5, "pool_scale": 0.5, "level": -1}
    assert "no adversarial" in PairwiseSimilarityKD.description()
    PairwiseSimilarityKD.check_search_space()
    trials = draw_trials(PairwiseSimilarityKD, 6, 0, "synth5/f2l/skd-pairwise")
    assert trials[0] == PairwiseSimilarityKD.defaults
    assert all(0.25 <= t["weight"] <= 20 and t["pool_scale"] in (0.125, 0.25, 0.5) for t in trials)


def test_vit_student_term_matches_reference():
    method = build(weight=2.0)
    bt = batch(method)
    with torch.no_grad():
        s_out, t_out = method.student(bt.images), method.teacher(bt.images)
        terms = method.loss(method.stages()[0], bt, s_out, t_out)
    assert set(terms) == {"task", "pairwise"}
    want = 2.0 * ref_pairwise(s_out.features[-1], t_out.features[-1], 0.5)
    assert math.isclose(float(terms["pairwise"]), want, rel_tol=1e-5)


def test_cnn_student_map_is_resampled_to_the_teachers_grid_before_pooling():
    method = build("tiny-resnet", level=1, pool_scale=0.25)  # the CNN's stride-8 2×2 map against the 4×4 teacher
    bt = batch(method)
    with torch.no_grad():
        s_out, t_out = method.eval().student(bt.images), method.teacher(bt.images)
        got = float(method.loss(method.stages()[0], bt, s_out, t_out)["pairwise"])
    student, teacher = s_out.features[1], t_out.features[1]
    assert student.shape[-2:] == (2, 2) and teacher.shape[-2:] == (4, 4) and student.shape[1] != teacher.shape[1]
    resampled = torch.tensor([ref_bilinear(s, (4, 4)) for s in student.double().tolist()])
    assert math.isclose(got, 0.5 * ref_pairwise(resampled, teacher, 0.25), rel_tol=1e-5)


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-deit-s", {"pool_scale": 0.25}),
                                             ("tiny-resnet", {"level": 0})])
def test_gradients_reach_the_student_never_the_teacher(student, hp):
    method = build(student, **hp)
    for p in method.teacher.parameters():
        p.requires_grad_(True)  # the method itself must keep the teacher out of the graph
    bt = batch(method)
    terms = method.loss(method.stages()[0], bt, method.student(bt.images), method.teacher(bt.images))
    terms["pairwise"].backward()
    assert has_grad(student_input_weight(method))
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.extra_modules() == [] and method.extra_parameter_count() == 0  # no adapter


def test_cnn_deepest_single_cell_passes_no_gradient():
    # documented limitation: at 16 px the CNN's deepest map is 1×1; resampled it is constant, every student
    # similarity is 1 whatever the weights, so the term is positive but flat in the student
    method = build("tiny-resnet")
    bt = batch(method)
    terms = method_step(method, method.stages()[0])(bt)
    assert float(terms["pairwise"].detach()) > 0
    terms["pairwise"].backward()
    grads = [p.grad for p in method.student.backbone.parameters() if p.grad is not None]
    assert all(float(g.abs().max()) < 1e-6 for g in grads)


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-resnet", {"level": 0})])
def test_training_steps_move_the_student_not_the_teacher(student, hp):
    method = build(student, seed=1, **hp)
    teacher_before = copy.deepcopy(method.teacher.state_dict())
    student_before = copy.deepcopy(method.student.backbone.state_dict())
    logs = train_tiny(method)
    assert all(torch.equal(v, method.teacher.state_dict()[k]) for k, v in teacher_before.items())
    after = method.student.backbone.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in student_before.items())
    assert all(math.isfinite(row["loss/pairwise"]) and row["loss/pairwise"] > 0 for row in logs)


def test_overrides_are_coerced_and_bad_values_refused():
    method = build(weight="10", pool_scale="0.25")
    assert method.hp == {"weight": 10.0, "pool_scale": 0.25, "level": -1}
    assert isinstance(method.hp["weight"], float)
    for hp, message in [({"pool_scale": 1.0}, "method.skd-pairwise.pool_scale must lie in \\(0, 1\\)"),
                        ({"pool_scale": 0.0}, "method.skd-pairwise.pool_scale must lie in \\(0, 1\\)"),
                        ({"weight": -0.5}, "method.skd-pairwise.weight must be non-negative"),
                        ({"level": 2}, "method.skd-pairwise.level=2 is out of range"),
                        ({"scale": 0.5}, "has no hyper-parameter 'scale'")]:
        with pytest.raises(UserError, match=message):
            build(**hp)
    with pytest.raises(UserError, match="method.skd-pairwise.pool_scale must be float"):
        PairwiseSimilarityKD.resolve_hparams({"pool_scale": "half"})


# ------------------------------------------------------------------------------------------ through the CLI


def test_cli_smoke_run_logs_finite_pairwise_terms(tmp_path):
    records, metrics = run_smoke("skd-pairwise", tmp_path / "out", pairs=("tiny-f2l", "tiny-f2l-cnn"))
    assert {(r["pair"], r["domain"]) for r in records} == {
        (p, d) for p in ("tiny-f2l", "tiny-f2l-cnn") for d in ("game", "city", "dashcam", "street")}
    assert all(r["hparams"] == PairwiseSimilarityKD.defaults for r in records)
    for pair in ("tiny-f2l", "tiny-f2l-cnn"):
        rows = metrics[pair]
        assert rows and all(math.isfinite(r["loss/pairwise"]) and math.isfinite(r["loss/task"]) for r in rows)
        assert all(r["loss/pairwise"] > 0 for r in rows)
