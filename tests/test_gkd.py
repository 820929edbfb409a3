"""GKD (methods/gkd.py) and its ablations (methods/gkd_ablations.py): QSD and the three losses against plain-Python
references, stages and freezing, the masked pass, CNN students, stage-1 reuse and hyper-parameters through
``kdbench run``."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
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
from kdbench.method import METHODS, Batch, RunContext, Stage
from kdbench.models.backbones import ViTBackbone
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import MODELS
from kdbench_methods.gkd import GKD, QSD, InputMasker, MSEHead, gkd_losses, load_student_backbone
from kdbench_methods.gkd_ablations import GKDMSEHeads, GKDNoCLS, GKDNoMask, GKDSingleStage

TEACHER = "tiny-vit-b"
CLASSES = 6
TOKENS = frozenset({"tokens"})
DEFAULT_KEYS = {"cls_weight", "feat_weight", "mask_weight", "mask_probability", "mask_ratio", "proxy_stage",
                "proxy_steps", "distill_steps", "distill_lr", "stage1_from"}

# ---------------------------------------------------------------- builders


def seg(name: str) -> Segmentor:
    bb = MODELS.get(name).build_backbone(16)
    return Segmentor(bb, LightHead(bb.level_channels, CLASSES))


def build(method: str = "gkd", student: str = "tiny-vit-s", seed: int = 0, pair_kind: str = "F2L", **hparams):
    torch.manual_seed(seed)
    return METHODS.get(method)(seg(TEACHER), seg(student), context(pair_kind), **hparams)


def context(pair_kind: str = "F2L") -> RunContext:
    return RunContext(pair_kind, 16, CLASSES, torch.device("cpu"))


def batch(b: int = 2, seed: int = 6) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(images=torch.randn(b, 3, 16, 16, generator=gen),
                 labels=torch.randint(0, CLASSES, (b, 16, 16), generator=gen))


def outputs(method, bt: Batch):
    with torch.no_grad():
        return method.student(bt.images), method.teacher(bt.images)


def has_grad(p: torch.Tensor) -> bool:
    return p.grad is not None and float(p.grad.abs().sum()) > 0


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter redrawn (LayerNorm's affine included, so the reference really checks it)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (0.3 if p.dim() == 1 else 0.0))
    return module


# ---------------------------------------------------------------- plain-Python references


def nested(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def flat(x) -> list[float]:
    return [v for item in x for v in flat(item)] if isinstance(x, list) else [x]


def ref_mse(a, b) -> float:
    a, b = flat(a), flat(b)
    assert len(a) == len(b)
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / len(a)


def ref_ln_linear(vec: list[float], head: nn.Sequential) -> list[float]:
    """LayerNorm (biased variance, eps 1e-5, affine) then Linear, on one vector."""
    ln, lin = head[0], head[1]
    assert ln.eps == 1e-5
    mean = sum(vec) / len(vec)
    var = sum((v - mean) ** 2 for v in vec) / len(vec)
    g, b = nested(ln.weight), nested(ln.bias)
    normed = [(v - mean) / math.sqrt(var + 1e-5) * g[i] + b[i] for i, v in enumerate(vec)]
    w, bias = nested(lin.weight), nested(lin.bias)
    return [bias[o] + sum(w[o][i] * normed[i] for i in range(len(normed))) for o in range(len(w))]


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def ref_qsd(student: list, teacher: list, head: QSD) -> list:
    """One sample: q = LN->Linear(s), v = LN'->Linear'(s), a_i = softmax_j(q_i·t_j) (no scaling), ŝ_i = Σ_j a_ij v_j."""
    q = [ref_ln_linear(s, head.query) for s in student]
    v = [ref_ln_linear(s, head.value) for s in student]
    out = []
    for qi in q:
        a = softmax([sum(x * y for x, y in zip(qi, tj, strict=True)) for tj in teacher])
        out.append([sum(a[j] * v[j][c] for j in range(len(v))) for c in range(len(v[0]))])
    return out


# ---------------------------------------------------------------- QSD, MSEHead


def test_qsd_matches_plain_python_reference():
    torch.manual_seed(0)
    head = randomise(QSD(4, 5), 1)
    gen = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, 5, generator=gen) * 2.0
    with torch.no_grad():
        got = nested(head(s, t))
        attn = head.attention(s, t)
    for n in range(2):
        want = ref_qsd(nested(s[n]), nested(t[n]), head)
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(flat(got[n]), flat(want),
                                                                                   strict=True))
    assert attn.shape == (2, 3, 3) and torch.allclose(attn.sum(-1), torch.ones(2, 3))


def test_qsd_with_zero_query_averages_the_values():
    # q ≡ 0 makes every logit 0, so each output is the plain mean of v over the tokens
    head = randomise(QSD(4, 6), 3)
    with torch.no_grad():
        head.query[1].weight.zero_()
        head.query[1].bias.zero_()
    s, t = torch.randn(2, 5, 4), torch.randn(2, 5, 6) * 10
    with torch.no_grad():
        out, v = head(s, t), head.value(s)
    assert torch.allclose(out, v.mean(dim=1, keepdim=True).expand_as(out), atol=1e-6)


def test_qsd_with_identity_attention_is_layer_norm_linear_plus_mse(monkeypatch):
    head = randomise(QSD(16, 32), 4)
    monkeypatch.setattr(QSD, "attention", lambda self, s, t: torch.eye(s.shape[1]).expand(s.shape[0], -1, -1))
    s, t = torch.randn(2, 7, 16), torch.randn(2, 7, 32)
    plain = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 32))
    plain.load_state_dict(head.value.state_dict())
    assert isinstance(head.value[0], nn.LayerNorm) and isinstance(head.value[1], nn.Linear)
    with torch.no_grad():
        out = head(s, t)
        assert torch.allclose(out, head.value(s), rtol=0, atol=1e-6)
        assert torch.allclose(out, plain(s), rtol=0, atol=1e-6)
        assert math.isclose(float(F.mse_loss(out, t)), float(F.mse_loss(plain(s), t)), rel_tol=1e-6)
        # and the Proteus-style MSEHead with the same weights is the same thing
        mse = MSEHead(16, 32)
        mse.proj.load_state_dict(head.value.state_dict())
        assert torch.allclose(mse(s, t), out, rtol=0, atol=1e-6)


def test_cls_head_on_a_single_token_is_the_value_projection_whatever_the_teacher():
    head = randomise(QSD(16, 32), 5)
    s = torch.randn(3, 1, 16)
    with torch.no_grad():
        want = head.value(s)
        for scale in (0.0, 1.0, 1e3):
            t = torch.randn(3, 1, 32) * scale
            assert torch.equal(head.attention(s, t), torch.ones(3, 1, 1))
            assert torch.allclose(head(s, t), want, rtol=0, atol=1e-6)
    # the query projection of a one-token head never learns from the loss: the softmax over one key is constant
    head(s, torch.randn(3, 1, 32)).pow(2).sum().backward()
    assert has_grad(head.value[1].weight) and not has_grad(head.query[1].weight)


@pytest.mark.parametrize(("c_s", "c_t", "n"), [(16, 32, 4), (24, 40, 3)])
def test_mismatched_widths(c_s, c_t, n):
    head = randomise(QSD(c_s, c_t), 6)
    s = torch.randn(2, n, c_s, requires_grad=True)
    t = torch.randn(2, n, c_t)
    out = head(s, t)
    assert out.shape == (2, n, c_t) and head.attention(s, t).shape == (2, n, n)
    assert head.query[1].weight.shape == (c_t, c_s) and head.value[1].weight.shape == (c_t, c_s)
    got, want = nested(out), [ref_qsd(nested(s[i]), nested(t[i]), head) for i in range(2)]
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(flat(got), flat(want), strict=True))
    F.mse_loss(out, t).backward()
    assert has_grad(s) and all(has_grad(p) for p in head.parameters())
    assert MSEHead(c_s, c_t)(s, t).shape == (2, n, c_t)


# ---------------------------------------------------------------- gkd_losses


def test_gkd_losses_match_plain_python_reference():
    gen = torch.Generator().manual_seed(7)
    b, n, c = 3, 5, 4
    cls_p, feat_p, mask_p = (torch.randn(b, c, generator=gen), torch.randn(b, n, c, generator=gen),
                             torch.randn(b, n, c, generator=gen))
    cls_t, patches_t = torch.randn(b, c, generator=gen), torch.randn(b, n, c, generator=gen)
    terms = gkd_losses(cls_p, feat_p, mask_p, cls_t, patches_t)
    assert set(terms) == {"cls", "feat", "mask"} and all(v.dim() == 0 for v in terms.values())
    cp, fp, mp, ct, pt = map(nested, (cls_p, feat_p, mask_p, cls_t, patches_t))
    assert math.isclose(float(terms["cls"]), ref_mse(cp, ct), rel_tol=1e-6)
    # feat: one mean over the B × (1 + N) × C sequence [CLS; patches], not an average of two means
    whole_p = [[cp[i]] + fp[i] for i in range(b)]
    whole_t = [[ct[i]] + pt[i] for i in range(b)]
    assert len(flat(whole_p)) == b * (n + 1) * c
    assert math.isclose(float(terms["feat"]), ref_mse(whole_p, whole_t), rel_tol=1e-6)
    assert math.isclose(float(terms["mask"]), ref_mse(mp, pt), rel_tol=1e-6)
    no_mask = gkd_losses(cls_p, feat_p, None, cls_t, patches_t)
    assert set(no_mask) == {"cls", "feat"}
    assert torch.equal(no_mask["cls"], terms["cls"]) and torch.equal(no_mask["feat"], terms["feat"])


def test_gkd_losses_closed_forms():
    # CLS exact, every patch off by 1 in every channel: feat = N/(N+1); mask off by 2 everywhere: 4 over all tokens
    b, n, c = 2, 3, 8
    cls_t, patches_t = torch.randn(b, c), torch.randn(b, n, c)
    terms = gkd_losses(cls_t.clone(), patches_t + 1, patches_t + 2, cls_t, patches_t)
    assert float(terms["cls"]) == 0.0
    assert math.isclose(float(terms["feat"]), n / (n + 1), rel_tol=1e-6)
    assert math.isclose(float(terms["mask"]), 4.0, rel_tol=1e-6)


# ---------------------------------------------------------------- the method's terms on real models


def test_method_terms_match_reference_on_the_same_mask():
    method = build("gkd")
    for head in (method.cls_head, method.feat_head, method.mask_head):
        randomise(head, 8)  # the teacher-token keys give sharp attention; random heads keep the check general
    bt = batch(4)
    s_out, t_out = outputs(method, bt)
    with torch.no_grad():
        torch.manual_seed(11)
        terms = method.loss(method.stages()[0], bt, s_out, t_out)
        torch.manual_seed(11)  # the loss draws its mask first, so the same seed gives the same mask
        mask = first_samples_mask(4, 16, 0.5, 0.5)
        masked = method.student.backbone(bt.images, mask=mask).tokens[:, 1:]
    assert set(terms) == {"cls", "feat", "mask"}
    sc, sp, ms = nested(s_out.cls_token), nested(s_out.patch_tokens), nested(masked)
    tc, tp = nested(t_out.cls_token), nested(t_out.patch_tokens)
    cls_pred = [ref_qsd([sc[i]], [tc[i]], method.cls_head)[0] for i in range(4)]
    feat_pred = [ref_qsd(sp[i], tp[i], method.feat_head) for i in range(4)]
    mask_pred = [ref_qsd(ms[i], tp[i], method.mask_head) for i in range(4)]  # keys: the clean teacher patches
    assert math.isclose(float(terms["cls"]), ref_mse(cls_pred, tc), rel_tol=1e-5)
    assert math.isclose(float(terms["feat"]), ref_mse([[cls_pred[i]] + feat_pred[i] for i in range(4)],
                                                      [[tc[i]] + tp[i] for i in range(4)]), rel_tol=1e-5)
    assert math.isclose(float(terms["mask"]), ref_mse(mask_pred, tp), rel_tol=1e-5)


def test_weights_scale_the_terms():
    bt = batch(2)
    base, weighted = build("gkd"), build("gkd", cls_weight=2.0, feat_weight=0.5, mask_weight=3.0)
    s_out, t_out = outputs(base, bt)
    with torch.no_grad():
        torch.manual_seed(1)
        a = base.loss(base.stages()[0], bt, s_out, t_out)
        torch.manual_seed(1)
        b = weighted.loss(weighted.stages()[0], bt, s_out, t_out)
    for key, w in (("cls", 2.0), ("feat", 0.5), ("mask", 3.0)):
        assert math.isclose(float(b[key]), w * float(a[key]), rel_tol=1e-6)


def test_vit_student_on_another_token_grid_is_refused():
    torch.manual_seed(0)
    bb = ViTBackbone(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)  # 2×2 grid vs the teacher's 4×4
    method = GKD(seg(TEACHER), Segmentor(bb, LightHead(bb.level_channels, CLASSES)), context())
    with pytest.raises(UserError, match="teacher's token grid"):
        method_step(method, method.stages()[0])(batch())


# ---------------------------------------------------------------- gradients: teacher none, student and heads all

GRAD_CASES = [
    ("gkd", "tiny-vit-s", {"cls", "feat", "mask"}),
    ("gkd", "tiny-deit-s", {"cls", "feat", "mask"}),
    ("gkd-mse", "tiny-vit-s", {"cls", "feat", "mask"}),
    ("gkd-no-mask", "tiny-vit-s", {"cls", "feat"}),
    ("gkd-no-cls", "tiny-vit-s", {"feat", "mask"}),
    ("gkd-single-stage", "tiny-vit-s", {"task", "cls", "feat", "mask"}),
    ("gkd", "tiny-resnet", {"cls", "feat", "mask"}),
]


@pytest.mark.parametrize(("name", "student", "terms"), GRAD_CASES, ids=[f"{c[0]}-{c[1]}" for c in GRAD_CASES])
def test_first_stage_gradients_reach_student_and_heads_never_teacher(name, student, terms):
    method = build(name, student)
    for p in method.teacher.parameters():
        p.requires_grad_(True)  # even a trainable teacher gets nothing: it runs under inference mode
    got = method_step(method, method.stages()[0])(batch())
    assert set(got) == terms
    assert all(t.dim() == 0 and math.isfinite(float(t.detach())) for t in got.values())
    sum(t for k, t in got.items() if k != "task").backward()  # the distillation terms alone
    assert all(p.grad is None for p in method.teacher.parameters())
    backbone = method.student.backbone
    first = backbone.vit.patch_embed.proj.weight if backbone.kind == "vit" else backbone.net.conv1[0].weight
    assert has_grad(first)
    heads = {"cls_head": method.cls_head, "feat_head": method.feat_head, "mask_head": method.mask_head}
    assert (method.mask_head is None) == (name == "gkd-no-mask")
    for hname, head in heads.items():
        if head is None:
            continue
        for pname, p in head.named_parameters():
            if hname == "cls_head" and pname.startswith("query."):
                assert not has_grad(p)  # one key: the softmax is 1 whatever the query
            else:
                assert has_grad(p), f"{hname}.{pname} has no gradient"
    if backbone.kind == "vit":
        assert has_grad(backbone.mask_token) == ("mask" in terms)
    else:
        assert has_grad(method.input_masker.value)


# ---------------------------------------------------------------- stages


def summary(stages: list[Stage]) -> list[tuple]:
    return [(s.name, s.data, tuple(s.train), s.uses_teacher, s.student_taps, s.steps, s.lr) for s in stages]


STAGE_1A = ("task-agnostic", "proxy", ("backbone", "extra"), True, TOKENS, None, 5e-4)
STAGE_1B = ("domain-agnostic", "source-images", ("backbone", "extra"), True, TOKENS, None, 5e-4)
STAGE_2 = ("task", "source", ("head",), False, frozenset({"logits"}), None, None)


@pytest.mark.parametrize(("name", "kind", "hp", "want"), [
    ("gkd", "F2L", {}, [STAGE_1A, STAGE_1B, STAGE_2]),
    ("gkd", "F2F", {}, [STAGE_1B, STAGE_2]),
    ("gkd", "F2F", {"proxy_stage": "on"}, [STAGE_1A, STAGE_1B, STAGE_2]),
    ("gkd", "F2L", {"proxy_stage": "off"}, [STAGE_1B, STAGE_2]),
    ("gkd-mse", "F2L", {}, [STAGE_1A, STAGE_1B, STAGE_2]),
    ("gkd-no-mask", "F2F", {}, [STAGE_1B, STAGE_2]),
    ("gkd-no-cls", "F2L", {}, [STAGE_1A, STAGE_1B, STAGE_2]),
])
def test_stages(name, kind, hp, want):
    assert summary(build(name, pair_kind=kind, **hp).stages()) == want


def test_stage_budgets_and_rate_overrides():
    method = build("gkd", proxy_steps=7, distill_steps=5, distill_lr=1e-3)
    assert [(s.name, s.steps, s.lr) for s in method.stages()] == [
        ("task-agnostic", 7, 1e-3), ("domain-agnostic", 5, 1e-3), ("task", None, None)]


def test_single_stage_ablation_trains_everything_on_labelled_source():
    for kind in ("F2L", "F2F"):
        (stage,) = build("gkd-single-stage", pair_kind=kind).stages()
        assert summary([stage]) == [("train", "source", ("backbone", "head", "extra"), True,
                                     frozenset({"logits", "tokens"}), None, None)]


@pytest.mark.parametrize("name", ["gkd", "gkd-mse", "gkd-no-mask", "gkd-no-cls"])
def test_stage1_from_loads_the_backbone_and_runs_stage2_alone(tmp_path, name):
    source = seg("tiny-deit-s")
    path = tmp_path / "stage-domain-agnostic.pt"
    torch.save({"stage": "domain-agnostic", "student": source.state_dict(), "method": {}}, path)
    method = build(name, "tiny-deit-s", pair_kind="F2L", proxy_stage="on", stage1_from=str(path))
    assert summary(method.stages()) == [STAGE_2]
    assert all(torch.equal(v, source.backbone.state_dict()[k]) for k, v in method.student.backbone.state_dict().items())


def test_stage1_losses_have_no_task_term_and_stage2_only_the_task_term():
    method = build("gkd")
    bt = batch(2)
    for stage in method.stages()[:-1]:
        assert set(method_step(method, stage)(Batch(images=bt.images))) == {"cls", "feat", "mask"}  # no labels
    assert set(method_step(method, method.stages()[-1])(bt)) == {"task"}


def test_ablations_build_their_heads():
    assert all(isinstance(h, QSD) for h in (build().cls_head, build().feat_head, build().mask_head))
    mse = build("gkd-mse")
    assert isinstance(mse, GKDMSEHeads)
    for head in (mse.cls_head, mse.feat_head, mse.mask_head):
        assert isinstance(head, MSEHead) and head.proj[1].weight.shape == (32, 16)
    no_mask = build("gkd-no-mask")
    assert isinstance(no_mask, GKDNoMask) and no_mask.mask_head is None
    assert {n for n, _ in no_mask.named_children()} == {"student", "cls_head", "feat_head"}
    assert isinstance(build("gkd-no-cls"), GKDNoCLS) and isinstance(build("gkd-single-stage"), GKDSingleStage)
    assert build("gkd", "tiny-resnet").input_masker is not None and build().input_masker is None


def test_no_mask_ablation_runs_a_single_student_pass():
    method = build("gkd-no-mask")
    seen = capture_backbone_calls(method)
    method_step(method, method.stages()[0])(batch(4))
    assert len(seen) == 1 and seen[0][1] is None


# ---------------------------------------------------------------- training: frozen backbone in stage 2


@pytest.fixture(scope="module")
def data():
    return StageData(make_split(get_domain("game"), "train", 8, 16), "urban", 16, torch.device("cpu"))


@pytest.mark.parametrize("student", ["tiny-deit-s", "tiny-resnet"])
def test_stage2_leaves_the_stage1_backbone_bit_identical(data, student):
    method = build("gkd", student, seed=2)
    snapshots = {"start": copy.deepcopy(method.student.state_dict())}
    extras = {}
    teacher_before = copy.deepcopy(method.teacher.state_dict())

    def on_end(stage):
        snapshots[stage.name] = copy.deepcopy(method.student.state_dict())
        extras[stage.name] = copy.deepcopy({k: v for k, v in method.state_dict().items()
                                            if not k.startswith("student.")})

    logs = []
    results = train_method(method, lambda st: data.batches(st.data, 4, 0), TrainConfig(steps=3, batch_size=4,
                                                                                       log_every=1),
                           resolve_runtime("cpu", "off"), logs.append, on_stage_end=on_end)
    assert [r.name for r in results] == ["task-agnostic", "domain-agnostic", "task"]
    start, s1a, s1b, s2 = (snapshots[k] for k in ("start", "task-agnostic", "domain-agnostic", "task"))
    backbone = [k for k in s2 if k.startswith("backbone.")]
    head = [k for k in s2 if k.startswith("head.")]
    assert backbone and head
    # stage 2: the backbone (parameters and buffers such as BatchNorm statistics) is bit-identical, the head moved
    assert all(torch.equal(s1b[k], s2[k]) for k in backbone)
    assert any(not torch.equal(s1b[k], s2[k]) for k in head)
    assert all(torch.equal(extras["domain-agnostic"][k], v) for k, v in extras["task"].items())
    # stage 1 (both parts) moved the backbone and left the decode head alone
    assert any(not torch.equal(start[k], s1a[k]) for k in backbone)
    assert any(not torch.equal(s1a[k], s1b[k]) for k in backbone)
    assert all(torch.equal(start[k], s1b[k]) for k in head)
    assert all(torch.equal(v, method.teacher.state_dict()[k]) for k, v in teacher_before.items())
    for row in logs:
        losses = {k for k in row if k.startswith("loss/")}
        assert losses == ({"loss/task"} if row["stage"] == "task" else {"loss/cls", "loss/feat", "loss/mask"})


# ---------------------------------------------------------------- the masked pass


def capture_backbone_calls(method) -> list:
    """(images, mask) of every call of the student's backbone."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((args[0].detach().clone(), kwargs.get("mask")))

    method.student.backbone.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize(("b", "probability", "ratio", "rows"), [
    (4, 0.5, 0.5, [8, 8, 0, 0]),
    (3, 0.5, 0.5, [8, 0, 0]),
    (4, 0.25, 0.75, [12, 0, 0, 0]),
    (5, 1.0, 0.3, [4, 4, 4, 4, 4]),
])
def test_masking_hits_exactly_the_requested_share(b, probability, ratio, rows):
    method = build("gkd", mask_probability=probability, mask_ratio=ratio)
    seen = capture_backbone_calls(method)
    method_step(method, method.stages()[0])(batch(b))
    assert len(seen) == 2 and seen[0][1] is None  # the clean pass, then the masked pass
    mask = seen[1][1]
    assert mask.dtype == torch.bool and mask.shape == (b, 16) and mask.sum(dim=1).tolist() == rows
    assert torch.equal(seen[0][0], seen[1][0])  # a ViT is masked through its tokens, not its pixels


