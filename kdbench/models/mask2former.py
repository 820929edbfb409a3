"""The Mask2Former decode head that GKD's stage 2 trains on the frozen student (gkd.md §4).

GKD (Rein fork, mmseg 1.2.2 + mmdet 3.3.0) uses mmseg's ``Mask2FormerHead`` with 100 queries, an
``MSDeformAttnPixelDecoder`` (6 layers, 3 levels, 8 heads, 4 points, GN(32), FFN 1024), a 9-layer masked-attention
transformer decoder (8 heads, FFN 2048), 256 feature and mask channels, CE class loss 2.0 with no-object weight 0.1,
sigmoid-BCE mask loss 5.0 and dice loss 5.0 on 12544 points (oversample 3.0, importance 0.75), Hungarian matching with
costs 2/5/5 and deep supervision on every prediction (Rein ``configs/_base_/models/dinov2_mask2former.py``).

The network and loss are composed from the maintained ``transformers`` implementation
(``transformers.models.mask2former.modeling_mask2former``): ``Mask2FormerPixelDecoder``,
``Mask2FormerTransformerModule``, ``Mask2FormerHungarianMatcher`` and ``Mask2FormerLoss``, fed with kdbench's
backbone features instead of its own backbone. Checked against mmdet's ``Mask2FormerHead`` /
``MSDeformAttnPixelDecoder`` and mmseg's ``Mask2FormerHead``:

- *Layer count.* ``transformers`` counts the prediction made from the learnt queries before any decoder layer:
  its ``decoder_layers`` = 10 builds 9 layers. Here ``decoder_layers`` is mmdet's ``num_layers`` (9, the paper's
  count); the head makes ``decoder_layers + 1`` predictions and supervises all of them, as mmdet does (``loss_*``
  plus ``d0``..``d8``).
- *Same as mmdet:* pixel decoder layout (1×1 conv + GN input projections of the 3 deepest levels, a deformable
  encoder with level embeddings and normalised sine positions, one FPN level at stride 4 with a bias-free 1×1
  lateral conv + GN and a 3×3 conv + GN + ReLU, a 1×1 mask-feature conv); decoder layer order (masked cross-attention,
  self-attention, FFN, each post-norm), the shared post-norm before the class Linear and the 3-layer mask MLP, the
  attention mask (sigmoid < 0.5 on the mask resized to the next level, a query masking everything is unmasked),
  level cycling from stride 32; class cost ``-p(class)``, pairwise sigmoid-BCE and dice (eps 1) costs on the same
  12544 uniform points; CE weighted mean (no-object 0.1); BCE averaged over points and dice (eps 1) per mask, both
  summed over matched masks and divided by the number of masks, the count averaged over processes and clamped to
  ≥ 1 (mmdet's ``reduce_mean``); uncertainty = -|logit| with the same oversample/importance split; all point
  sampling is ``grid_sample`` with ``align_corners=False`` (mmcv ``point_sample``); every layer is matched on its
  own. Initialisation follows mmdet's ``init_weights`` (not ``transformers``'): xavier-uniform input projections,
  caffe2-xavier lateral/output/mask-feature convs, N(0, 1) level embeddings, xavier-normal encoder and decoder-layer
  matrices, the Deformable-DETR offset grid and zero attention weights, zero attention biases; the class Linear,
  mask MLP and query embeddings keep PyTorch's defaults.
- *Differences from mmdet:* deformable attention is ``transformers``' pure-PyTorch ``grid_sample`` version, not
  mmcv's CUDA kernel (same sums, slower, different rounding); the decoder's self-attention uses separate q/k/v
  Linears instead of ``nn.MultiheadAttention`` (same function); in training the ``transformers`` encoder layer
  clamps non-finite activations (only matters for a diverged run); masks are normalised by the number of target
  masks, mmdet by the number of matched ones (equal whenever an image has ≤ ``num_queries`` classes);
  ``transformers`` hard-codes GN(32), 3 levels and 4 points, so ``hidden_dim`` must be a multiple of 32.
- *Targets and ignore.* As mmseg's ``_seg_data_to_instance_data``: one binary mask per class present in the label
  map, 255 (ignore) pixels in no mask, so they are negatives of every mask in the BCE and dice terms and never a
  positive; an image with no labelled pixel has no targets (all its queries learn "no object").
- *Inference.* ``logits`` = log of the per-pixel class probabilities Σ_q softmax(class_q)[:K]·sigmoid(mask_q),
  normalised over K, at stride 4. mmseg upsamples the mask logits to the input before this product and does not
  normalise; the argmax agrees up to the order of upsampling. ``semantic_log_probs`` applied to upsampled mask logits
  reproduces mmseg's order exactly.
- *Readout.* Four maps on one grid (a plain ViT) are resampled bilinearly to strides 4/8/16/32, as Rein's
  ``DinoVisionTransformer.forward`` does (×4, ×2, ×1, ×0.5 for patch 16). For other patch sizes the factors are
  stride/4, stride/8, ...; a shrink by an integer factor k is a k×k mean, which equals Rein's bilinear ×0.5 for k=2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.mask2former.configuration_mask2former import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerLoss,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerTransformerModule,
)

from kdbench.errors import UserError

IGNORE_INDEX = 255
TARGET_STRIDES = (4, 8, 16, 32)


@dataclass
class Mask2FormerOutput:
    """``logits``: B×K×h×w at stride 4, log of the normalised semantic probabilities (softmax gives them back,
    argmax is Mask2Former's semantic inference). ``class_logits`` / ``mask_logits``: one entry per prediction (the
    query-only one first, the final one last), B×Q×(K+1) and B×Q×h×w."""

    logits: torch.Tensor
    class_logits: list[torch.Tensor]
    mask_logits: list[torch.Tensor]


def semantic_log_probs(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """log(p / Σ_k p) with p_k = Σ_q softmax(class_q)[k] · sigmoid(mask_q), k < K, computed in float32 in log space
    (the per-class and per-pixel maxima over queries are factored out, so no product underflows). B×K×h×w."""
    with torch.autocast(mask_logits.device.type, enabled=False):
        log_cls = class_logits.float().log_softmax(-1)[..., :-1]  # B×Q×K
        log_mask = F.logsigmoid(mask_logits.float())  # B×Q×h×w
        cls_max = log_cls.amax(1, keepdim=True).detach()
        mask_max = log_mask.amax(1, keepdim=True).detach()
        summed = torch.einsum("bqk,bqhw->bkhw", (log_cls - cls_max).exp(), (log_mask - mask_max).exp())
        log_p = summed.clamp_min(torch.finfo(summed.dtype).tiny).log()
        log_p = log_p + cls_max.transpose(1, 2).unsqueeze(-1) + mask_max
        return log_p.log_softmax(1)


def semantic_targets(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image, the classes present (int64, ascending) and one float mask per class (n×H×W): mmseg's
    ``Mask2FormerHead._seg_data_to_instance_data``. Ignore pixels belong to no mask."""
    classes, masks = [], []
    for label in labels:
        present = torch.unique(label)
        present = present[present != ignore_index]
        bad = present[(present < 0) | (present >= num_classes)]
        if bad.numel():
            raise UserError(f"label map holds class ids {bad.tolist()} outside 0..{num_classes - 1} and "
                            f"{ignore_index} (ignore); the dataset's label table does not match num_classes")
        classes.append(present.long())
        masks.append((label[None] == present[:, None, None]).float())
    return classes, masks


