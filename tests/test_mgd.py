"""MGD (Yang et al., ECCV 2022): golden values of the masked-generation loss against a plain-Python reading of the
formula (1×1 alignment, mask, conv 3×3 -> ReLU -> conv 3×3, squared error summed over the batch size) with the
mask passed in, the mask's convention and reproducibility, gradients, the method on ViT and CNN students, and a
smoke run through the CLI."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import nn

from kdbench.engine.trainer import method_step
from kdbench.errors import UserError
from kdbench.method import METHODS
from kdbench.search import draw_trials
from kdbench.testing.methods import build_method, has_grad, run_smoke, student_input_weight, tiny_batch, train_tiny
from kdbench_methods.mgd import MaskedGenerativeDistillation, generation_block, mgd_loss, random_keep_mask

# ------------------------------------------------------------------------------------------ references


def nested(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def ref_conv(fmap: list, weight: torch.Tensor, bias: torch.Tensor) -> list:
    """k×k convolution (k odd, stride 1, zero padding k//2) of a C×h×w nested list, with bias, by loops."""
    w, b = nested(weight), nested(bias)
    c_in, h, wd = len(fmap), len(fmap[0]), len(fmap[0][0])
    k = len(w[0][0])
    r = k // 2

    def px(c: int, y: int, x: int) -> float:
        return fmap[c][y][x] if 0 <= y < h and 0 <= x < wd else 0.0

    return [[[b[o] + sum(w[o][c][dy][dx] * px(c, y + dy - r, x + dx - r)
                         for c in range(c_in) for dy in range(k) for dx in range(k))
              for x in range(wd)] for y in range(h)] for o in range(len(w))]


def ref_generate(fmap: list, block: nn.Sequential) -> list:
    hidden = ref_conv(fmap, block[0].weight, block[0].bias)
    hidden = [[[max(v, 0.0) for v in row] for row in ch] for ch in hidden]
    return ref_conv(hidden, block[2].weight, block[2].bias)


def ref_mgd(aligned: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor, block: nn.Sequential) -> float:
    """Σ_b Σ_{c,y,x} (G(S_b ⊙ M_b) − T_b)² / B, with M_b broadcast over channels."""
    total = 0.0
    for s_b, t_b, m_b in zip(nested(aligned), nested(teacher), nested(keep), strict=True):
        masked = [[[v * m_b[0][y][x] for x, v in enumerate(row)] for y, row in enumerate(ch)] for ch in s_b]
        gen = ref_generate(masked, block)
        total += sum((g - t) ** 2 for gc, tc in zip(gen, t_b, strict=True) for gr, tr in zip(gc, tc, strict=True)
                     for g, t in zip(gr, tr, strict=True))
    return total / aligned.shape[0]


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ golden values


def test_hand_value_with_an_identity_generator():
    # S = [[1, 2], [3, 4]], M keeps the diagonal -> G(S·M) = [[1, 0], [0, 4]]; T = 0: (1 + 16) / B=1 = 17.
    # Unmasked positions count too: with T = 1 everywhere, (0 + 1 + 1 + 9) = 11.
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    keep = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert float(mgd_loss(s, torch.zeros_like(s), keep, lambda x: x)) == 17.0
    assert float(mgd_loss(s, torch.ones_like(s), keep, lambda x: x)) == 11.0
    # two samples: summed, divided by B = 2; the mask is shared by both channels
    s2 = torch.cat([s, s]).repeat(1, 2, 1, 1)
    keep2 = torch.cat([keep, torch.ones_like(keep)])
    assert float(mgd_loss(s2, torch.zeros_like(s2), keep2, lambda x: x)) == (2 * 17 + 2 * 30) / 2


@pytest.mark.parametrize(("b", "c", "h", "w", "ratio"), [
    (2, 3, 3, 5, 0.5),   # odd sizes
    (1, 2, 1, 1, 0.75),  # one sample, a single position (the 3×3 kernels see only their centre)
    (3, 4, 4, 4, 0.25),
])
def test_loss_matches_reference_with_a_given_mask(b, c, h, w, ratio):
    torch.manual_seed(h * 10 + w)
    block = generation_block(c)
    aligned, teacher = randn(b, c, h, w, seed=1), randn(b, c, h, w, seed=2)
    keep = random_keep_mask(b, h, w, ratio, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = float(mgd_loss(aligned, teacher, keep, block))
    assert math.isclose(got, ref_mgd(aligned, teacher, keep, block), rel_tol=1e-5)


def test_loss_is_zero_only_when_the_generation_reproduces_the_teacher():
    teacher = randn(2, 3, 4, 4, seed=0)
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert float(mgd_loss(teacher.clone(), teacher, ones, lambda x: x)) == 0.0
    # everything masked: the identity generates zeros, so the loss is the teacher's energy / B
    assert math.isclose(float(mgd_loss(teacher.clone(), teacher, zeros, lambda x: x)),
                        float(teacher.pow(2).sum()) / 2, rel_tol=1e-6)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="differ"):
        mgd_loss(torch.ones(1, 2, 4, 4), torch.ones(1, 3, 4, 4), torch.ones(1, 1, 4, 4), lambda x: x)
    with pytest.raises(ValueError, match="is not B×1×h×w"):
        mgd_loss(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4), lambda x: x)


