"""Any timm ViT or CNN as a kdbench backbone, with the outputs distillation methods tap.

ViTs are timm ``VisionTransformer`` (DINOv2 with or without registers, DINO, DeiT) or ``Eva`` (EVA02, DINOv3:
RoPE) models. Their prefix tokens lead every token sequence in timm's order, CLS first and registers after it,
so ``tokens[:, 0]`` is always the CLS and ``tokens[:, num_prefix:]`` the patches. The mask token (GKD, Proteus)
replaces patch embeddings before the prefix tokens and position embedding are added; RoPE is applied inside
attention from the patch grid alone, so it needs nothing more. CNNs are any timm model with
``forward_intermediates`` (ConvNeXt, ResNet), read at strides 4, 8, 16 and 32.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from kdbench.models.backbones import BackboneOutput, _spread

#: stage-2 readout blocks per depth (GKD/Rein: gkd.md §4; ViT-g as Rein's DINOv2-g configs)
READOUT = {12: (3, 5, 7, 11), 24: (7, 11, 15, 23), 40: (9, 19, 29, 39)}
CNN_STRIDES = (4, 8, 16, 32)


class TimmViTBackbone(nn.Module):
    """``timm.create_model(timm_name, **overrides)`` (no classifier, any image size) returning the
    un-normalised outputs of ``out_indices`` blocks as maps, the final-norm tokens and every block's tokens."""

    kind = "vit"

    def __init__(self, img_size: int, timm_name: str, out_indices: tuple[int, ...] | None = None, **overrides):
        super().__init__()
        self.vit = timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=img_size,
                                     dynamic_img_size=True, **overrides)
        self.timm_name = timm_name
        width, depth = self.vit.embed_dim, len(self.vit.blocks)
        self.mask_token = nn.Parameter(torch.zeros(1, width))
        self.out_indices = tuple(out_indices) if out_indices else READOUT.get(depth, _spread(depth, 4))
        self.patch_size = self.vit.patch_embed.patch_size[0]
        self.width = width
        self.readout = "blocks"
        self.level_channels = [width] * len(self.out_indices)
        self.level_strides = [self.patch_size] * len(self.out_indices)
        # EVA02's MIM models keep their final norm as ``fc_norm`` (timm's average-pool layout); per token it is the
        # same LayerNorm
        self.final_norm = "fc_norm" if isinstance(self.vit.norm, nn.Identity) and hasattr(self.vit, "fc_norm") \
            else "norm"

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> BackboneOutput:
        """``mask`` (B×N bool, N patches) replaces masked patch embeddings with the mask token."""
        vit = self.vit
        x = vit.patch_embed(images)  # B×h×w×C
        grid = (x.shape[1], x.shape[2])
        if mask is not None:
            x = torch.where(mask.view(x.shape[:-1]).unsqueeze(-1), self.mask_token.to(x.dtype), x)
        embedded = vit._pos_embed(x)
        if isinstance(embedded, tuple):  # Eva: (tokens, rotary embedding); its patch dropout is inside
            x, rope = embedded
        else:
            x, rope = vit.patch_drop(embedded), None
        x = vit.norm_pre(x)
        prefix = vit.num_prefix_tokens
        mixed = getattr(vit, "rope_mixed", False)  # a rotary embedding per block
        features, blocks = [], []
        for i, block in enumerate(vit.blocks):
            x = block(x) if rope is None else block(x, rope=rope[i] if mixed else rope)
            blocks.append(x)
            if i in self.out_indices:
                features.append(x[:, prefix:].transpose(1, 2).reshape(x.shape[0], -1, *grid))
        tokens = getattr(vit, self.final_norm)(x)
        if self.readout == "final":
            final = tokens[:, prefix:].transpose(1, 2).reshape(x.shape[0], -1, *grid)
            features = [final] * len(self.out_indices)
        return BackboneOutput(features=features, tokens=tokens, num_prefix=prefix, blocks=blocks, grid=grid)


class TimmCNNBackbone(nn.Module):
    """A timm CNN (no classifier) read through ``forward_intermediates`` at ``out_indices`` (default: its
    feature levels at strides 4-32). Its tokens are the last map flattened, with no prefix."""

    kind = "cnn"

    def __init__(self, timm_name: str, out_indices: tuple[int, ...] | None = None, **overrides):
        super().__init__()
        self.net = timm.create_model(timm_name, pretrained=False, num_classes=0, **overrides)
        self.timm_name = timm_name
        info = self.net.feature_info
        if out_indices is None:
            out_indices = tuple(i for i, level in enumerate(info) if level["reduction"] in CNN_STRIDES)[-4:]
        self.out_indices = tuple(out_indices)
        self.level_channels = [info[i]["num_chs"] for i in self.out_indices]
        self.level_strides = [info[i]["reduction"] for i in self.out_indices]
        self.width = self.level_channels[-1]

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> BackboneOutput:
        if mask is not None:
            raise ValueError("CNN backbones take no token mask")
        features = self.net.forward_intermediates(images, indices=list(self.out_indices), intermediates_only=True)
        tokens = features[-1].flatten(2).transpose(1, 2)
        return BackboneOutput(features=list(features), tokens=tokens, num_prefix=0,
                              grid=tuple(features[-1].shape[-2:]))
