"""Golden values of the baseline losses: CWD, token/hint MSE, Proteus's three terms and cwd-kd's total, each
against a reference written independently from the published formula with plain Python loops and ``math``."""

import math

import pytest
import torch

from kdbench.method import METHODS, Batch, RunContext
from kdbench.models.backbones import ViTBackbone
from kdbench.models.segmentor import LightHead, Segmentor, SegOutput
from kdbench_methods.cwd import channel_wise_divergence
from kdbench_methods.fitnet import hint_mse_loss
from kdbench_methods.proteus import proteus_losses
from kdbench_methods.vanilla_kd import token_mse_loss

# ---------------------------------------------------------------- plain-Python references (no torch maths)


def nested(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def flat(t: torch.Tensor) -> list[float]:
    return t.detach().double().flatten().tolist()


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) = Σ_i p_i log(p_i / q_i)."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def ref_cwd(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> float:
    """Shu et al. (ICCV 2021): per sample n and channel c, p = softmax over the H·W positions of x / τ;
    loss = Σ_{n,c} KL(p_t || p_s) / (N·C) · τ²."""
    s, t = nested(student), nested(teacher)
    n_samples, channels = len(s), len(s[0])
    total = 0.0
    for n in range(n_samples):
        for c in range(channels):
            zs = [v / tau for row in s[n][c] for v in row]
            zt = [v / tau for row in t[n][c] for v in row]
            total += kl(softmax(zt), softmax(zs))
    return total / (n_samples * channels) * tau**2


def ref_mse(a: list[float], b: list[float]) -> float:
    """Mean of squared differences over all elements."""
    assert len(a) == len(b)
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / len(a)


def ref_pixel_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    """KL(p_t || p_s) over classes at every pixel, p = softmax(z / T), averaged over B·H·W, times T² (as the
    reference in tests/test_losses.py)."""
    s, t = nested(student), nested(teacher)
    b, k, h, w = student.shape
    total = 0.0
    for n in range(b):
        for y in range(h):
            for x in range(w):
                ps = softmax([s[n][c][y][x] / temperature for c in range(k)])
                pt = softmax([t[n][c][y][x] / temperature for c in range(k)])
                total += kl(pt, ps)
    return total / (b * h * w) * temperature**2


def ref_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore: int = 255) -> float:
    """−log softmax(z)[y] averaged over the pixels whose label is not ``ignore``."""
    z, lab = nested(logits), labels.tolist()
    b, k, h, w = logits.shape
    total, count = 0.0, 0
    for n in range(b):
        for y in range(h):
            for x in range(w):
                if lab[n][y][x] == ignore:
                    continue
                p = softmax([z[n][c][y][x] for c in range(k)])
                total -= math.log(p[lab[n][y][x]])
                count += 1
    return total / count


