"""Attention transfer golden values: the loss against a plain-Python reading of the paper's and CIRKD's formula
(loops over channels, positions and samples, bilinear resampling written out), a hand-checked case, the
resampling order, wiring, gradients, hyper-parameters and a run through ``kdbench run``."""

import functools
import math

import pytest
import torch

from kdbench.engine.trainer import method_step
from kdbench.errors import UserError
from kdbench.method import METHODS
from kdbench.testing.methods import build_method, has_grad, run_smoke, student_input_weight, tiny_batch, train_tiny
from kdbench_methods.at import attention_transfer_loss

# ---------------------------------------------------------------- plain-Python reference (no torch maths)


def nested(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def ref_attention(fmap: list, p: float) -> list:
    """A[y][x] = (1/C) Σ_c |F[c][y][x]|^p for a C×h×w nested list."""
    c, h, w = len(fmap), len(fmap[0]), len(fmap[0][0])
    return [[sum(abs(fmap[k][y][x]) ** p for k in range(c)) / c for x in range(w)] for y in range(h)]


def ref_source(i: int, size_in: int, size_out: int) -> tuple[int, int, float]:
    """Half-pixel-centre bilinear source of output index i: (lower index, upper index, weight of the upper)."""
    src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
    lo = min(int(math.floor(src)), size_in - 1)
    hi = min(lo + 1, size_in - 1)
    return lo, hi, src - lo if hi != lo else 0.0


def ref_bilinear(plane: list, height: int, width: int) -> list:
    h, w = len(plane), len(plane[0])
    out = []
    for i in range(height):
        y0, y1, fy = ref_source(i, h, height)
        row = []
        for j in range(width):
            x0, x1, fx = ref_source(j, w, width)
            top = (1 - fx) * plane[y0][x0] + fx * plane[y0][x1]
            bottom = (1 - fx) * plane[y1][x0] + fx * plane[y1][x1]
            row.append((1 - fy) * top + fy * bottom)
        out.append(row)
    return out


def ref_unit(plane: list) -> list:
    flat = [v for row in plane for v in row]
    norm = max(math.sqrt(sum(v * v for v in flat)), 1e-12)
    return [v / norm for v in flat]


def ref_at(student: list, teacher: list, p: float) -> float:
    """(1/(B·N)) Σ_b Σ_j (Â_s − Â_t)², the student's attention map resampled to the teacher's grid first."""
    total, count = 0.0, 0
    for s_map, t_map in zip(student, teacher, strict=True):
        a_t = ref_attention(t_map, p)
        a_s = ref_bilinear(ref_attention(s_map, p), len(a_t), len(a_t[0]))
        for qs, qt in zip(ref_unit(a_s), ref_unit(a_t), strict=True):
            total += (qs - qt) ** 2
            count += 1
    return total / count


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- the loss function

@pytest.mark.parametrize(("s_shape", "t_shape", "p"), [
    ((2, 3, 5, 7), (2, 5, 5, 7), 2.0),    # same odd grid, different widths
    ((1, 4, 2, 3), (1, 6, 5, 7), 2.0),    # one sample, coarser student upsampled to an odd grid
    ((3, 2, 6, 8), (3, 3, 3, 5), 1.5),    # finer student downsampled, another power
    ((2, 8, 1, 1), (2, 4, 3, 3), 2.0),    # a single-cell student: uniform once resampled
], ids=["same-grid", "upsample-one-sample", "downsample-p1.5", "single-cell"])
def test_loss_matches_the_plain_python_reference(s_shape, t_shape, p):
    student, teacher = randn(*s_shape, seed=1), randn(*t_shape, seed=2)
    got = float(attention_transfer_loss(student, teacher, p))
    assert got > 1e-4
    assert math.isclose(got, ref_at(nested(student), nested(teacher), p), rel_tol=1e-5)


def test_hand_checked_case():
    # teacher attention [1, 1] -> [1/√2, 1/√2]; student channels [2, 0] and [0, 0] -> mean of squares [2, 0]
    # -> [1, 0]; squared differences (1 − 1/√2)² + 1/2 = 2 − √2, averaged over the 2 positions
    teacher = torch.tensor([[[[1.0, 1.0]]]])
    student = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])
    assert math.isclose(float(attention_transfer_loss(student, teacher, 2.0)), 1 - 1 / math.sqrt(2), rel_tol=1e-6)


def test_student_attention_is_resampled_after_the_map_not_the_features():
    # a student map [1, -1] has attention [1, 1]: uniform, like the teacher's, so the loss is 0; resampling the
    # features first would give [1, 0.5, -0.5, -1], squares [1, .25, .25, 1]: a dip that is not the student's
    student = torch.tensor([[[[1.0, -1.0]]]])
    teacher = torch.ones(1, 3, 1, 4)
    assert float(attention_transfer_loss(student, teacher, 2.0)) < 1e-12
    features_first = torch.nn.functional.interpolate(student, size=(1, 4), mode="bilinear", align_corners=False)
    assert float(attention_transfer_loss(features_first, teacher, 2.0)) > 0.01


def test_zero_for_a_rescaled_student_of_another_width():
    teacher = randn(2, 3, 4, 5, seed=3)
    # every teacher channel twice, times 7: the channel mean of |F|² is 49× the teacher's, normalised away
    student = 7.0 * torch.cat([teacher, teacher], dim=1)
    assert float(attention_transfer_loss(student, teacher, 2.0)) < 1e-12