def readout_levels(features: list[torch.Tensor], level_strides: list[int] | None) -> list[torch.Tensor]:
    """Four maps at strides 4/8/16/32. Maps sharing one grid (a ViT, stride s; s = 16 when ``level_strides`` is
    None) are resampled by s/4, s/8, s/16, s/32: bilinear up (``align_corners=False``), a k×k mean for an integer
    shrink k (Rein's bilinear ×0.5 for k = 2), bilinear otherwise. Maps at 4/8/16/32 (a CNN) pass unchanged."""
    shared = (len(set(level_strides)) == 1 if level_strides is not None
              else len({f.shape[-2:] for f in features}) == 1)
    if not shared:
        return list(features)
    stride = level_strides[0] if level_strides is not None else 16
    out = []
    for feat, target in zip(features, TARGET_STRIDES, strict=True):
        factor = stride / target
        if factor == 1:
            out.append(feat)
        elif factor < 1 and (1 / factor).is_integer():
            out.append(F.avg_pool2d(feat, int(1 / factor)))
        else:
            out.append(F.interpolate(feat, scale_factor=factor, mode="bilinear", align_corners=False))
    return out


class _Criterion(Mask2FormerLoss):
    """``transformers``' loss with mmdet's mask-count normalisation over processes (``reduce_mean``) in place of its
    ``accelerate``-state one."""

    def get_num_masks(self, class_labels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        count = torch.tensor(float(sum(len(c) for c in class_labels)), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            count = count / torch.distributed.get_world_size()
            torch.distributed.all_reduce(count)
        return count.clamp_min(1.0)


def _caffe2_xavier(conv: nn.Conv2d) -> None:
    nn.init.kaiming_uniform_(conv.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _deformable_init(attn: Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention) -> None:
    """Deformable DETR's init (mmcv ``MultiScaleDeformableAttention.init_weights``): head h starts sampling along
    direction 2πh/H, point i at distance i+1; uniform attention."""
    nn.init.zeros_(attn.sampling_offsets.weight)
    thetas = torch.arange(attn.n_heads, dtype=torch.float32) * (2.0 * math.pi / attn.n_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(attn.n_heads, 1, 1, 2)
    grid = grid.repeat(1, attn.n_levels, attn.n_points, 1) * torch.arange(1, attn.n_points + 1).view(1, 1, -1, 1)
    with torch.no_grad():
        attn.sampling_offsets.bias.copy_(grid.flatten())
    nn.init.zeros_(attn.attention_weights.weight)
    nn.init.zeros_(attn.attention_weights.bias)
    for proj in (attn.value_proj, attn.output_proj):
        nn.init.xavier_uniform_(proj.weight)
        nn.init.zeros_(proj.bias)


class Mask2FormerHead(nn.Module):
    """Mask2Former on four backbone levels (shallow to deep, channels ``level_channels``). See the module docstring
    for what follows mmdet and what does not."""

    def __init__(self, level_channels: list[int], num_classes: int, level_strides: list[int] | None = None, *,
                 hidden_dim: int = 256, num_queries: int = 100, decoder_layers: int = 9,
                 pixel_decoder_layers: int = 6, num_heads: int = 8, ffn_dim: int = 2048, train_points: int = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75, class_weight: float = 2.0,
                 mask_weight: float = 5.0, dice_weight: float = 5.0, no_object_weight: float = 0.1,
                 pixel_decoder_ffn_dim: int = 1024):
        super().__init__()
        if len(level_channels) != 4:
            raise UserError(f"the Mask2Former head reads 4 backbone levels, got {len(level_channels)} "
                            "(model out_indices)")
        if level_strides is not None and len(set(level_strides)) > 1 and tuple(level_strides) != TARGET_STRIDES:
            raise UserError(f"the Mask2Former head needs levels at one stride (ViT) or at strides 4/8/16/32, "
                            f"got {list(level_strides)} (model out_indices)")
        if hidden_dim % 32 or hidden_dim % num_heads:
            raise UserError(f"Mask2Former hidden_dim={hidden_dim} must be a multiple of 32 (GroupNorm(32)) and of "
                            f"num_heads={num_heads}")
        self.num_classes = num_classes
        self.level_strides = None if level_strides is None else list(level_strides)
        self.weights = {"cls": class_weight, "mask": mask_weight, "dice": dice_weight}
        config = Mask2FormerConfig(
            num_labels=num_classes, feature_size=hidden_dim, mask_feature_size=hidden_dim, hidden_dim=hidden_dim,
            encoder_feedforward_dim=pixel_decoder_ffn_dim, encoder_layers=pixel_decoder_layers,
            decoder_layers=decoder_layers + 1, num_attention_heads=num_heads, dim_feedforward=ffn_dim, dropout=0.0,
            pre_norm=False, enforce_input_projection=False, common_stride=4, num_queries=num_queries,
            no_object_weight=no_object_weight, class_weight=class_weight, mask_weight=mask_weight,
            dice_weight=dice_weight, train_num_points=train_points, oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio, feature_strides=list(TARGET_STRIDES),
        )
        self.pixel_decoder = Mask2FormerPixelDecoder(config, feature_channels=list(level_channels))
        self.transformer = Mask2FormerTransformerModule(in_features=hidden_dim, config=config)
        self.class_head = nn.Linear(hidden_dim, num_classes + 1)
        self.criterion = _Criterion(config, weight_dict={})
        self.criterion.register_buffer("empty_weight", self.criterion.empty_weight.clone(), persistent=False)
        self._init_weights()

    @classmethod
    def tiny(cls, level_channels: list[int], num_classes: int, level_strides: list[int] | None = None
             ) -> Mask2FormerHead:
        """A CPU test configuration: 32 channels, 8 queries, 3 decoder layers, 1 pixel-decoder layer, 4 heads."""
        return cls(level_channels, num_classes, level_strides, hidden_dim=32, num_queries=8, decoder_layers=3,
                   pixel_decoder_layers=1, num_heads=4, ffn_dim=64, pixel_decoder_ffn_dim=64, train_points=256)

    def _init_weights(self) -> None:
        """mmdet's ``Mask2FormerHead.init_weights`` / ``MSDeformAttnPixelDecoder.init_weights``."""
        pixel = self.pixel_decoder
        for proj in pixel.input_projections:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        for block in (*pixel.lateral_convolutions, *pixel.output_convolutions):
            _caffe2_xavier(block[0])
        _caffe2_xavier(pixel.mask_projection)
        nn.init.normal_(pixel.level_embed, std=1.0)
        for p in pixel.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for module in pixel.encoder.modules():
            if isinstance(module, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
                _deformable_init(module)
        for p in self.transformer.decoder.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.transformer.decoder.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
                nn.init.zeros_(proj.bias)
            nn.init.zeros_(layer.cross_attn.in_proj_bias)
            nn.init.zeros_(layer.cross_attn.out_proj.bias)

    def forward(self, features: list[torch.Tensor]) -> Mask2FormerOutput:
        levels = readout_levels(features, self.level_strides)
        pixel = self.pixel_decoder(levels)
        decoded = self.transformer(list(pixel.multi_scale_features), pixel.mask_features)
        class_logits = [self.class_head(h.transpose(0, 1)) for h in decoded.intermediate_hidden_states]
        mask_logits = list(decoded.masks_queries_logits)
        return Mask2FormerOutput(logits=semantic_log_probs(class_logits[-1], mask_logits[-1]),
                                 class_logits=class_logits, mask_logits=mask_logits)

    def loss(self, out: Mask2FormerOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """labels: B×H×W int64 at the input resolution, 255 = ignore. Returns the weighted terms
        {"cls", "mask", "dice"}, each summed over all predictions (deep supervision)."""
        classes, masks = semantic_targets(labels, self.num_classes)
        device = out.mask_logits[-1].device
        num_masks = self.criterion.get_num_masks(classes, device)
        totals = dict.fromkeys(self.weights, torch.zeros((), device=device))
        with torch.autocast(device.type, enabled=False):
            for class_logits, mask_logits in zip(out.class_logits, out.mask_logits, strict=True):
                class_logits, mask_logits = class_logits.float(), mask_logits.float()
                indices = self.criterion.matcher(mask_logits, class_logits, masks, classes)
                terms = self.criterion.loss_masks(mask_logits, masks, indices, num_masks)
                totals["cls"] = totals["cls"] + self.criterion.loss_labels(class_logits, classes, indices)[
                    "loss_cross_entropy"]
                totals["mask"] = totals["mask"] + terms["loss_mask"]
                totals["dice"] = totals["dice"] + terms["loss_dice"]
        return {name: self.weights[name] * value for name, value in totals.items()}