def test_masking_replaces_patch_embeddings_with_the_mask_token():
    method = build("gkd", mask_probability=1.0, mask_ratio=1.0)
    with torch.no_grad():
        method.student.backbone.mask_token.normal_()
    bt = batch(2)
    captured = []
    handle = method.student.backbone.register_forward_hook(lambda m, a, out: captured.append(out.tokens))
    with torch.no_grad():
        method_step(method, method.stages()[0])(bt)
    handle.remove()
    clean, masked = captured
    assert not torch.allclose(clean[0], clean[1])
    assert torch.allclose(masked[0], masked[1], atol=1e-6)  # every patch is the mask token: the images are gone


def test_mask_token_changes_the_mask_term_only():
    method = build("gkd")
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
    assert not torch.equal(base["mask"], moved["mask"])
    assert torch.equal(base["cls"], moved["cls"]) and torch.equal(base["feat"], moved["feat"])
    # nothing masked: the masked pass is the clean pass, whatever the mask token
    method.hp["mask_probability"] = 0.0
    unmasked = terms()
    with torch.no_grad():
        want = F.mse_loss(method.mask_head(s_out.patch_tokens, t_out.patch_tokens), t_out.patch_tokens)
    assert math.isclose(float(unmasked["mask"]), float(want), rel_tol=1e-5)


