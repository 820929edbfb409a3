"""Segmentor = backbone + decode head, and the output every method taps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models.backbones import BackboneOutput


@dataclass
class SegOutput:
    """What a forward pass exposes to methods.

    ``logits``: B×K×H×W class scores at the input resolution (the head's output upsampled bilinearly; task loss,
    evaluation and logit distillation all use this resolution). ``features``: the backbone's multi-level maps.
    ``tokens``: final normalised tokens B×N×C (CLS first where ``num_prefix`` > 0). ``blocks``: each transformer
    block's un-normalised tokens (ViTs only, else ``None``). ``grid``: the (h, w) grid of the patch tokens.
    """

    logits: torch.Tensor | None
    features: list[torch.Tensor]
    tokens: torch.Tensor | None
    num_prefix: int = 0
    blocks: list[torch.Tensor] | None = None
    grid: tuple[int, int] | None = None

    @property
    def patch_tokens(self) -> torch.Tensor | None:
        return None if self.tokens is None else self.tokens[:, self.num_prefix:]

    @property
    def cls_token(self) -> torch.Tensor | None:
        return None if self.tokens is None or self.num_prefix == 0 else self.tokens[:, 0]


class LightHead(nn.Module):
    """A light multi-level decode head: each level 1×1-projected, resampled to the finest level, summed, then
    a 3×3 conv block and a 1×1 classifier (a small FPN-style readout, the role Mask2Former plays in the paper)."""

    def __init__(self, level_channels: list[int], num_classes: int, width: int = 64):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in level_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = max((f.shape[-2:] for f in features), key=lambda s: s[0] * s[1])
        x = sum(F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size
                else lat(f) for lat, f in zip(self.lateral, features, strict=True))
        return self.classifier(self.fuse(x))


class Segmentor(nn.Module):
    """A backbone with a decode head. Freezing is a property of the training stage, not of this class."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None, with_logits: bool = True
                ) -> SegOutput:
        out: BackboneOutput = self.backbone(images, mask=mask)
        logits = None
        if with_logits:
            logits = F.interpolate(self.head(out.features), size=images.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return SegOutput(logits=logits, features=out.features, tokens=out.tokens, num_prefix=out.num_prefix,
                         blocks=out.blocks, grid=out.grid)
