"""Segmentor = backbone + decode head, and the output every method taps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

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
    #: the head's own training loss on this output, for heads that have one (Mask2Former's matched set loss):
    #: ``labels (B×H×W) -> named terms``; ``None`` means pixel-wise cross-entropy on ``logits``
    head_loss: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = field(default=None, repr=False)

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
    """A backbone with a decode head. Freezing is a property of the training stage, not of this class.

    A head returns B×K×h×w class scores, or an output object with such ``logits`` and a ``loss(output, labels)``
    method of the head (Mask2Former); the scores are upsampled bilinearly to the input size either way."""

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
        logits, head_loss = None, None
        if with_logits:
            head_out = self.head(out.features)
            scores = head_out if isinstance(head_out, torch.Tensor) else head_out.logits
            if not isinstance(head_out, torch.Tensor):
                head_loss = partial(self.head.loss, head_out)
            logits = F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return SegOutput(logits=logits, features=out.features, tokens=out.tokens, num_prefix=out.num_prefix,
                         blocks=out.blocks, grid=out.grid, head_loss=head_loss)