# ---------------------------------------------------------------- CNN students


def test_input_masker_replaces_exactly_the_pixels_under_masked_cells():
    masker = InputMasker()
    with torch.no_grad():
        masker.value.copy_(torch.tensor([100.0, 200.0, 300.0]))
    images = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).view(2, 3, 4, 8)
    grid = (2, 4)  # 2 rows × 4 columns of 2×2-pixel cells, row-major
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 1] = mask[0, 6] = mask[1, 4] = True
    out = masker(images, mask, grid)
    want = images.clone()
    for n in range(2):
        for y in range(4):
            for x in range(8):
                if mask[n, (y // 2) * 4 + x // 2]:
                    for c in range(3):
                        want[n, c, y, x] = masker.value[c]
    assert torch.equal(out, want)
    assert int((out != images).any(dim=1).sum()) == 3 * 4  # three cells of four pixels each
    out.sum().backward()
    assert masker.value.grad.tolist() == [12.0, 12.0, 12.0]
    assert torch.equal(InputMasker().value, torch.zeros(3))  # zero-initialised: the normalised mean colour


def test_cnn_student_runs_with_the_token_average_as_cls_and_input_masking():
    method = build("gkd", "tiny-resnet").eval()  # eval: BatchNorm statistics stay put between the passes
    # 64 px: the CNN's stride-32 map is 2×2 (at 16 px its single cell would make any CLS surrogate the average);
    # the teacher's grid is 16×16 cells of 4×4 pixels
    bt = Batch(images=torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        method.input_masker.value.copy_(torch.tensor([0.5, -1.0, 2.0]))
    seen = capture_backbone_calls(method)
    s_out, t_out = outputs(method, bt)
    seen.clear()
    with torch.no_grad():
        torch.manual_seed(3)
        terms = method.loss(method.stages()[0], bt, s_out, t_out)
        torch.manual_seed(3)
        mask = first_samples_mask(4, 256, 0.5, 0.5)
    assert s_out.grid == (2, 2) and t_out.grid == (16, 16)
    assert set(terms) == {"cls", "feat", "mask"} and all(math.isfinite(float(v)) for v in terms.values())
    cls, patches = method.student_tokens(s_out, t_out)
    assert s_out.num_prefix == 0 and torch.allclose(cls, s_out.tokens.mean(dim=1))
    assert not torch.allclose(cls, s_out.tokens[:, 0])
    assert patches.shape == (4, 256, method.student.backbone.width)
    with torch.no_grad():
        want_cls = F.mse_loss(method.cls_head.value(s_out.tokens.mean(dim=1)), t_out.cls_token)
    assert math.isclose(float(terms["cls"]), float(want_cls), rel_tol=1e-5)
    # the masked pass: no token mask, the image with each masked 4×4 cell painted in the masker's colour
    ((images, token_mask),) = seen
    assert token_mask is None
    painted = (images != bt.images).any(dim=1)
    cells = mask.view(4, 16, 16).repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert torch.equal(painted, cells) and int(painted[:2].sum()) == 2 * 128 * 16 and painted[2:].sum() == 0
    assert torch.equal(images.permute(0, 2, 3, 1)[cells], method.input_masker.value.expand(int(cells.sum()), 3))


def test_cnn_input_masker_learns_from_the_mask_term_only():
    method = build("gkd", "tiny-resnet")
    terms = method_step(method, method.stages()[0])(batch(2))
    (terms["cls"] + terms["feat"]).backward(retain_graph=True)
    assert method.input_masker.value.grad is None
    terms["mask"].backward()
    assert has_grad(method.input_masker.value)


# ---------------------------------------------------------------- load_student_backbone


def test_load_student_backbone_from_a_stage_file_or_a_plain_state(tmp_path):
    source = seg("tiny-deit-s")
    torch.save({"stage": "domain-agnostic", "student": source.state_dict(), "method": {}}, tmp_path / "stage.pt")
    torch.save(source.backbone.state_dict(), tmp_path / "plain.pt")
    for name in ("stage.pt", "plain.pt"):
        target = seg("tiny-deit-s")
        head_before = copy.deepcopy(target.head.state_dict())
        load_student_backbone(target, tmp_path / name, "gkd")
        assert all(torch.equal(v, source.backbone.state_dict()[k]) for k, v in target.backbone.state_dict().items())
        assert all(torch.equal(v, target.head.state_dict()[k]) for k, v in head_before.items())
    torch.save(seg(TEACHER).backbone.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(UserError) as exc:
        load_student_backbone(seg("tiny-deit-s"), tmp_path / "wide.pt", "gkd")
    msg = str(exc.value)
    assert "method.gkd.stage1_from" in msg and "wide.pt" in msg and "shape mismatch" in msg and "\n" not in msg


# ---------------------------------------------------------------- hyper-parameters


@pytest.mark.parametrize(("name", "changed"), [
    ("gkd", {}), ("gkd-single-stage", {}), ("gkd-mse", {}), ("gkd-no-mask", {"mask_weight": 0.0}),
    ("gkd-no-cls", {"cls_weight": 0.0}),
])
def test_defaults(name, changed):
    cls = METHODS.get(name)
    assert set(cls.defaults) == DEFAULT_KEYS
    assert cls.resolve_hparams({}) == {**GKD.defaults, **changed}
    assert GKD.defaults["proxy_stage"] == "auto" and GKD.defaults["mask_ratio"] == 0.5


@pytest.mark.parametrize(("name", "hp", "message"), [
    ("gkd", {"proxy_stage": "sometimes"}, "method.gkd.proxy_stage must be auto, on or off, not 'sometimes'"),
    ("gkd", {"mask_ratio": 1.5}, r"method.gkd.mask_ratio must lie in \[0, 1\], not 1.5"),
    ("gkd", {"mask_probability": "-0.1"}, r"method.gkd.mask_probability must lie in \[0, 1\]"),
    ("gkd-no-mask", {"mask_ratio": 2}, r"method.gkd-no-mask.mask_ratio must lie in \[0, 1\]"),
    ("gkd", {"stage1_from": "/nonexistent/stage.pt"}, "method.gkd.stage1_from: no such file"),
    ("gkd", {"distill_lr": "fast"}, "method.gkd.distill_lr must be float"),
])
def test_bad_values_are_refused_by_name(name, hp, message):
    with pytest.raises(UserError, match=message):
        METHODS.get(name).resolve_hparams(hp)


# ---------------------------------------------------------------- through the CLI


def records(root: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(root.rglob("records.jsonl")) for line in p.read_text().splitlines()]


def metric_rows(root: Path, pair: str) -> list[dict]:
    (metrics,) = (root / "smoke" / "game2real" / pair / "gkd").rglob("metrics.jsonl")
    return [json.loads(line) for line in metrics.read_text().splitlines()]


BASE = ["run", "--suite", "smoke", "--methods", "gkd", "--benchmarks", "game2real", "--seeds", "0"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_stage1_backbone_reuse_through_the_cli(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    result = invoke(*BASE, "--pairs", "tiny-f2l,tiny-f2f", "--out", str(first))
    assert result.exit_code == 0, result.output
    recs = [r for r in records(first) if r["method"] == "gkd"]
    assert recs and all(r["hparams"] == GKD.defaults for r in recs)
    assert set(recs[0]["hparams"]) == DEFAULT_KEYS
    # the launcher tells the method the pair kind: F2L runs the proxy stage, F2F skips it
    assert [s["name"] for s in next(r for r in recs if r["pair"] == "tiny-f2l")["stages"]] == [
        "task-agnostic", "domain-agnostic", "task"]
    assert [s["name"] for s in next(r for r in recs if r["pair"] == "tiny-f2f")["stages"]] == [
        "domain-agnostic", "task"]
    assert {row["stage"] for row in metric_rows(first, "tiny-f2f")} == {"domain-agnostic", "task"}
    (stage1,) = (first / "smoke" / "game2real" / "tiny-f2l" / "gkd").rglob("stage-domain-agnostic.pt")
    saved = torch.load(stage1, map_location="cpu", weights_only=True)
    want = {k.removeprefix("backbone."): v for k, v in saved["student"].items() if k.startswith("backbone.")}

    result = invoke(*BASE, "--pairs", "tiny-f2l", "--out", str(second), "--set", f"method.gkd.stage1_from={stage1}")
    assert result.exit_code == 0, result.output
    rows = metric_rows(second, "tiny-f2l")
    assert rows and {row["stage"] for row in rows} == {"task"}
    run_dir = next((second / "smoke" / "game2real" / "tiny-f2l" / "gkd").iterdir())
    assert sorted(p.name for p in run_dir.glob("stage-*.pt")) == ["stage-task.pt"]
    task = torch.load(run_dir / "stage-task.pt", map_location="cpu", weights_only=True)["student"]
    got = {k.removeprefix("backbone."): v for k, v in task.items() if k.startswith("backbone.")}
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    recs = [r for r in records(second) if r["method"] == "gkd"]
    assert recs and all(r["hparams"] == {**GKD.defaults, "stage1_from": str(stage1)} for r in recs)
    assert [s["name"] for s in recs[0]["stages"]] == ["task"]


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and all(n in last for n in needles), result.output
    return last


@pytest.mark.parametrize("setting", ["method.gkd.proxy_stage=sometimes", "method.gkd.mask_ratio=1.5",
                                     "method.gkd.stage1_from=missing/stage-domain-agnostic.pt"])
def test_cli_refuses_bad_values_before_any_work(tmp_path, setting):
    out = tmp_path / "out"
    result = invoke(*BASE, "--pairs", "tiny-f2l", "--out", str(out), "--set", setting)
    assert_one_line_error(result, setting.split("=")[0])
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_stage1_file_of_the_wrong_shapes_fails_that_run_and_the_sweep_goes_on(tmp_path):
    wide = tmp_path / "wide.pt"
    torch.save(seg(TEACHER).backbone.state_dict(), wide)
    result = invoke(*BASE, "--pairs", "tiny-f2l", "--methods", "gkd,kd", "--out", str(tmp_path / "out"), "--set",
                    f"method.gkd.stage1_from={wide}")
    assert result.exit_code == 1 and "Traceback" not in result.output
    failed = [line for line in result.output.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "method.gkd.stage1_from" in failed[0] and "shape mismatch" in failed[0]
    assert "kd seed 0: in-domain" in result.output  # the next method still ran
    assert not list((tmp_path / "out").rglob("stage-*-agnostic.pt"))
    assert "method.gkd.stage1_from" in (tmp_path / "out" / "report.md").read_text()


def test_a_changed_stage1_file_makes_a_new_run(tmp_path):
    first = invoke(*BASE, "--pairs", "tiny-f2l", "--out", str(tmp_path / "one"))
    assert first.exit_code == 0, first.output
    saved = next((tmp_path / "one").rglob("stage-domain-agnostic.pt"))
    reuse = tmp_path / "stage1.pt"
    reuse.write_bytes(saved.read_bytes())
    args = (*BASE, "--pairs", "tiny-f2l", "--out", str(tmp_path / "two"), "--set", f"method.gkd.stage1_from={reuse}")
    assert invoke(*args).exit_code == 0
    assert "already done" in invoke(*args).output
    state = torch.load(reuse, weights_only=True)
    state["student"]["backbone.mask_token"] = state["student"]["backbone.mask_token"] + 1.0
    torch.save(state, reuse)
    again = invoke(*args)
    assert again.exit_code == 0 and "gkd seed 0: in-domain" in again.output


def test_single_stage_refuses_a_stage1_file(tmp_path):
    reuse = tmp_path / "stage1.pt"
    torch.save({}, reuse)
    with pytest.raises(UserError, match="stage1_from does not apply"):
        GKDSingleStage.resolve_hparams({"stage1_from": str(reuse)})


def test_cnn_masked_pass_leaves_batchnorm_running_statistics_alone():
    method = build(student="tiny-resnet")
    method.train()
    bt = batch()
    norms = [m for m in method.student.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    teacher_out = method.teacher(bt.images, with_logits=False)
    method.masked_pass(bt.images, first_samples_mask(2, 16, 0.5, 0.5), teacher_out.grid)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True))
    method.student.backbone(bt.images)  # an ordinary pass still updates them
    assert not all(torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True))


def test_final_readout_ablation_feeds_the_head_the_distilled_tokens():
    official, final = build("gkd"), build("gkd-final-readout")
    bt = batch()
    with torch.no_grad():
        out = final.student.backbone(bt.images)
        blocks = official.student.backbone(bt.images)
    grid = out.grid
    tokens = out.tokens[:, out.num_prefix:].transpose(1, 2).reshape(bt.images.shape[0], -1, *grid)
    assert len(out.features) == len(blocks.features) and all(torch.equal(f, tokens) for f in out.features)
    assert not torch.equal(blocks.features[-1], tokens)  # the official readout: un-normalised block outputs
    assert final.ablation_of == "gkd" and final.kind_problem("student", "cnn") is not None