def test_mask_masks_where_the_uniform_draw_exceeds_one_minus_the_ratio():
    keep = random_keep_mask(2, 3, 5, 0.3, generator=torch.Generator().manual_seed(7))
    u = torch.rand(2, 1, 3, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(keep, torch.where(u > 0.7, 0.0, 1.0))  # the official torch.where(mat > 1 - λ, 0, 1)
    big = random_keep_mask(4, 50, 50, 0.75, generator=torch.Generator().manual_seed(0))
    assert big.shape == (4, 1, 50, 50) and set(big.unique().tolist()) == {0.0, 1.0}
    assert abs(float(1 - big.mean()) - 0.75) < 0.02
    assert float(random_keep_mask(1, 4, 4, 0.0).min()) == 1.0 and float(random_keep_mask(1, 4, 4, 1.0).max()) == 0.0
    with pytest.raises(ValueError, match="mask ratio"):
        random_keep_mask(1, 2, 2, 1.5)


# ------------------------------------------------------------------------------------------ the method


build = functools.partial(build_method, MaskedGenerativeDistillation)
batch = functools.partial(tiny_batch, ignore_fraction=0)  # MGD reads no labels: none ignored


def test_registered_with_documented_defaults_modules_and_space():
    assert METHODS.get("mgd") is MaskedGenerativeDistillation
    assert MaskedGenerativeDistillation.defaults == {"alpha": 2e-5, "mask_ratio": 0.75, "level": -1}
    MaskedGenerativeDistillation.check_search_space()
    trials = draw_trials(MaskedGenerativeDistillation, 6, 0, "synth5/f2l/mgd")
    assert trials[0] == MaskedGenerativeDistillation.defaults
    assert all(2e-6 <= t["alpha"] <= 2e-4 and 0.15 <= t["mask_ratio"] <= 0.75 for t in trials)
    method = build()
    align, gen = method.align, method.generation
    assert isinstance(align, nn.Conv2d) and align.bias is not None  # the official align has a bias
    assert (align.in_channels, align.out_channels, align.kernel_size) == (16, 32, (1, 1))
    assert [type(m) for m in gen] == [nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert all((m.in_channels, m.out_channels, m.kernel_size, m.padding) == (32, 32, (3, 3), (1, 1))
               for m in (gen[0], gen[2]))
    assert method.extra_parameter_count() == 16 * 32 + 32 + 2 * (32 * 32 * 9 + 32)
    same = build("tiny-vit-b")
    assert isinstance(same.align, nn.Identity) and same.extra_parameter_count() == 2 * (32 * 32 * 9 + 32)


@pytest.mark.parametrize(("student", "level"), [("tiny-vit-s", -1), ("tiny-resnet", -1), ("tiny-resnet", 1)])
def test_method_term_matches_reference_on_the_drawn_mask(student, level):
    """Align (1×1 conv with bias) -> resample to the teacher's grid -> mask -> generate; the mask is drawn from
    torch's global RNG, so the same seed gives it again for the reference."""
    method = build(student, alpha=1e-3, level=level, mask_ratio=0.5)
    bt = batch(method)
    with torch.no_grad():
        s_out, t_out = method.eval().student(bt.images), method.teacher(bt.images)
        torch.manual_seed(11)
        got = float(method.loss(method.stages()[0], bt, s_out, t_out)["mgd"])
    torch.manual_seed(11)
    keep = random_keep_mask(2, 4, 4, 0.5)
    assert 0 < float(keep.sum()) < 32  # some positions masked, some kept
    s_map, t_map = s_out.features[level], t_out.features[level]
    aligned = []
    for sample in nested(s_map):
        adapted = ref_conv(sample, method.align.weight, method.align.bias)
        # a grid other than the teacher's is only ever the CNN's: 1×1 (constant when resampled) or 2×2 (stride 8)
        if len(adapted[0]) == 1:
            adapted = [[[ch[0][0]] * 4 for _ in range(4)] for ch in adapted]
        elif len(adapted[0]) == 2:
            # bilinear 2 -> 4 with half-pixel centres: source coordinates max(0, d/2 − 1/4) = 0, 0.25, 0.75 and
            # 1.25, the last clamped to the edge: (lower index, upper index, weight of the upper)
            wts = [(0, 0, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.0)]
            adapted = [[[(1 - ly) * ((1 - lx) * ch[y0][x0] + lx * ch[y0][x1]) +
                         ly * ((1 - lx) * ch[y1][x0] + lx * ch[y1][x1])
                         for (x0, x1, lx) in wts] for (y0, y1, ly) in wts] for ch in adapted]
        aligned.append(adapted)
    want = 1e-3 * ref_mgd(torch.tensor(aligned), t_map, keep, method.generation)
    assert math.isclose(got, want, rel_tol=1e-5)


def test_mask_is_reproducible_from_the_seed_and_changes_with_it():
    method = build()
    bt = batch(method)
    with torch.no_grad():
        s_out, t_out = method.student(bt.images), method.teacher(bt.images)

        def term(seed: int) -> float:
            torch.manual_seed(seed)
            return float(method.loss(method.stages()[0], bt, s_out, t_out)["mgd"])

        assert term(5) == term(5)
        assert term(5) != term(6)


@pytest.mark.parametrize("student", ["tiny-vit-s", "tiny-deit-s", "tiny-resnet"])
def test_gradients_reach_student_align_and_generation_never_teacher(student):
    method = build(student)
    for p in method.teacher.parameters():
        p.requires_grad_(True)  # the method itself must keep the teacher out of the graph
    bt = batch(method)
    terms = method.loss(method.stages()[0], bt, method.student(bt.images), method.teacher(bt.images))
    assert set(terms) == {"task", "mgd"} and all(math.isfinite(float(v.detach())) for v in terms.values())
    terms["mgd"].backward()
    assert has_grad(student_input_weight(method))
    for module in (method.align, method.generation):
        assert all(has_grad(p) for p in module.parameters())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert "teacher" not in dict(method.named_children())


def test_a_fully_masked_map_cuts_the_student_off():
    # mask_ratio 1: the generation sees only zeros, so the term still trains the generation block but passes
    # nothing to the student or the aligner
    method = build(mask_ratio=1.0)
    terms = method_step(method, method.stages()[0])(batch(method))
    terms["mgd"].backward()
    assert not any(has_grad(p) for p in method.student.backbone.parameters())
    assert not any(has_grad(p) for p in method.align.parameters())
    assert has_grad(method.generation[2].weight) and has_grad(method.generation[2].bias)


@pytest.mark.parametrize("student", ["tiny-vit-s", "tiny-resnet"])
def test_training_steps_move_student_and_modules_not_teacher(student):
    method = build(student, seed=1)
    teacher_before = copy.deepcopy(method.teacher.state_dict())
    student_before = copy.deepcopy(method.student.backbone.state_dict())
    extra_before = copy.deepcopy([m.state_dict() for m in method.extra_modules()])
    logs = train_tiny(method)
    assert all(torch.equal(v, method.teacher.state_dict()[k]) for k, v in teacher_before.items())
    after = method.student.backbone.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in student_before.items())
    for before, module in zip(extra_before, method.extra_modules(), strict=True):
        assert any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items())
    assert all(math.isfinite(row["loss/mgd"]) and row["loss/mgd"] > 0 for row in logs)


