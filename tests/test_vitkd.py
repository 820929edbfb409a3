"""ViTKD golden values: each term against a reference written independently from the published formula
(plain Python loops over tokens, channels and conv taps), plus wiring, gradients and a training step."""

import math

import pytest
import torch
from torch import nn

from kdbench.config import TrainConfig
from kdbench.data.domains import get_domain
from kdbench.data.loaders import StageData
from kdbench.data.synthetic import make_split
from kdbench.distill import random_token_mask
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import method_step, train_method
from kdbench.errors import UserError
from kdbench.method import METHODS, Batch, RunContext
from kdbench.models.backbones import CNNBackbone, ViTBackbone
from kdbench.models.segmentor import LightHead, Segmentor, SegOutput
from kdbench_methods.vitkd import vitkd_generation_loss, vitkd_mimic_loss

# ---------------------------------------------------------------- plain-Python reference (no torch maths)


def as_list(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def ref_linear(tokens: list, weight: list, bias: list) -> list:
    """y[b][n][o] = bias[o] + Σ_c weight[o][c] · x[b][n][c]."""
    return [[[bias[o] + sum(weight[o][c] * tok[c] for c in range(len(tok))) for o in range(len(weight))]
             for tok in sample] for sample in tokens]


def ref_conv3x3(fmap: list, weight: list, bias: list) -> list:
    """3×3 convolution, stride 1, zero padding 1, on a C×h×w nested list."""
    cin, h, w = len(fmap), len(fmap[0]), len(fmap[0][0])
    out = []
    for o in range(len(weight)):
        plane = []
        for y in range(h):
            row = []
            for x in range(w):
                acc = bias[o]
                for c in range(cin):
                    for ky in range(3):
                        for kx in range(3):
                            yy, xx = y + ky - 1, x + kx - 1
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += weight[o][c][ky][kx] * fmap[c][yy][xx]
                row.append(acc)
            plane.append(row)
        out.append(plane)
    return out


def ref_mimic(student_layers: list, teacher_layers: list, linears: list, alpha: float) -> float:
    """alpha · Σ_layers Σ_{b,n,c} (W_l s + b_l − t)² / B."""
    batch = len(student_layers[0])
    total = 0.0
    for s, t, (weight, bias) in zip(student_layers, teacher_layers, linears, strict=True):
        aligned = ref_linear(s, weight, bias) if weight is not None else s
        for b in range(batch):
            for n in range(len(t[b])):
                for c in range(len(t[b][n])):
                    total += (aligned[b][n][c] - t[b][n][c]) ** 2
    return alpha * total / batch


def ref_generation(student: list, teacher: list, mask: list, grid: tuple, linear: tuple, mask_token: list,
                   conv1: tuple, conv2: tuple, beta: float, ratio: float) -> float:
    """beta / ratio · Σ_{masked b,n} Σ_c (conv2(relu(conv1(map))) − t)² / B, where map holds the aligned student
    token at kept positions and the mask token at masked ones, token n at row n // w, column n % w."""
    h, w = grid
    weight, bias = linear
    aligned = ref_linear(student, weight, bias) if weight is not None else student
    total = 0.0
    for b in range(len(student)):
        toks = [mask_token if mask[b][n] else aligned[b][n] for n in range(h * w)]
        channels = len(mask_token)
        fmap = [[[toks[y * w + x][c] for x in range(w)] for y in range(h)] for c in range(channels)]
        mid = ref_conv3x3(fmap, *conv1)
        mid = [[[max(v, 0.0) for v in row] for row in plane] for plane in mid]
        gen = ref_conv3x3(mid, *conv2)
        for n in range(h * w):
            if mask[b][n]:
                y, x = divmod(n, w)
                total += sum((gen[c][y][x] - teacher[b][n][c]) ** 2 for c in range(channels))
    return beta * total / len(student) / ratio


def linear_params(layer: nn.Module) -> tuple:
    if isinstance(layer, nn.Identity):
        return None, None
    return as_list(layer.weight), as_list(layer.bias)


def conv_params(conv: nn.Conv2d) -> tuple:
    return as_list(conv.weight), as_list(conv.bias)


def generation_block(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))


# ---------------------------------------------------------------- golden values of the pure loss functions


def test_mimic_matches_formula_with_linear_aligners():
    gen = torch.Generator().manual_seed(0)
    b, n, cs, ct = 2, 4, 3, 5
    students = [torch.randn(b, n, cs, generator=gen) for _ in range(2)]
    teachers = [torch.randn(b, n, ct, generator=gen) for _ in range(2)]
    torch.manual_seed(1)
    aligners = [nn.Linear(cs, ct) for _ in range(2)]
    alpha = 3e-5
    got = float(vitkd_mimic_loss(students, teachers, aligners, alpha).detach())
    want = ref_mimic([as_list(s) for s in students], [as_list(t) for t in teachers],
                     [linear_params(a) for a in aligners], alpha)
    assert math.isclose(got, want, rel_tol=1e-5)


