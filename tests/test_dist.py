"""DIST golden values: inter- and intra-class terms against a plain-Python reading of the paper's formula and
the official segmentation code (loops over pixels and classes), a hand-checked case, the batch-level
intra-class correlation, ignore labels, wiring, gradients, hyper-parameters and a run through ``kdbench run``."""

import functools
import math

import pytest
import torch

from kdbench.engine.trainer import method_step
from kdbench.errors import UserError
from kdbench.method import IGNORE_INDEX, METHODS, Batch
from kdbench.testing.methods import (
    CLASSES,
    build_method,
    has_grad,
    run_smoke,
    student_input_weight,
    tiny_batch,
    train_tiny,
)
from kdbench_methods.dist import dist_relations

# ---------------------------------------------------------------- plain-Python reference (no torch maths)


def softmax(values: list[float], tau: float) -> list[float]:
    top = max(values)
    exps = [math.exp((v - top) / tau) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def pearson(x: list[float], y: list[float], eps: float = 1e-8) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    dx, dy = [v - mx for v in x], [v - my for v in y]
    num = sum(a * b for a, b in zip(dx, dy, strict=True))
    return num / (math.sqrt(sum(a * a for a in dx)) * math.sqrt(sum(b * b for b in dy)) + eps)


def pixel_rows(logits: list, tau: float) -> list[list[float]]:
    """B×K×H×W nested list -> one probability vector per (b, y, x)."""
    k, h, w = len(logits[0]), len(logits[0][0]), len(logits[0][0][0])
    return [softmax([sample[c][y][x] for c in range(k)], tau)
            for sample in logits for y in range(h) for x in range(w)]


def ref_dist(student: list, teacher: list, tau: float) -> tuple[float, float]:
    """τ²(1 − mean over pixels of ρ over classes), τ²(1 − mean over classes of ρ over all the batch's pixels)."""
    ps, pt = pixel_rows(student, tau), pixel_rows(teacher, tau)
    inter = 1 - sum(pearson(a, b) for a, b in zip(ps, pt, strict=True)) / len(ps)
    k = len(ps[0])
    intra = 1 - sum(pearson([r[c] for r in ps], [r[c] for r in pt]) for c in range(k)) / k
    return tau * tau * inter, tau * tau * intra


def nested(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- the loss function

@pytest.mark.parametrize(("shape", "tau"), [
    ((2, 4, 3, 5), 1.0),     # odd grid, the default temperature
    ((1, 7, 5, 3), 2.5),     # one sample, another temperature
    ((3, 3, 1, 2), 4.0),     # few pixels per image, τ = 4
], ids=["two-samples", "one-sample-tau2.5", "tiny-grid-tau4"])
def test_terms_match_the_plain_python_reference(shape, tau):
    student, teacher = randn(*shape, seed=1, scale=2.0), randn(*shape, seed=2, scale=2.0)
    inter, intra = dist_relations(student, teacher, tau)
    want_inter, want_intra = ref_dist(nested(student), nested(teacher), tau)
    assert float(inter) > 1e-3 and float(intra) > 1e-3
    assert math.isclose(float(inter), want_inter, rel_tol=1e-5)
    assert math.isclose(float(intra), want_intra, rel_tol=1e-5)


def test_hand_checked_case():
    # two pixels, two classes. Teacher: pixel A favours class 0, pixel B class 1; student favours class 1 at
    # both, so per pixel (two-point vectors correlate ±1) ρ_A = −1 and ρ_B = +1: inter = 1 − 0 = 1. Per class,
    # the student's class-0 probability is higher at A than at B, as the teacher's: ρ = +1 for both classes,
    # intra = 0 (up to the ε in the denominator).
    teacher = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])   # 1×2×1×2: logits (1, 0) at A, (0, 1) at B
    student = torch.tensor([[[[0.0, 0.0]], [[1.0, 2.0]]]])   # logits (0, 1) at A, (0, 2) at B
    inter, intra = dist_relations(student, teacher, 1.0)
    assert math.isclose(float(inter), 1.0, abs_tol=1e-5)
    assert abs(float(intra)) < 1e-5


def test_zero_for_a_student_whose_probabilities_are_an_affine_shrink_of_the_teachers():
    # p_s = a·p_t + (1 − a)/K: perfectly correlated with the teacher per pixel and per class, although the
    # distributions differ (KL > 0); shifting logits by a per-pixel constant changes nothing either
    teacher = randn(2, 5, 3, 4, seed=3, scale=2.0)
    p_t = teacher.softmax(dim=1)
    student = torch.log(0.4 * p_t + 0.6 / 5) + randn(2, 1, 3, 4, seed=4)
    kl = (p_t * (p_t.log() - student.log_softmax(dim=1))).sum(dim=1).mean()
    assert float(kl) > 0.05
    inter, intra = dist_relations(student, teacher, 1.0)
    assert abs(float(inter)) < 1e-6 and abs(float(intra)) < 1e-6


def test_intra_class_correlation_pools_the_batch_not_each_image():
    # one correlation per class over all 2·6 pixels of the batch (the official code), which differs from the
    # mean of per-image correlations over 6 pixels each
    student, teacher = randn(2, 3, 2, 3, seed=5, scale=2.0), randn(2, 3, 2, 3, seed=6, scale=2.0)
    _, intra = dist_relations(student, teacher, 1.0)
    per_image = sum(ref_dist([nested(student[b])], [nested(teacher[b])], 1.0)[1] for b in range(2)) / 2
    batch_level = ref_dist(nested(student), nested(teacher), 1.0)[1]
    assert math.isclose(float(intra), batch_level, rel_tol=1e-5)
    assert abs(per_image - batch_level) > 1e-3


