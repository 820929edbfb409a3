"""The model zoo and the teacher -> student pair zoo.

Synthetic models mirror the paper's roles at CPU scale. ``synth-vit-b`` is the "foundation" teacher (as DINOv2-B/L):
pretrained by kdbench on a broad domain-randomised stream. ``synth-vit-s`` is a smaller foundation student (as
DINOv2-S, for F2F); ``synth-deit-s`` has the same architecture but is pretrained only on a narrow proxy distribution
(as DeiT-S on ImageNet, for F2L), so the two pair kinds differ in the student's pretraining data alone.

Real models (``pretrain="file"``) are the paper's networks (gkd.md §3.1, §6), read from local official weight files
by ``kdbench.models.weights.load_pretrained`` according to their ``weights_format``. The ViTs are DINOv2-style timm
ViTs at patch 16 (DINOv2's 14x14 kernel is resampled, gkd.md §3.1) built at the run's image size (512 in the paper:
a 32x32 grid; other sizes still run, timm resamples the position embedding); the stage-2 readout taps blocks
[3, 5, 7, 11] of 12-block models and [7, 11, 15, 23] of ViT-L, un-normalised (gkd.md §4).

Every other real model is a timm model by name (``kdbench.models.families``: DINOv2-g and the register variants,
DINOv3, EVA02, DINO, ConvNeXt, ResNet-101), built by timm and loaded from a local file or the offline Hugging Face
cache. Pairs may also be composed as ``teacher:student`` (:func:`get_pair`).
"""

from __future__ import annotations

from typing import Any

from kdbench.errors import UserError
from kdbench.models.families import TIMM_MODELS, TIMM_PAIRS
from kdbench.models.spec import MODELS, PAIRS, PRETRAIN_KINDS, ModelSpec, Pair
from kdbench.models.timm_specs import timm_spec

__all__ = ["MODELS", "PAIRS", "PRETRAIN_KINDS", "ModelSpec", "Pair", "get_pair", "resolve_pairs"]


def _model(name: str, arch: str, pretrain: str, description: str, weights_format: str | None = None,
           **kwargs: Any) -> None:
    MODELS.register(name)(ModelSpec(name, arch, pretrain, description, kwargs, weights_format))


def _pair(name: str, teacher: str, student: str, kind: str, description: str) -> None:
    PAIRS.register(name)(Pair(name, teacher, student, kind, description))


_vit = {"patch_size": 4, "depth": 6}
_model("synth-vit-b", "vit", "randomised", "foundation teacher: ViT 128-d, 6 blocks, patch 4 (as DINOv2-B)",
       embed_dim=128, num_heads=4, **_vit)
_model("synth-vit-s", "vit", "randomised", "foundation student: ViT 64-d, 6 blocks, patch 4 (as DINOv2-S)",
       embed_dim=64, num_heads=2, **_vit)
_model("synth-deit-s", "vit", "proxy", "local student: ViT 64-d, 6 blocks, patch 4, proxy-pretrained (as DeiT-S)",
       embed_dim=64, num_heads=2, **_vit)
_tiny = {"patch_size": 4, "num_heads": 2, "depth": 2}
_model("tiny-vit-b", "vit", "randomised", "tiny foundation teacher for tests (ViT 32-d, 2 blocks)",
       embed_dim=32, **_tiny)
_model("tiny-vit-s", "vit", "randomised", "tiny foundation student for tests (ViT 16-d, 2 blocks)",
       embed_dim=16, **_tiny)
_model("tiny-deit-s", "vit", "proxy", "tiny local student for tests (ViT 16-d, 2 blocks)", embed_dim=16, **_tiny)
_model("tiny-resnet", "cnn", "proxy", "tiny local CNN student for tests (timm resnet10t, 4 stages)",
       timm_name="resnet10t", out_indices=(1, 2, 3, 4))

_pair("f2f", "synth-vit-b", "synth-vit-s", "F2F", "foundation ViT-B -> foundation ViT-S (as DINOv2-B -> DINOv2-S)")
_pair("f2l", "synth-vit-b", "synth-deit-s", "F2L", "foundation ViT-B -> local ViT-S (as DINOv2-B -> DeiT-S)")
_pair("tiny-f2f", "tiny-vit-b", "tiny-vit-s", "F2F", "tiny foundation -> tiny foundation, for tests")
_pair("tiny-f2l", "tiny-vit-b", "tiny-deit-s", "F2L", "tiny foundation -> tiny local ViT, for tests")
_pair("tiny-f2l-cnn", "tiny-vit-b", "tiny-resnet", "F2L", "tiny foundation -> tiny local CNN, for tests")

# The paper's networks (gkd.md §3.1, §6), loaded from local official weight files (kdbench/models/weights.py).
_READOUT = {12: (3, 5, 7, 11), 24: (7, 11, 15, 23)}  # stage-2 blocks read out per depth, gkd.md §4