def test_mimic_fixed_value_identity_aligners():
    # two layers, B=2, one token of two channels each; squared errors 1+4, 0+0 | 9+0, 1+1 -> 16; /B=8; ×alpha
    s1 = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    t1 = torch.zeros(2, 1, 2)
    s2 = torch.tensor([[[3.0, 0.0]], [[1.0, -1.0]]])
    t2 = torch.zeros(2, 1, 2)
    got = float(vitkd_mimic_loss([s1, s2], [t1, t2], [nn.Identity(), nn.Identity()], 0.5))
    assert math.isclose(got, 0.5 * 16 / 2, rel_tol=1e-7)


def test_generation_matches_formula():
    gen = torch.Generator().manual_seed(2)
    b, grid, cs, ct = 2, (3, 2), 3, 2
    n = grid[0] * grid[1]
    student = torch.randn(b, n, cs, generator=gen)
    teacher = torch.randn(b, n, ct, generator=gen)
    mask = torch.tensor([[True, False, False, True, True, False], [False, True, True, False, False, True]])
    torch.manual_seed(3)
    align, block = nn.Linear(cs, ct), generation_block(ct)
    mask_token = torch.randn(ct, generator=gen)
    beta, ratio = 3e-6, 0.5
    got = float(vitkd_generation_loss(student, teacher, mask, grid, align, mask_token, block, beta, ratio).detach())
    want = ref_generation(as_list(student), as_list(teacher), mask.tolist(), grid, linear_params(align),
                          as_list(mask_token), conv_params(block[0]), conv_params(block[2]), beta, ratio)
    assert math.isclose(got, want, rel_tol=1e-5)


def test_generation_fixed_value_with_zero_generator():
    # a generator that outputs zeros: the loss is beta / ratio · Σ_masked t² / B, whatever the student
    block = generation_block(2)
    for p in block.parameters():
        nn.init.zeros_(p)
    teacher = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]])  # B=1, 2×2 grid
    student = torch.randn(1, 4, 2)
    mask = torch.tensor([[True, False, False, True]])  # masked: 1+4 and 49+64
    got = float(vitkd_generation_loss(student, teacher, mask, (2, 2), nn.Identity(), torch.zeros(2), block,
                                      2.0, 0.5).detach())
    assert math.isclose(got, 2.0 * (1 + 4 + 49 + 64) / 1 / 0.5, rel_tol=1e-7)


def test_generation_ignores_teacher_at_kept_positions_and_uses_mask_token():
    gen = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(2, 4, 3, generator=gen), torch.randn(2, 4, 3, generator=gen)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    torch.manual_seed(5)
    block = generation_block(3)
    token = torch.zeros(3, requires_grad=True)

    def loss(t, s):
        return vitkd_generation_loss(s, t, mask, (2, 2), nn.Identity(), token, block, 1.0, 0.5)

    base = loss(teacher, student)
    changed = teacher.clone()
    changed[~mask] += 10.0
    assert torch.equal(base, loss(changed, student))
    moved = student.clone()
    moved[mask] += 10.0  # masked student tokens are replaced, so moving them changes nothing
    assert torch.equal(base, loss(teacher, moved))
    base.backward()
    assert token.grad is not None and token.grad.abs().sum() > 0


# ---------------------------------------------------------------- the method: wiring, gradients, refusals


def vit(width: int, depth: int = 3, patch: int = 4) -> Segmentor:
    bb = ViTBackbone(img_size=16, patch_size=patch, embed_dim=width, depth=depth, num_heads=2)
    return Segmentor(bb, LightHead(bb.level_channels, 6))


def batch(b: int = 2) -> Batch:
    gen = torch.Generator().manual_seed(6)
    images = torch.randn(b, 3, 16, 16, generator=gen)
    return Batch(images=images, labels=torch.randint(0, 6, (b, 16, 16), generator=gen))


def vitkd():
    return METHODS.get("vitkd")


CONTEXT = RunContext("F2F", 16, 6, torch.device("cpu"))


def test_defaults_are_the_official_ones_and_overridable():
    cls = vitkd()
    assert cls.defaults == {"alpha": 3e-5, "beta": 3e-6, "mask_ratio": 0.5}
    assert all(isinstance(v, float) for v in cls.defaults.values())
    assert cls.resolve_hparams({"alpha": "1e-4"})["alpha"] == 1e-4
    with pytest.raises(UserError, match="mask_ratio"):
        cls(vit(32), vit(16), CONTEXT, mask_ratio=0.0)


