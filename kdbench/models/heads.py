"""Decode heads by name (``head`` in the config): the light head of the synthetic suites, or Mask2Former."""

from __future__ import annotations

from torch import nn

from kdbench.errors import UserError
from kdbench.models.segmentor import LightHead

#: the heads by name: the values the ``head`` setting allows (its declaration in ``kdbench.config`` reads them here)
HEADS = {
    "light": "light multi-level head (1×1 laterals, 3×3 fuse, 1×1 classifier): the synthetic suites' head",
    "mask2former": "Mask2Former as in the GKD paper (100 queries, 9 decoder layers, MSDeformAttn pixel decoder)",
    "mask2former-tiny": "a CPU-sized Mask2Former for tests (same code, tiny widths)",
}


def make_head(kind: str, backbone: nn.Module, num_classes: int) -> nn.Module:
    """A fresh head of ``kind`` reading ``backbone``'s levels (channels and strides)."""
    if kind == "light":
        return LightHead(backbone.level_channels, num_classes)
    if kind in ("mask2former", "mask2former-tiny"):
        from kdbench.models.mask2former import Mask2FormerHead

        build = Mask2FormerHead.tiny if kind == "mask2former-tiny" else Mask2FormerHead
        return build(list(backbone.level_channels), num_classes, list(backbone.level_strides))
    raise UserError(f"unknown head {kind!r}; known heads: {', '.join(HEADS)}")