def _dinov2(size: str, width: int, heads: int, depth: int) -> None:
    """DINOv2 ViT (LayerScale, qkv bias, LN eps 1e-6, CLS token, no registers) at patch 16; the LayerScale init
    value is DINOv2's 1e-5, overwritten by the file's gammas."""
    _model(f"dinov2-{size}", "vit", "file", f"DINOv2 ViT-{size.upper()}/14 (dinov2_vit{size}14_pretrain.pth) at "
           f"patch 16: {width}-d, {heads} heads, {depth} blocks", "dinov2", embed_dim=width, num_heads=heads,
           depth=depth, patch_size=16, init_values=1e-5, out_indices=_READOUT[depth])


def _deit(size: str, title: str, width: int, heads: int) -> None:
    """DeiT student as GKD uses it: the distilled checkpoint in a DINOv2-style ViT without LayerScale, CLS token
    only (the dist token and its position embedding are dropped, as GKD's distillation_models_deit.py does)."""
    _model(f"deit-{size}", "vit", "file", f"DeiT-{size.upper()}/16 distilled (deit_{title}_distilled_patch16_224), "
           f"CLS token only: {width}-d, {heads} heads, 12 blocks", "deit", embed_dim=width, num_heads=heads,
           depth=12, patch_size=16, out_indices=_READOUT[12])


_dinov2("s", 384, 6, 12)
_dinov2("b", 768, 12, 12)
_dinov2("l", 1024, 16, 24)
_deit("s", "small", 384, 6)
_deit("b", "base", 768, 12)
_model("resnet50", "cnn", "file", "ResNet-50 (timm resnet50 or torchvision weights), 4 stages at strides 4-32",
       "timm-cnn", timm_name="resnet50", out_indices=(1, 2, 3, 4))

_pair("f2f-dinov2-l-b", "dinov2-l", "dinov2-b", "F2F", "DINOv2-L -> DINOv2-B (gkd.md §6)")
_pair("f2f-dinov2-b-s", "dinov2-b", "dinov2-s", "F2F", "DINOv2-B -> DINOv2-S (gkd.md §6)")
_pair("f2l-dinov2-l-deit-b", "dinov2-l", "deit-b", "F2L", "DINOv2-L -> DeiT-B (gkd.md §6, Table 1)")
_pair("f2l-dinov2-b-deit-s", "dinov2-b", "deit-s", "F2L", "DINOv2-B -> DeiT-S (gkd.md §6, Table 1)")
_pair("f2l-dinov2-b-resnet50", "dinov2-b", "resnet50", "F2L",
      "DINOv2-B -> ResNet-50 (a CNN student; GKD's release has none, gkd.md §6)")

# Tiny models in the real formats, for tests and the GPU smoke script's CPU twin: same loaders, tiny widths.
_model("tiny-dinov2", "vit", "file", "tiny DINOv2-format ViT for tests (32-d, 4 blocks, patch 16)", "dinov2",
       embed_dim=32, num_heads=2, depth=4, patch_size=16, init_values=1e-5)
_model("tiny-deit", "vit", "file", "tiny DeiT-format ViT for tests (16-d, 4 blocks, patch 16)", "deit",
       embed_dim=16, num_heads=2, depth=4, patch_size=16)
_pair("tiny-real-f2l", "tiny-dinov2", "tiny-deit", "F2L", "tiny DINOv2-format -> tiny DeiT-format, for tests")

# Any timm model, built by timm at patch 16 (kdbench/models/families.py lists them and their official weights).
for _name, _timm_name, _role, _description in TIMM_MODELS:
    MODELS.register(_name)(timm_spec(_name, _timm_name, _role, _description))
for _name, _teacher, _student, _description in TIMM_PAIRS:
    _pair(_name, _teacher, _student, "F2F", _description)


def get_pair(name: str) -> Pair:
    """A named pair, or one composed as ``teacher:student[:KIND]`` (registered on first use). Without a kind,
    the student's role decides: a foundation student makes an F2F pair, a local one F2L."""
    from kdbench.method import PAIR_KINDS

    if name in PAIRS or ":" not in name:
        return PAIRS.get(name)
    parts = name.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"--pairs: {name!r} must be TEACHER:STUDENT or TEACHER:STUDENT:KIND (KIND one of "
                        f"{', '.join(PAIR_KINDS)}), e.g. dinov3-l:deit-s")
    teacher, student = (MODELS.get(part) for part in parts[:2])
    derived = "F2F" if student.model_role == "foundation" else "F2L"
    kind = parts[2].upper() if len(parts) == 3 else derived
    if kind not in PAIR_KINDS:
        raise UserError(f"--pairs: {name!r}: pair kind {parts[2]!r} is not one of {', '.join(PAIR_KINDS)}")
    canonical = f"{teacher.name}:{student.name}" + ("" if kind == derived else f":{kind}")
    if canonical not in PAIRS:
        PAIRS.register(canonical)(Pair(canonical, teacher.name, student.name, kind,
                                       f"{teacher.name} ({teacher.model_role}) -> {student.name} "
                                       f"({student.model_role}), composed"))
    return PAIRS.get(canonical)


def resolve_pairs(names: list[str]) -> list[str]:
    """Pair names with composed pairs registered and written canonically (``all`` is the caller's to expand);
    an unknown name or model is a UserError listing the valid ones."""
    return PAIRS.resolve([get_pair(n).name if ":" in n else n for n in names])
