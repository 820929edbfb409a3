"""The baseline methods (vanilla-kd, cwd, cwd-kd, fitnet, proteus) as the trainer and the CLI use them: named
terms, wiring against plain-Python references, gradients, a frozen teacher, hyper-parameter overrides, CNN
students, Proteus's masked pass, and runs through ``kdbench run``."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from kdbench.cli import cli
from kdbench.config import TrainConfig
from kdbench.data.domains import get_domain
from kdbench.data.loaders import StageData
from kdbench.data.synthetic import make_split
from kdbench.distill import first_samples_mask
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import method_step, train_method
from kdbench.errors import UserError
from kdbench.method import METHODS, Batch, RunContext
from kdbench.models.backbones import ViTBackbone
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import MODELS

TEACHER = "tiny-vit-b"
CLASSES = 6
CONTEXT = RunContext("F2F", 16, CLASSES, torch.device("cpu"))

# ---------------------------------------------------------------- builders


def seg(name: str) -> Segmentor:
    bb = MODELS.get(name).build_backbone(16)
    return Segmentor(bb, LightHead(bb.level_channels, CLASSES))


def build(method: str, student: str = "tiny-vit-s", seed: int = 0, **hparams):
    torch.manual_seed(seed)
    return METHODS.get(method)(seg(TEACHER), seg(student), CONTEXT, **hparams)


def batch(b: int = 2, seed: int = 6) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(images=torch.randn(b, 3, 16, 16, generator=gen),
                 labels=torch.randint(0, CLASSES, (b, 16, 16), generator=gen))


def outputs(method, bt: Batch):
    with torch.no_grad():
        return method.student(bt.images), method.teacher(bt.images)


@pytest.fixture(scope="module")
def data():
    return StageData(make_split(get_domain("game"), "train", 8, 16), "urban", 16, torch.device("cpu"))


# (id, method, student, hparams, documented terms, the tapped teacher outputs)
CASES = [
    ("vanilla-kd", "vanilla-kd", "tiny-vit-s", {}, {"task", "feat"}, {"tokens"}),
    ("cwd-logits", "cwd", "tiny-deit-s", {}, {"task", "cwd"}, {"logits"}),
    ("cwd-features", "cwd", "tiny-vit-s", {"on": "features", "weight": 40.0}, {"task", "cwd"}, {"features"}),
    ("cwd-kd", "cwd-kd", "tiny-vit-s", {}, {"task", "cwd", "kd"}, {"logits"}),
    ("fitnet-features", "fitnet", "tiny-deit-s", {}, {"task", "hint"}, {"features"}),
    ("fitnet-tokens", "fitnet", "tiny-vit-s", {"target": "tokens"}, {"task", "hint"}, {"tokens"}),
    ("proteus", "proteus", "tiny-vit-s", {}, {"task", "token", "fea", "patch"}, {"tokens"}),
    ("vanilla-kd-cnn", "vanilla-kd", "tiny-resnet", {}, {"task", "feat"}, {"tokens"}),
    ("cwd-logits-cnn", "cwd", "tiny-resnet", {}, {"task", "cwd"}, {"logits"}),
    # level 0: the CNN's stride-4 map (4×4 here); its deepest map is a single cell at 16 px, see below
    ("cwd-features-cnn", "cwd", "tiny-resnet", {"on": "features", "level": 0}, {"task", "cwd"}, {"features"}),
    ("fitnet-features-cnn", "fitnet", "tiny-resnet", {}, {"task", "hint"}, {"features"}),
    ("fitnet-tokens-cnn", "fitnet", "tiny-resnet", {"target": "tokens"}, {"task", "hint"}, {"tokens"}),
]
IDS = [c[0] for c in CASES]


def has_grad(p: torch.Tensor) -> bool:
    return p.grad is not None and float(p.grad.abs().sum()) > 0


# ---------------------------------------------------------------- terms, gradients, the frozen teacher


@pytest.mark.parametrize(("case", "name", "student", "hp", "terms", "taps"), CASES, ids=IDS)
def test_distillation_gradients_reach_student_and_method_modules_never_teacher(case, name, student, hp, terms,
                                                                               taps):
    method = build(name, student, **hp)
    assert method.teacher_taps(method.hp) == frozenset(taps)
    for p in method.teacher.parameters():
        p.requires_grad_(True)  # even a trainable teacher must get nothing: it runs under inference mode
    got = method_step(method, method.stages()[0])(batch())
    assert set(got) == terms
    assert all(t.dim() == 0 and math.isfinite(float(t.detach())) for t in got.values())
    # the distillation terms alone (not the task loss) must move the student and the method's own modules
    sum(t for k, t in got.items() if k != "task").backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    backbone = method.student.backbone
    first = backbone.vit.patch_embed.proj.weight if backbone.kind == "vit" else backbone.net.conv1[0].weight
    assert has_grad(first), "distillation gradient does not reach the student's first layer"
    for module in method.extra_modules():
        for pname, p in module.named_parameters():
            assert has_grad(p), f"{case}: no gradient on {pname}"


@pytest.mark.parametrize(("case", "name", "student", "hp", "terms", "taps"), CASES, ids=IDS)
def test_training_steps_leave_teacher_untouched_and_move_student(data, case, name, student, hp, terms, taps):
    method = build(name, student, seed=1, **hp)
    teacher_before = copy.deepcopy(method.teacher.state_dict())
    student_before = copy.deepcopy(method.student.state_dict())
    extra_before = copy.deepcopy([m.state_dict() for m in method.extra_modules()])
    logs = []
    train_method(method, lambda st: data.batches(st.data, 4, 0), TrainConfig(steps=2, batch_size=4, log_every=1),
                 resolve_runtime("cpu", "off"), logs.append)
    teacher_after = method.teacher.state_dict()
    assert all(torch.equal(v, teacher_after[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert not method.teacher.training
    after = method.student.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in student_before.items() if k.startswith("backbone."))
    for before, module in zip(extra_before, method.extra_modules(), strict=True):
        assert any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items())
    assert [row["step"] for row in logs] == [0, 1]
    assert {f"loss/{t}" for t in terms} <= set(logs[0])
    assert all(math.isfinite(row[f"loss/{t}"]) for row in logs for t in terms)


# ---------------------------------------------------------------- hyper-parameters and refusals

BASELINES = ["vanilla-kd", "cwd", "cwd-kd", "fitnet", "proteus"]


@pytest.mark.parametrize("name", BASELINES)
def test_defaults_resolve_and_unknown_keys_are_refused_by_name(name):
    cls = METHODS.get(name)
    assert cls.resolve_hparams({}) == dict(cls.defaults)
    with pytest.raises(UserError, match=f"method '{name}' has no hyper-parameter 'nope'; valid: "):
        cls.resolve_hparams({"nope": 1})


def test_set_style_strings_are_coerced_to_the_default_type():
    cwd = METHODS.get("cwd")
    hp = cwd.resolve_hparams({"temperature": "2"})
    assert hp["temperature"] == 2.0 and isinstance(hp["temperature"], float)
    assert isinstance(cwd.resolve_hparams({"weight": 5})["weight"], float)
    assert METHODS.get("vanilla-kd").resolve_hparams({"weight": "0.5"})["weight"] == 0.5
    assert METHODS.get("fitnet").resolve_hparams({"target": "tokens", "level": 0}) == {
        "weight": 1.0, "target": "tokens", "level": 0}
    assert METHODS.get("proteus").resolve_hparams({"mask_ratio": "0.25"})["mask_ratio"] == 0.25
    assert METHODS.get("cwd-kd").resolve_hparams({"kd_temperature": "3"})["kd_temperature"] == 3.0
    with pytest.raises(UserError, match="method.cwd.temperature must be float"):
        cwd.resolve_hparams({"temperature": "hot"})
    with pytest.raises(UserError, match="method.fitnet.level must be int"):
        METHODS.get("fitnet").resolve_hparams({"level": 1.5})


@pytest.mark.parametrize(("name", "hp", "message"), [
    ("cwd", {"on": "pixels"}, "method.cwd.on must be 'logits' or 'features', not 'pixels'"),
    ("cwd-kd", {"on": "tokens"}, "method.cwd-kd.on must be 'logits' or 'features'"),
    ("cwd", {"on": "features", "level": 2}, "method.cwd.level=2 is out of range"),
    ("cwd", {"on": "features", "level": -3}, "method.cwd.level=-3 is out of range"),
    ("fitnet", {"target": "logits"}, "method.fitnet.target must be 'features' or 'tokens', not 'logits'"),
    ("fitnet", {"level": 2}, "method.fitnet.level=2 is out of range"),
])
def test_bad_settings_are_refused(name, hp, message):
    with pytest.raises(UserError, match=message):
        build(name, **hp)


def test_level_beyond_the_teachers_levels_is_refused_for_a_cnn_student():
    # the tiny CNN has 4 levels, the tiny ViT teacher 2: level 2 exists for the student only
    with pytest.raises(UserError, match="method.fitnet.level=2 is out of range for a backbone with 2 feature"):
        build("fitnet", "tiny-resnet", level=2)


def test_proteus_refuses_cnn_students_in_one_line():
    with pytest.raises(UserError) as exc:
        build("proteus", "tiny-resnet")
    msg = str(exc.value)
    assert "'proteus'" in msg and "cnn" in msg and "\n" not in msg


def test_proteus_refuses_a_student_on_another_token_grid():
    torch.manual_seed(0)
    bb = ViTBackbone(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)  # 2×2 grid vs the teacher's 4×4
    method = METHODS.get("proteus")(seg(TEACHER), Segmentor(bb, LightHead(bb.level_channels, CLASSES)), CONTEXT)
    with pytest.raises(UserError, match="same token grid"):
        method_step(method, method.stages()[0])(batch())


# ---------------------------------------------------------------- modules each method builds


def test_cwd_features_adapter_is_a_1x1_conv_from_student_to_teacher_channels():
    for student, channels in (("tiny-vit-s", 16), ("tiny-resnet", 512)):
        adapter = build("cwd", student, on="features", level=-1).adapter
        assert isinstance(adapter, nn.Conv2d)
        assert (adapter.in_channels, adapter.out_channels, adapter.kernel_size) == (channels, 32, (1, 1))
    same = build("cwd", TEACHER, on="features")  # equal widths: nothing to learn
    assert isinstance(same.adapter, nn.Identity) and same.extra_parameter_count() == 0
    assert build("cwd").adapter is None and build("cwd").extra_modules() == []  # logits need no adapter


def test_fitnet_adapters_have_no_bias():
    conv = build("fitnet", "tiny-resnet").adapter
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (512, 32, (1, 1))
    linear = build("fitnet", target="tokens").adapter
    assert isinstance(linear, nn.Linear) and linear.bias is None
    assert (linear.in_features, linear.out_features) == (16, 32)


def test_vanilla_kd_and_proteus_heads_are_layer_norm_then_linear_to_teacher_width():
    heads = [build("vanilla-kd").head] + [getattr(build("proteus"), h) for h in ("token_head", "fea_head",
                                                                                 "patch_head")]
    for head in heads:
        assert isinstance(head[0], nn.LayerNorm) and head[0].normalized_shape == (16,)
        assert isinstance(head[1], nn.Linear) and (head[1].in_features, head[1].out_features) == (16, 32)


# ---------------------------------------------------------------- wiring against plain-Python references


def nested(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def ref_mse(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / len(a)


def ref_ln_linear(vec: list[float], head: nn.Sequential) -> list[float]:
    """LayerNorm (biased variance, affine) then Linear, on one vector."""
    ln, lin = head[0], head[1]
    mean = sum(vec) / len(vec)
    var = sum((v - mean) ** 2 for v in vec) / len(vec)
    g, b = nested(ln.weight), nested(ln.bias)
    normed = [(v - mean) / math.sqrt(var + ln.eps) * g[i] + b[i] for i, v in enumerate(vec)]
    w, bias = nested(lin.weight), nested(lin.bias)
    return [bias[o] + sum(w[o][i] * normed[i] for i in range(len(normed))) for o in range(len(w))]


def ref_conv1x1(fmap: list, weight: torch.Tensor, bias: torch.Tensor | None) -> list:
    """1×1 convolution of a C×h×w nested list."""
    w = [[row[0][0] for row in out] for out in nested(weight)]
    b = nested(bias) if bias is not None else [0.0] * len(w)
    h, wd = len(fmap[0]), len(fmap[0][0])
    return [[[b[o] + sum(w[o][c] * fmap[c][y][x] for c in range(len(fmap))) for x in range(wd)] for y in range(h)]
            for o in range(len(w))]


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def ref_cwd_maps(student: list, teacher: list, tau: float) -> float:
    """Σ_{n,c} KL(softmax_HW(t/τ) || softmax_HW(s/τ)) / (N·C) · τ² on nested N×C×H×W lists."""
    total, pairs = 0.0, 0
    for s_n, t_n in zip(student, teacher, strict=True):
        for s_c, t_c in zip(s_n, t_n, strict=True):
            ps = softmax([v / tau for row in s_c for v in row])
            pt = softmax([v / tau for row in t_c for v in row])
            total += sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))
            pairs += 1
    return total / pairs * tau**2


def test_vanilla_kd_regresses_cls_and_patches_of_a_vit_student():
    method = build("vanilla-kd")
    bt = batch()
    s_out, t_out = outputs(method, bt)
    with torch.no_grad():
        feat = float(method.loss(method.stages()[0], bt, s_out, t_out)["feat"])
    projected = [ref_ln_linear(tok, method.head) for sample in nested(s_out.tokens) for tok in sample]
    target = [tok for sample in nested(t_out.tokens) for tok in sample]
    assert len(projected) == 2 * 17  # CLS + 16 patches per sample
    assert math.isclose(feat, ref_mse([v for t in projected for v in t], [v for t in target for v in t]),
                        rel_tol=1e-5)


def test_vanilla_kd_cnn_student_map_is_spread_over_the_teacher_grid():
    method = build("vanilla-kd", "tiny-resnet")
    bt = batch()
    s_out, t_out = outputs(method.eval(), bt)
    assert s_out.grid == (1, 1) and t_out.grid == (4, 4)
    with torch.no_grad():
        feat = float(method.loss(method.stages()[0], bt, s_out, t_out)["feat"])
    # the single student cell, resampled bilinearly to 4×4, is the same vector at all 16 teacher positions
    student, teacher = nested(s_out.tokens), nested(t_out.patch_tokens)
    pred, want = [], []
    for n in range(2):
        projected = ref_ln_linear(student[n][0], method.head)
        for i in range(16):
            pred += projected
            want += teacher[n][i]
    assert math.isclose(feat, ref_mse(pred, want), rel_tol=1e-5)


def test_fitnet_features_regress_the_deepest_map_through_a_bias_free_1x1_conv():
    for student in ("tiny-deit-s", "tiny-resnet"):
        method = build("fitnet", student, weight=2.0)
        bt = batch()
        s_out, t_out = outputs(method.eval(), bt)
        with torch.no_grad():
            hint = float(method.loss(method.stages()[0], bt, s_out, t_out)["hint"])
        pred, want = [], []
        for n in range(2):
            adapted = ref_conv1x1(nested(s_out.features[-1][n]), method.adapter.weight, None)
            target = nested(t_out.features[-1][n])
            sh, sw = len(adapted[0]), len(adapted[0][0])
            for c in range(32):
                for y in range(4):
                    for x in range(4):
                        # same grid: position by position; a CNN's 1×1 cell: the same value everywhere
                        pred.append(adapted[c][y * sh // 4][x * sw // 4] if sh == 1 else adapted[c][y][x])
                        want.append(target[c][y][x])
        assert math.isclose(hint, 2.0 * ref_mse(pred, want), rel_tol=1e-5), student


def test_cwd_features_run_the_adapter_then_the_spatial_divergence():
    method = build("cwd", on="features", temperature=2.0)
    bt = batch()
    s_out, t_out = outputs(method, bt)
    with torch.no_grad():
        cwd = float(method.loss(method.stages()[0], bt, s_out, t_out)["cwd"])
    adapted = [ref_conv1x1(nested(s_out.features[-1][n]), method.adapter.weight, method.adapter.bias)
               for n in range(2)]
    want = 3.0 * ref_cwd_maps(adapted, nested(t_out.features[-1]), 2.0)
    assert math.isclose(cwd, want, rel_tol=1e-5)


def test_cwd_features_of_a_cnn_deepest_single_cell_carry_no_student_signal():
    # documents a consequence of the grid rule: at 16 px the CNN's stride-32 map is 1×1; resampled to the
    # teacher's 4×4 grid it is constant per channel, so the spatial softmax is uniform whatever the student
    method = build("cwd", "tiny-resnet", on="features", level=-1)
    bt = batch()
    s_out, t_out = outputs(method.eval(), bt)
    assert s_out.features[-1].shape[-2:] == (1, 1)
    with torch.no_grad():
        cwd = float(method.loss(method.stages()[0], bt, s_out, t_out)["cwd"])
    uniform = [[[[0.0] * 4 for _ in range(4)] for _ in range(32)] for _ in range(2)]
    assert math.isclose(cwd, 3.0 * ref_cwd_maps(uniform, nested(t_out.features[-1]), 4.0), rel_tol=1e-5)


# ---------------------------------------------------------------- Proteus's masked pass


def capture_masks(method) -> list:
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs.get("mask"))

    method.student.backbone.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize(("b", "rows"), [(2, [8, 0]), (3, [8, 0, 0]), (4, [8, 8, 0, 0])])
def test_proteus_masks_floor_half_the_batch_with_half_their_tokens(b, rows):
    method = build("proteus")
    seen = capture_masks(method)
    method_step(method, method.stages()[0])(batch(b))
    assert seen[0] is None  # the clean pass
    assert len(seen) == 2 and seen[1].dtype == torch.bool and seen[1].sum(dim=1).tolist() == rows


def test_proteus_terms_match_reference_on_the_same_mask():
    method = build("proteus")
    bt = batch(4)
    s_out, t_out = outputs(method, bt)
    with torch.no_grad():
        torch.manual_seed(11)
        terms = method.loss(method.stages()[0], bt, s_out, t_out)
        torch.manual_seed(11)  # the loss draws its mask first, so the same seed gives the same mask
        mask = first_samples_mask(4, 16, 0.5, 0.5)
        masked = method.student.backbone(bt.images, mask=mask).tokens[:, 1:]
        cls_s = method.token_head(s_out.cls_token)
        patches_s = method.fea_head(s_out.patch_tokens)
        masked_s = method.patch_head(masked)
    cs, ps, ms = nested(cls_s), nested(patches_s), nested(masked_s)
    ct, pt, m = nested(t_out.cls_token), nested(t_out.patch_tokens), mask.tolist()
    token = ref_mse([v for row in cs for v in row], [v for row in ct for v in row])
    fea = ref_mse([v for n in range(4) for tok in [cs[n]] + ps[n] for v in tok],
                  [v for n in range(4) for tok in [ct[n]] + pt[n] for v in tok])
    patch = ref_mse([v for n in range(4) for i in range(16) if m[n][i] for v in ms[n][i]],
                    [v for n in range(4) for i in range(16) if m[n][i] for v in pt[n][i]])
    assert math.isclose(float(terms["token"]), token, rel_tol=1e-5)
    assert math.isclose(float(terms["fea"]), fea, rel_tol=1e-5)
    assert math.isclose(float(terms["patch"]), patch, rel_tol=1e-5)


def test_proteus_masked_pass_really_uses_the_mask_token():
    method = build("proteus")
    bt = batch(2)
    s_out, t_out = outputs(method, bt)

    def terms():
        torch.manual_seed(12)
        with torch.no_grad():
            return method.loss(method.stages()[0], bt, s_out, t_out)

    base = terms()
    with torch.no_grad():
        method.student.backbone.mask_token.add_(torch.randn(1, 16, generator=torch.Generator().manual_seed(13)))
    moved = terms()
    assert not torch.equal(base["patch"], moved["patch"])
    assert torch.equal(base["token"], moved["token"]) and torch.equal(base["fea"], moved["fea"])
    # with no sample masked the patch term is zero and the mask token is irrelevant
    method.hp["mask_probability"] = 0.0
    assert float(terms()["patch"]) == 0.0


def test_proteus_mask_token_learns_from_the_patch_term():
    method = build("proteus")
    terms = method_step(method, method.stages()[0])(batch(2))
    terms["patch"].backward()
    assert has_grad(method.student.backbone.mask_token)
    assert all(p.grad is None for p in method.token_head.parameters())  # the patch term uses patch_head only


# ---------------------------------------------------------------- through the CLI


def records(root: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(root.rglob("records.jsonl")) for line in p.read_text().splitlines()]


def test_cli_runs_the_baselines_and_records_resolved_hparams(tmp_path):
    out = tmp_path / "out"
    methods = ["vanilla-kd", "cwd", "fitnet", "proteus"]
    result = CliRunner().invoke(cli, ["run", "--suite", "smoke", "--methods", ",".join(methods), "--pairs",
                                      "tiny-f2l", "--benchmarks", "game2real", "--seeds", "0", "--out", str(out),
                                      "--set", "method.cwd.temperature=2"])
    assert result.exit_code == 0, result.output
    recs = records(out)
    for name in methods:
        mine = [r for r in recs if r["method"] == name]
        assert {r["domain"] for r in mine} == {"game", "city", "dashcam", "street"}, name
        want = METHODS.get(name).resolve_hparams({"temperature": 2} if name == "cwd" else {})
        assert all(r["hparams"] == want for r in mine), name
        assert all(0 <= r["miou"] <= 100 and r["pair"] == "tiny-f2l" for r in mine)
    for name, terms in (("vanilla-kd", {"feat"}), ("cwd", {"cwd"}), ("fitnet", {"hint"}),
                        ("proteus", {"token", "fea", "patch"})):
        (metrics,) = (out / "smoke" / "game2real" / "tiny-f2l" / name).rglob("metrics.jsonl")
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        assert rows and all({f"loss/{t}" for t in terms | {"task"}} <= set(row) for row in rows), name
    cwd = next(r for r in recs if r["method"] == "cwd")["hparams"]
    assert cwd["temperature"] == 2.0 and isinstance(cwd["temperature"], float) and cwd["weight"] == 3.0


def test_cli_refuses_proteus_with_a_cnn_student_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "--suite", "smoke", "--methods", "proteus", "--pairs", "tiny-f2l-cnn",
                                      "--benchmarks", "game2real", "--seeds", "0", "--out", str(out)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "proteus" in lines[0] and "cnn" in lines[0] and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())
