"""Backbones that expose what distillation methods tap: multi-level feature maps and final tokens.

ViTs are timm ``VisionTransformer`` models (the class behind DeiT, DINOv2 and EVA-style ViTs in timm) with a
learnable mask token, as masked feature distillation (Proteus, GKD) needs. CNNs are timm ``features_only`` models.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


@dataclass
class BackboneOutput:
    """``features``: multi-level maps B×C×h×w, shallow to deep. ``tokens``: final normalised tokens B×N×C with the
    CLS token first where the backbone has one (``num_prefix`` says how many prefix tokens lead). ``blocks``: every
    transformer block's un-normalised output B×N×C, prefix tokens included (ViTs only; ViTKD taps blocks 0, 1 and
    the last). ``grid``: the (h, w) grid the patch tokens lie on."""

    features: list[torch.Tensor]
    tokens: torch.Tensor | None
    num_prefix: int = 0
    blocks: list[torch.Tensor] | None = None
    grid: tuple[int, int] | None = None


class ViTBackbone(nn.Module):
    """A timm ViT that returns the un-normalised outputs of ``out_indices`` blocks as maps (as GKD's stage-2
    readout does, gkd.md §4) and the final-LayerNorm tokens (as feature distillation targets, gkd.md §3.1)."""

    kind = "vit"

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 out_indices: tuple[int, ...] | None = None, mlp_ratio: float = 4.0,
                 init_values: float | None = None):
        """``init_values`` turns on LayerScale (``ls1``/``ls2.gamma`` per block, as DINOv2); None (the default)
        builds blocks without it, as DeiT and every synthetic model."""
        super().__init__()
        self.vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, num_classes=0, class_token=True, global_pool="token", dynamic_img_size=True,
            init_values=init_values,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.out_indices = tuple(out_indices) if out_indices else _spread(depth, 4)
        self.patch_size = patch_size
        self.width = embed_dim
        #: what the decode head reads: "blocks" (the ``out_indices`` blocks, un-normalised) or "final" (the
        #: final-LayerNorm patch tokens at every level; a GKD ablation)
        self.readout = "blocks"
        self.level_channels = [embed_dim] * len(self.out_indices)
        self.level_strides = [patch_size] * len(self.out_indices)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> BackboneOutput:
        """``mask`` (B×N bool, N patches) replaces masked patch embeddings with the mask token before the CLS
        token and position embedding are added, as GKD and Proteus do."""
        vit = self.vit
        x = vit.patch_embed(images)  # B×h×w×C (dynamic image size keeps the grid)
        if mask is not None:
            mask = mask.view(x.shape[:-1]).unsqueeze(-1)
            x = torch.where(mask, self.mask_token.to(x.dtype), x)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        prefix = vit.num_prefix_tokens
        features, blocks = [], []
        for i, block in enumerate(vit.blocks):
            x = block(x)
            blocks.append(x)
            if i in self.out_indices:
                patches = x[:, prefix:]
                features.append(patches.transpose(1, 2).reshape(x.shape[0], -1, *grid))
        tokens = vit.norm(x)
        if self.readout == "final":
            final = tokens[:, prefix:].transpose(1, 2).reshape(x.shape[0], -1, *grid)
            features = [final] * len(self.out_indices)
        return BackboneOutput(features=features, tokens=tokens, num_prefix=prefix, blocks=blocks, grid=grid)


class CNNBackbone(nn.Module):
    """A timm CNN (``features_only``). Its tokens are the last feature map flattened, with no CLS token."""

    kind = "cnn"

    def __init__(self, timm_name: str, out_indices: tuple[int, ...] = (1, 2, 3, 4), **kwargs):
        super().__init__()
        self.net = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=out_indices,
                                     **kwargs)
        self.level_channels = list(self.net.feature_info.channels())
        self.level_strides = list(self.net.feature_info.reduction())
        self.width = self.level_channels[-1]

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> BackboneOutput:
        if mask is not None:
            raise ValueError("CNN backbones take no token mask")
        features = self.net(images)
        tokens = features[-1].flatten(2).transpose(1, 2)
        return BackboneOutput(features=list(features), tokens=tokens, num_prefix=0,
                              grid=tuple(features[-1].shape[-2:]))


def _spread(depth: int, count: int) -> tuple[int, ...]:
    """``count`` block indices spread over ``depth`` blocks, ending at the last (12 blocks -> 2, 5, 8, 11)."""
    count = min(count, depth)
    return tuple(sorted({depth - 1 - round(i * depth / count) for i in range(count)}))