def test_method_taps_first_two_blocks_and_final_normalised_tokens_without_cls():
    torch.manual_seed(7)
    method = vitkd()(vit(32), vit(16), CONTEXT)
    bt = batch()
    with torch.no_grad():
        s_out = method.student(bt.images)
        t_out = method.teacher(bt.images)
        torch.manual_seed(8)
        terms = method.loss(method.stages()[0], bt, s_out, t_out)
    assert set(terms) == {"task", "mimic", "generation"}
    torch.manual_seed(8)
    mask = random_token_mask(2, 16, 0.5)
    assert mask.sum(dim=1).tolist() == [8, 8]
    hp = method.hp
    want_mimic = ref_mimic([as_list(s_out.blocks[i][:, 1:]) for i in range(2)],
                           [as_list(t_out.blocks[i][:, 1:]) for i in range(2)],
                           [linear_params(a) for a in method.mimic_align], hp["alpha"])
    head = method.generation
    want_gen = ref_generation(as_list(s_out.tokens[:, 1:]), as_list(t_out.tokens[:, 1:]), mask.tolist(), (4, 4),
                              linear_params(head.align), as_list(head.mask_token), conv_params(head.block[0]),
                              conv_params(head.block[2]), hp["beta"], hp["mask_ratio"])
    assert math.isclose(float(terms["mimic"]), want_mimic, rel_tol=1e-5)
    assert math.isclose(float(terms["generation"]), want_gen, rel_tol=1e-5)


def test_equal_widths_use_no_aligner():
    method = vitkd()(vit(16), vit(16), CONTEXT)
    assert all(isinstance(a, nn.Identity) for a in method.mimic_align)
    assert isinstance(method.generation.align, nn.Identity)
    assert method.extra_parameter_count() == sum(p.numel() for p in method.generation.parameters())


def test_gradients_reach_student_and_method_modules_never_teacher():
    torch.manual_seed(9)
    method = vitkd()(vit(32), vit(16), CONTEXT)
    for p in method.teacher.parameters():
        p.requires_grad_(True)  # even if the teacher were trainable, the trainer's pass must not reach it
    stage = method.stages()[0]
    terms = method_step(method, stage)(batch())
    (terms["mimic"] + terms["generation"]).backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.student.backbone.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    for module in method.extra_modules():
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_cnn_student_is_refused_in_one_line_naming_the_method():
    cnn = CNNBackbone("resnet10t")
    with pytest.raises(UserError) as exc:
        vitkd()(vit(32), Segmentor(cnn, LightHead(cnn.level_channels, 6)), CONTEXT)
    msg = str(exc.value)
    assert "'vitkd'" in msg and "cnn" in msg and "\n" not in msg


def test_cnn_teacher_is_refused():
    cnn = CNNBackbone("resnet10t")
    with pytest.raises(UserError, match=r"'vitkd' (does not support cnn teachers|needs a ViT teacher)"):
        vitkd()(Segmentor(cnn, LightHead(cnn.level_channels, 6)), vit(16), CONTEXT)


def test_teacher_output_without_blocks_is_refused():
    method = vitkd()(vit(32), vit(16), CONTEXT)
    bt = batch()
    with torch.no_grad():
        full = method.teacher(bt.images)
    t_out = SegOutput(logits=None, features=[], tokens=full.tokens, num_prefix=full.num_prefix)  # no blocks
    with pytest.raises(UserError, match="transformer blocks"):
        method.loss(method.stages()[0], bt, method.student(bt.images), t_out)


def test_student_on_another_token_grid_is_resampled():
    torch.manual_seed(10)
    method = vitkd()(vit(32, patch=4), vit(16, patch=8), CONTEXT)
    terms = method_step(method, method.stages()[0])(batch())
    assert all(torch.isfinite(v) for v in terms.values())


def test_training_steps_run_for_a_vit_pair():
    torch.manual_seed(11)
    data = StageData(make_split(get_domain("game"), "train", 16, 16), "urban", 16, torch.device("cpu"))
    teacher = vit(32, depth=2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = vitkd()(teacher, vit(16, depth=2), CONTEXT)
    logs = []
    train_method(method, lambda st: data.batches(st.data, 4, 0), TrainConfig(steps=2, batch_size=4, log_every=1),
                 resolve_runtime("cpu", "off"), logs.append)
    assert {"loss/task", "loss/mimic", "loss/generation"} <= set(logs[0])
    assert all(math.isfinite(row["loss/mimic"]) and math.isfinite(row["loss/generation"]) for row in logs)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