def test_normalisation_is_per_sample():
    student, teacher = randn(2, 3, 4, 4, seed=4), randn(2, 5, 4, 4, seed=5)
    scaled = student.clone()
    scaled[0] *= 10.0
    assert math.isclose(float(attention_transfer_loss(scaled, teacher, 2.0)),
                        float(attention_transfer_loss(student, teacher, 2.0)), rel_tol=1e-9)
    # but the loss does see a change in where one sample's energy lies
    moved = student.clone()
    moved[0, :, 0, 0] *= 10.0
    assert float(attention_transfer_loss(moved, teacher, 2.0)) != pytest.approx(
        float(attention_transfer_loss(student, teacher, 2.0)), rel=1e-3)


def test_gradient_reaches_the_student_map_only():
    student = randn(2, 3, 2, 2, seed=6).float().requires_grad_(True)
    teacher = randn(2, 4, 4, 4, seed=7).float().requires_grad_(True)
    attention_transfer_loss(student, teacher.detach(), 2.0).backward()
    assert has_grad(student)


# ---------------------------------------------------------------- the method on tiny models


build = functools.partial(build_method, "at")
batch = functools.partial(tiny_batch, ignore_fraction=0)  # AT reads no labels: none ignored


@pytest.mark.parametrize(("student", "hp"), [("tiny-vit-s", {}), ("tiny-deit-s", {"level": 0}),
                                             ("tiny-resnet", {"level": 0}), ("tiny-resnet", {"level": 1})],
                         ids=["vit", "vit-level0", "cnn-level0", "cnn-level1-upsampled"])
def test_method_term_is_weight_times_reference_and_trains_the_student_only(student, hp):
    method = build(student, **hp)
    assert method.teacher_taps(method.hp) == frozenset({"features"}) and method.extra_modules() == []
    for p in method.teacher.parameters():
        p.requires_grad_(True)  # even a trainable teacher must get nothing: it runs under inference mode
    bt = batch(method)
    got = method_step(method, method.stages()[0])(bt)
    assert set(got) == {"task", "at"}
    with torch.no_grad():
        s_out, t_out = method.student(bt.images), method.teacher(bt.images)
    level = method.hp["level"]
    want = 10000.0 * ref_at(nested(s_out.features[level]), nested(t_out.features[level]), 2.0)
    assert math.isclose(float(got["at"].detach()), want, rel_tol=1e-4)
    got["at"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert has_grad(student_input_weight(method)), "the AT gradient does not reach the student's first layer"


def test_a_cnn_students_deepest_single_cell_carries_no_signal():
    # documents the docstring's warning: at 16 px the CNN's stride-32 map is 1×1, so its attention is uniform
    # whatever the student computes; the term is that of a constant map, and its gradient is rounding noise
    def first_layer_grad(method) -> tuple[float, torch.Tensor, torch.Tensor]:
        bt = batch(method)
        got = method_step(method, method.stages()[0])(bt)
        got["at"].backward()
        with torch.no_grad():
            t_map = method.teacher(bt.images).features[method.hp["level"]]
        return float(got["at"].detach()), t_map, student_input_weight(method).grad.abs().max()

    deepest, t_map, noise = first_layer_grad(build("tiny-resnet"))
    uniform = [[[[1.0]]] for _ in range(2)]
    assert math.isclose(deepest, 10000.0 * ref_at(uniform, nested(t_map), 2.0), rel_tol=1e-5)
    _, _, signal = first_layer_grad(build("tiny-resnet", level=0))
    assert float(noise) < 1e-3 * float(signal)


def test_training_steps_move_the_student_and_log_finite_terms():
    method = build(seed=1)
    before = {k: v.clone() for k, v in method.student.state_dict().items()}
    logs = train_tiny(method)
    after = method.student.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith("backbone."))
    assert all(math.isfinite(row["loss/at"]) and math.isfinite(row["loss/task"]) for row in logs)


# ---------------------------------------------------------------- hyper-parameters


def test_defaults_overrides_and_search_space():
    cls = METHODS.get("at")
    assert cls.resolve_hparams({}) == {"weight": 10000.0, "p": 2.0, "level": -1}
    hp = cls.resolve_hparams({"weight": "1000", "p": 1})
    assert hp["weight"] == 1000.0 and isinstance(hp["weight"], float) and hp["p"] == 1.0
    assert build(weight=500.0).hp["weight"] == 500.0
    cls.check_search_space()
    space = cls.search_space["weight"]
    assert space.contains(1000.0) and space.contains(10000.0) and not space.contains(100.0)


@pytest.mark.parametrize(("hp", "message"), [
    ({"weight": -1.0}, "method.at.weight must be non-negative"),
    ({"p": 0.0}, "method.at.p must be positive"),
    ({"level": 2}, "method.at.level=2 is out of range"),
    ({"weights": 1.0}, "method 'at' has no hyper-parameter 'weights'"),
])
def test_bad_values_are_refused_in_one_line(hp, message):
    with pytest.raises(UserError, match=message) as exc:
        build(**hp)
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- through the CLI


def test_cli_runs_at_on_the_smoke_suite(tmp_path):
    mine, metrics = run_smoke("at", tmp_path / "out")
    assert mine and all(r["hparams"] == {"weight": 10000.0, "p": 2.0, "level": -1} for r in mine)
    rows = metrics["tiny-f2l"]
    assert rows and all(math.isfinite(row["loss/at"]) and math.isfinite(row["loss/task"]) for row in rows)
    assert rows[0]["loss/at"] > 0
