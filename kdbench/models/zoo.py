"""The model zoo and the teacher -> student pair zoo.

Synthetic models mirror the paper's roles at CPU scale. ``synth-vit-b`` is the "foundation" teacher (as DINOv2-B/L):
pretrained by kdbench on a broad domain-randomised stream. ``synth-vit-s`` is a smaller foundation student (as
DINOv2-S, for F2F); ``synth-deit-s`` has the same architecture but is pretrained only on a narrow proxy distribution
(as DeiT-S on ImageNet, for F2L), so the two pair kinds differ in the student's pretraining data alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from kdbench.models.backbones import CNNBackbone, ViTBackbone
from kdbench.registry import Registry

PRETRAIN_KINDS = {"randomised": "broad domain-randomised stream (foundation)",
                  "proxy": "narrow proxy distribution (local, as ImageNet)"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str
    pretrain: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build_backbone(self, image_size: int) -> nn.Module:
        if self.arch == "vit":
            return ViTBackbone(img_size=image_size, **self.kwargs)
        if self.arch == "cnn":
            return CNNBackbone(**self.kwargs)
        raise ValueError(f"unknown arch {self.arch!r}")


@dataclass(frozen=True)
class Pair:
    name: str
    teacher: str
    student: str
    kind: str
    description: str


MODELS: Registry[ModelSpec] = Registry("model")
PAIRS: Registry[Pair] = Registry("pair")


def _model(name: str, arch: str, pretrain: str, description: str, **kwargs: Any) -> None:
    MODELS.register(name)(ModelSpec(name, arch, pretrain, description, kwargs))


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