def test_overrides_are_coerced_and_bad_values_refused():
    method = build(alpha="1e-4", mask_ratio="0.5", level=0)
    assert method.hp == {"alpha": 1e-4, "mask_ratio": 0.5, "level": 0}
    for hp, message in [({"mask_ratio": 1.5}, "method.mgd.mask_ratio must lie in \\[0, 1\\], not 1.5"),
                        ({"mask_ratio": -0.1}, "method.mgd.mask_ratio must lie in \\[0, 1\\]"),
                        ({"alpha": -1e-5}, "method.mgd.alpha must be non-negative"),
                        ({"level": 2}, "method.mgd.level=2 is out of range"),
                        ({"lambda_mgd": 0.5}, "has no hyper-parameter 'lambda_mgd'")]:
        with pytest.raises(UserError, match=message):
            build(**hp)


# ------------------------------------------------------------------------------------------ through the CLI


def test_cli_smoke_run_logs_finite_mgd_terms(tmp_path):
    records, metrics = run_smoke("mgd", tmp_path / "out", pairs=("tiny-f2l", "tiny-f2l-cnn"))
    assert {(r["pair"], r["domain"]) for r in records} == {
        (p, d) for p in ("tiny-f2l", "tiny-f2l-cnn") for d in ("game", "city", "dashcam", "street")}
    assert all(r["hparams"] == MaskedGenerativeDistillation.defaults and r["extra_params"] > 0 for r in records)
    for pair in ("tiny-f2l", "tiny-f2l-cnn"):
        rows = metrics[pair]
        assert rows and all(math.isfinite(r["loss/mgd"]) and math.isfinite(r["loss/task"]) for r in rows)
        assert all(r["loss/mgd"] > 0 for r in rows)