def test_terms_are_bounded_and_anticorrelation_gives_the_maximum():
    # two classes: student logits mirrored at every pixel -> every correlation is −1 -> both terms 2·τ²
    teacher = randn(2, 2, 3, 3, seed=7, scale=2.0)
    inter, intra = dist_relations(teacher.flip(1), teacher, 1.5)
    assert math.isclose(float(inter), 2 * 1.5 ** 2, rel_tol=1e-5)
    assert math.isclose(float(intra), 2 * 1.5 ** 2, rel_tol=1e-5)


def test_gradient_reaches_the_student_logits():
    student = randn(2, 4, 3, 3, seed=8).float().requires_grad_(True)
    teacher = randn(2, 4, 3, 3, seed=9).float()
    inter, intra = dist_relations(student, teacher, 1.0)
    (inter + intra).backward()
    assert has_grad(student)


# ---------------------------------------------------------------- the method on tiny models


build = functools.partial(build_method, "dist")
batch = functools.partial(tiny_batch, ignore_fraction=0)  # no ignore label: the ignore test sets its own


@pytest.mark.parametrize("student", ["tiny-vit-s", "tiny-resnet"], ids=["vit", "cnn"])
def test_method_terms_match_the_reference_and_train_the_student_only(student):
    method = build(student, beta=0.5, gamma=2.0, temperature=2.0)
    assert method.teacher_taps(method.hp) == frozenset({"logits"}) and method.extra_modules() == []
    for p in method.teacher.parameters():
        p.requires_grad_(True)  # even a trainable teacher must get nothing: it runs under inference mode
    bt = batch(method)
    got = method_step(method, method.stages()[0])(bt)
    assert set(got) == {"task", "inter", "intra"}
    with torch.no_grad():
        s_out, t_out = method.student(bt.images), method.teacher(bt.images)
    assert s_out.logits.shape == (2, CLASSES, 16, 16)  # the input resolution
    want_inter, want_intra = ref_dist(nested(s_out.logits), nested(t_out.logits), 2.0)
    assert math.isclose(float(got["inter"].detach()), 0.5 * want_inter, rel_tol=1e-4)
    assert math.isclose(float(got["intra"].detach()), 2.0 * want_intra, rel_tol=1e-4)
    (got["inter"] + got["intra"]).backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert has_grad(student_input_weight(method))


def test_ignore_labels_change_the_task_term_only():
    method = build().eval()
    bt = batch(method)
    ignored = Batch(images=bt.images, labels=bt.labels.clone())
    ignored.labels[:, :8] = IGNORE_INDEX
    with torch.no_grad():
        s_out, t_out = method.student(bt.images), method.teacher(bt.images)
        plain = method.loss(method.stages()[0], bt, s_out, t_out)
        masked = method.loss(method.stages()[0], ignored, s_out, t_out)
    assert float(plain["inter"]) == float(masked["inter"]) and float(plain["intra"]) == float(masked["intra"])
    assert float(plain["task"]) != float(masked["task"])


def test_training_steps_move_the_student_and_log_finite_terms():
    method = build(seed=1)
    before = {k: v.clone() for k, v in method.student.state_dict().items()}
    logs = train_tiny(method)
    after = method.student.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith("backbone."))
    assert all(math.isfinite(row[f"loss/{t}"]) for row in logs for t in ("task", "inter", "intra"))


# ---------------------------------------------------------------- hyper-parameters


def test_defaults_overrides_and_search_space():
    cls = METHODS.get("dist")
    assert cls.resolve_hparams({}) == {"beta": 1.0, "gamma": 1.0, "temperature": 1.0}
    hp = cls.resolve_hparams({"temperature": "4", "gamma": 2})
    assert hp["temperature"] == 4.0 and isinstance(hp["gamma"], float) and hp["gamma"] == 2.0
    assert build(beta=0.3).hp["beta"] == 0.3
    cls.check_search_space()
    assert set(cls.search_space) == {"beta", "gamma", "temperature"}
    assert cls.search_space["temperature"].contains(1.0) and cls.search_space["temperature"].contains(4.0)


@pytest.mark.parametrize(("hp", "message"), [
    ({"beta": -1.0}, "method.dist.beta must be non-negative"),
    ({"gamma": -0.5}, "method.dist.gamma must be non-negative"),
    ({"temperature": 0.0}, "method.dist.temperature must be positive"),
    ({"temperature": "warm"}, "method.dist.temperature must be float"),
    ({"tau": 2.0}, "method 'dist' has no hyper-parameter 'tau'"),
])
def test_bad_values_are_refused_in_one_line(hp, message):
    with pytest.raises(UserError, match=message) as exc:
        build(**hp)
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- through the CLI


def test_cli_runs_dist_on_the_smoke_suite(tmp_path):
    mine, metrics = run_smoke("dist", tmp_path / "out")
    assert mine and all(r["hparams"] == {"beta": 1.0, "gamma": 1.0, "temperature": 1.0} for r in mine)
    rows = metrics["tiny-f2l"]
    terms = ("task", "inter", "intra")
    assert rows and all(math.isfinite(row[f"loss/{t}"]) for row in rows for t in terms)
    assert 0 < rows[0]["loss/inter"] <= 2 and 0 < rows[0]["loss/intra"] <= 2