# ---------------------------------------------------------------- CWD


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0, 0.5])
def test_cwd_matches_formula_at_several_temperatures(tau):
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 2, 3, generator=gen) * 2
    teacher = torch.randn(2, 3, 2, 3, generator=gen) * 2
    got = float(channel_wise_divergence(student, teacher, tau))
    assert math.isclose(got, ref_cwd(student, teacher, tau), rel_tol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_hand_checked_one_sample_one_channel_two_positions(tau):
    # teacher (0, 1), student (1, 0) over two positions; a = 1/τ: p_t = (1, e^a) / (1 + e^a), p_s reversed,
    # log(p_t / p_s) = (−a, a), so KL = a (e^a − 1) / (e^a + 1) = a·tanh(a/2); times τ²: τ·tanh(1 / (2τ))
    student = torch.tensor([[[[1.0, 0.0]]]])
    teacher = torch.tensor([[[[0.0, 1.0]]]])
    expected = tau * math.tanh(1 / (2 * tau))
    if tau == 1.0:
        assert math.isclose(expected, (math.e - 1) / (math.e + 1))
    assert math.isclose(float(channel_wise_divergence(student, teacher, tau)), expected, rel_tol=1e-6)


def test_cwd_normalises_by_samples_and_channels():
    # the same one-channel pair repeated over N=2 samples and C=3 channels gives the single pair's value
    student = torch.tensor([[[[1.0, 0.0]]]]).expand(2, 3, 1, 2)
    teacher = torch.tensor([[[[0.0, 1.0]]]]).expand(2, 3, 1, 2)
    assert math.isclose(float(channel_wise_divergence(student, teacher, 1.0)), math.tanh(0.5), rel_tol=1e-6)


def test_cwd_is_a_spatial_not_a_channel_softmax():
    # a map constant over positions is uniform under a spatial softmax whatever its channel values, so two such
    # maps have zero CWD even though their channel (class) distributions differ
    student = torch.tensor([1.0, 5.0, -2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    teacher = torch.tensor([0.0, -3.0, 4.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert abs(float(channel_wise_divergence(student, teacher, 4.0))) < 1e-7


def test_cwd_zero_when_equal_and_gradient_reaches_student_only():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 2, 3, 3, generator=gen)
    assert abs(float(channel_wise_divergence(teacher.clone(), teacher, 4.0))) < 1e-6
    student = torch.randn(2, 2, 3, 3, generator=gen, requires_grad=True)
    channel_wise_divergence(student, teacher, 4.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


# ---------------------------------------------------------------- token and hint MSE


@pytest.mark.parametrize("fn", [token_mse_loss, hint_mse_loss])
def test_mse_losses_match_mean_squared_difference(fn):
    gen = torch.Generator().manual_seed(2)
    for shape in [(2, 5, 3), (2, 4, 3, 2)]:
        a, b = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
        assert math.isclose(float(fn(a, b)), ref_mse(flat(a), flat(b)), rel_tol=1e-6)


@pytest.mark.parametrize("fn", [token_mse_loss, hint_mse_loss])
def test_mse_losses_fixed_value(fn):
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert math.isclose(float(fn(a, torch.zeros_like(a))), (1 + 4 + 9 + 16) / 4, rel_tol=1e-7)


# ---------------------------------------------------------------- Proteus


def ref_proteus(cls_s, patches_s, masked_s, cls_t, patches_t, mask) -> dict[str, float]:
    """token: MSE of the CLS tokens; fea: MSE over [CLS; patches] (N+1 tokens); patch: MSE over the masked
    positions of the masked pass only, 0 when nothing is masked."""
    cs, ps, ms, ct, pt, m = (nested(x) for x in (cls_s, patches_s, masked_s, cls_t, patches_t, mask.int()))
    b, n = len(ps), len(ps[0])
    token = ref_mse([v for row in cs for v in row], [v for row in ct for v in row])
    whole_s = [v for i in range(b) for tok in [cs[i]] + ps[i] for v in tok]
    whole_t = [v for i in range(b) for tok in [ct[i]] + pt[i] for v in tok]
    picked_s = [v for i in range(b) for j in range(n) if m[i][j] for v in ms[i][j]]
    picked_t = [v for i in range(b) for j in range(n) if m[i][j] for v in pt[i][j]]
    patch = ref_mse(picked_s, picked_t) if picked_s else 0.0
    return {"token": token, "fea": ref_mse(whole_s, whole_t), "patch": patch}


def proteus_inputs(seed: int, b: int = 3, n: int = 4, c: int = 5):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for shape in [(b, c), (b, n, c), (b, n, c), (b, c), (b, n, c)]]


def test_proteus_terms_match_formula():
    cls_s, patches_s, masked_s, cls_t, patches_t = proteus_inputs(3)
    mask = torch.tensor([[True, False, True, False], [False, False, False, True], [False, False, False, False]])
    got = proteus_losses(cls_s, patches_s, masked_s, cls_t, patches_t, mask)
    want = ref_proteus(cls_s, patches_s, masked_s, cls_t, patches_t, mask)
    assert set(got) == {"token", "fea", "patch"}
    for key in want:
        assert math.isclose(float(got[key]), want[key], rel_tol=1e-6), key


def test_proteus_terms_fixed_values():
    # B=1, N=3 patches, C=1: the CLS is off by 2, patches exact except the second (off by 3, and masked)
    cls_s, cls_t = torch.tensor([[2.0]]), torch.tensor([[0.0]])
    patches_s = torch.tensor([[[0.0], [0.0], [0.0]]])
    masked_s = torch.tensor([[[7.0], [3.0], [-7.0]]])
    patches_t = torch.zeros(1, 3, 1)
    mask = torch.tensor([[False, True, False]])
    got = proteus_losses(cls_s, patches_s, masked_s, cls_t, patches_t, mask)
    assert math.isclose(float(got["token"]), 4.0)
    assert math.isclose(float(got["fea"]), 4.0 / 4)  # the CLS counts once among N+1 = 4 tokens
    assert math.isclose(float(got["patch"]), 9.0)  # unmasked positions (±7) are not looked at


def test_proteus_patch_term_is_zero_without_mask_and_ignores_unmasked_positions():
    cls_s, patches_s, masked_s, cls_t, patches_t = proteus_inputs(4)
    masked_s.requires_grad_(True)
    none = torch.zeros(3, 4, dtype=torch.bool)
    got = proteus_losses(cls_s, patches_s, masked_s, cls_t, patches_t, none)
    assert float(got["patch"].detach()) == 0.0 and got["patch"].requires_grad
    mask = torch.tensor([[True, False, False, False]] * 3)
    base = proteus_losses(cls_s, patches_s, masked_s, cls_t, patches_t, mask)["patch"]
    moved = masked_s.detach().clone()
    moved[~mask] += 100.0
    assert torch.equal(base, proteus_losses(cls_s, patches_s, moved, cls_t, patches_t, mask)["patch"])


# ---------------------------------------------------------------- cwd / cwd-kd totals on fixed logits


def tiny_vit(width: int) -> Segmentor:
    bb = ViTBackbone(img_size=16, patch_size=4, embed_dim=width, depth=2, num_heads=2)
    return Segmentor(bb, LightHead(bb.level_channels, 3))


CONTEXT = RunContext("F2F", 16, 3, torch.device("cpu"))


def fixed_logits_batch():
    gen = torch.Generator().manual_seed(5)
    s_logits = torch.randn(2, 3, 2, 3, generator=gen) * 2
    t_logits = torch.randn(2, 3, 2, 3, generator=gen) * 2
    labels = torch.randint(0, 3, (2, 2, 3), generator=gen)
    labels[0, 0, 0] = labels[1, 1, 2] = 255  # ignored pixels
    batch = Batch(images=torch.zeros(2, 3, 2, 3), labels=labels)
    student = SegOutput(logits=s_logits, features=[], tokens=None)
    teacher = SegOutput(logits=t_logits, features=[], tokens=None)
    return batch, student, teacher


def test_cwd_method_on_logits_is_ce_plus_three_cwd_at_tau_four():
    method = METHODS.get("cwd")(tiny_vit(32), tiny_vit(16), CONTEXT)
    batch, s_out, t_out = fixed_logits_batch()
    terms = method.loss(method.stages()[0], batch, s_out, t_out)
    assert set(terms) == {"task", "cwd"}
    assert math.isclose(float(terms["task"]), ref_cross_entropy(s_out.logits, batch.labels), rel_tol=1e-6)
    assert math.isclose(float(terms["cwd"]), 3 * ref_cwd(s_out.logits, t_out.logits, 4.0), rel_tol=1e-5)


def test_cwd_kd_total_is_ce_plus_three_cwd_plus_pixel_kd():
    method = METHODS.get("cwd-kd")(tiny_vit(32), tiny_vit(16), CONTEXT)
    assert method.teacher_taps(method.hp) == frozenset({"logits"})
    batch, s_out, t_out = fixed_logits_batch()
    terms = method.loss(method.stages()[0], batch, s_out, t_out)
    assert set(terms) == {"task", "cwd", "kd"}
    ce = ref_cross_entropy(s_out.logits, batch.labels)
    cwd = ref_cwd(s_out.logits, t_out.logits, 4.0)
    kd = ref_pixel_kd(s_out.logits, t_out.logits, 1.0)
    assert math.isclose(float(terms["task"]), ce, rel_tol=1e-6)
    assert math.isclose(float(terms["cwd"]), 3 * cwd, rel_tol=1e-5)
    assert math.isclose(float(terms["kd"]), kd, rel_tol=1e-5)
    assert math.isclose(float(sum(terms.values())), ce + 3 * cwd + kd, rel_tol=1e-5)


def test_cwd_kd_overrides_reach_each_term():
    hp = {"temperature": "2", "weight": "5", "kd_temperature": "3", "kd_weight": "0.5"}
    method = METHODS.get("cwd-kd")(tiny_vit(32), tiny_vit(16), CONTEXT, **hp)
    batch, s_out, t_out = fixed_logits_batch()
    terms = method.loss(method.stages()[0], batch, s_out, t_out)
    assert math.isclose(float(terms["cwd"]), 5 * ref_cwd(s_out.logits, t_out.logits, 2.0), rel_tol=1e-5)
    assert math.isclose(float(terms["kd"]), 0.5 * ref_pixel_kd(s_out.logits, t_out.logits, 3.0), rel_tol=1e-5)
