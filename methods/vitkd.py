"""ViTKD: shallow-layer token mimicking plus deep-layer masked token generation (Yang et al., 2022)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kdbench.distill import (
    map_to_tokens,
    random_token_mask,
    student_patches_on_teacher_grid,
    tokens_on_grid,
    tokens_to_map,
)
from kdbench.errors import UserError
from kdbench.method import Batch, Method, RunContext, Stage
from kdbench.models.segmentor import Segmentor, SegOutput
from kdbench.search import LogUniform, Uniform

TokenFn = Callable[[torch.Tensor], torch.Tensor]

#: How many leading transformer blocks the mimicking term taps (the official backbones collect blocks 0 and 1).
SHALLOW_BLOCKS = 2


def vitkd_mimic_loss(student_tokens: Sequence[torch.Tensor], teacher_tokens: Sequence[torch.Tensor],
                     aligners: Sequence[TokenFn], alpha: float) -> torch.Tensor:
    """ViTKD's mimicking term: ``alpha · Σ_l Σ_{b,n,c} (align_l(S_l) − T_l)² / B``.

    ``student_tokens[l]``: B×N×C_s patch tokens of shallow layer ``l``; ``teacher_tokens[l]``: B×N×C_t, on the
    same token grid; ``aligners[l]``: maps C_s to C_t (a linear, or the identity when the widths agree). The sum
    runs over every layer, token and channel and is divided by the batch size only (``MSELoss(reduction='sum')
    / B`` in the official code).
    """
    if len(student_tokens) != len(teacher_tokens) or len(student_tokens) != len(aligners):
        raise ValueError("one student layer, one teacher layer and one aligner per shallow layer")
    batch = student_tokens[0].shape[0]
    total = student_tokens[0].new_zeros((), dtype=torch.float32)
    for s, t, align in zip(student_tokens, teacher_tokens, aligners, strict=True):
        total = total + (align(s).float() - t.float()).pow(2).sum()
    return alpha * total / batch


def vitkd_generation_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, mask: torch.Tensor,
                          grid: tuple[int, int], align: TokenFn, mask_token: torch.Tensor, generator: TokenFn,
                          beta: float, mask_ratio: float) -> torch.Tensor:
    """ViTKD's generation term: ``beta / mask_ratio · Σ_{masked (b,n)} Σ_c (G(M(align(S)))_{b,n,c} − T_{b,n,c})² / B``.

    ``student_tokens``: B×N×C_s deep patch tokens; ``teacher_tokens``: B×N×C_t; ``mask``: B×N bool, True where a
    token is masked. The aligned student tokens at masked positions are replaced by ``mask_token`` (C_t), the
    result is laid out row-major as a B×C_t×h×w map on ``grid``, passed through ``generator`` (conv 3×3, ReLU,
    conv 3×3) and flattened back; the squared error is summed over masked positions and channels only, divided by
    the batch size and by the mask ratio (the official code divides by its ``lambda_vitkd``, the nominal ratio,
    not the realised fraction), times ``beta``.
    """
    x = align(student_tokens)
    b, n, c = x.shape
    if mask.shape != (b, n):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match {b}×{n} tokens")
    x = torch.where(mask.unsqueeze(-1), mask_token.reshape(1, 1, c).to(x.dtype), x)
    generated = map_to_tokens(generator(tokens_to_map(x, grid)))
    sq = (generated.float() - teacher_tokens.float()).pow(2) * mask.unsqueeze(-1).float()
    return beta * sq.sum() / b / mask_ratio


class GenerationHead(nn.Module):
    """The deep-layer modules of ViTKD: a student->teacher linear (identity when widths agree), a learnable mask
    token (zeros at init) and the generation block conv 3×3 -> ReLU -> conv 3×3 at the teacher's width, all
    with PyTorch's default initialisation as in the official loss module."""

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.align: nn.Module = (nn.Linear(student_width, teacher_width) if student_width != teacher_width
                                 else nn.Identity())
        self.mask_token = nn.Parameter(torch.zeros(teacher_width))
        self.block = nn.Sequential(
            nn.Conv2d(teacher_width, teacher_width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(teacher_width, teacher_width, 3, padding=1),
        )


class ViTKD(Method):
    """ViTKD: shallow-block token mimicking and masked deep-token generation through a conv block, plus CE.

    Yang, Li, Zeng, Yuan, Li, "ViTKD: Practical Guidelines for ViT feature knowledge distillation" (arXiv
    2209.02432, 2022). Official code: yzd-v/cls_KD, loss ``mmcls/models/dis_losses/vitkd.py`` (also
    ``mmcls/distillation/losses/vitkd.py``), token collection in ``mmcls/models/backbones/vision_transformer.py``
    and ``deit_3.py``, wiring in ``mmcls/models/classifiers/distiller.py``.

    Loss = CE + ``alpha`` · mimic + ``beta`` · generation, logged as ``task``, ``mimic`` and ``generation``:

    * mimic: the patch tokens of the first two transformer blocks (un-normalised block outputs, as the official
      backbones collect them after blocks 0 and 1), each student layer through its own linear student width ->
      teacher width; squared error summed over layers, tokens and channels, divided by the batch size.
    * generation: the last block's patch tokens *after* the final LayerNorm (the official backbones apply the
      final norm to the last block before taking its tokens; here ``SegOutput.tokens``), linearly aligned; a
      random ``mask_ratio`` of the aligned student tokens is replaced by a learnable mask token, the token map
      goes through conv 3×3 -> ReLU -> conv 3×3, and the squared error against the teacher is summed on masked
      positions only, divided by the batch size and, as the official code does, by the mask ratio.

    Readings and choices:

    * Layers: blocks 0 and 1 for mimicking, the last block for generation, as the official code does for 12-block
      DeiTs. kdbench's synthetic ViTs have 6 blocks (the same choice applies); the 2-block test models reuse
      block 1 for both terms (shallow un-normalised, deep post-norm). Fewer than two blocks is refused.
    * Prefix tokens: dropped everywhere (the official code slices ``x[:, 1:]``, removing the CLS token); here all
      ``num_prefix`` leading tokens are removed, student and teacher each by their own count.
    * Aligners: ``nn.Linear`` with bias, created only when student and teacher widths differ (identity
      otherwise), one per shallow layer and one for the deep layer; mask token zeros; all PyTorch-default init.
    * Masking: exactly ``floor(mask_ratio · N)`` tokens per image at uniformly random positions
      (``kdbench.distill.random_token_mask``, drawn from the global RNG each step); the official code masks
      ``N − int(N · (1 − ratio))``, which differs by at most one token when ``ratio · N`` is not an integer.
      ``mask_ratio`` must lie in (0, 1] (the loss divides by it).
    * Token grid: the official code assumes one square grid shared by both models. kdbench lays tokens out on
      each model's own h×w grid (image size / patch size); where the student's grid differs from the teacher's
      (another patch size), the student's tokens are resampled bilinearly to the teacher's grid before
      alignment, as ``kdbench.distill`` does for every feature method. Our ViT pairs share one grid.
    * Teacher and student: ViTs only (``teacher_kinds``, ``student_kinds``: the base class and the sweep's
      pre-check refuse others by name, in one line).
    * Precision: the squared errors are summed in float32.
    * Defaults: ``alpha=3e-5``, ``beta=3e-6``, ``mask_ratio=0.5`` (the official ``alpha_vitkd``, ``beta_vitkd``,
      ``lambda_vitkd`` in ``configs/distillers/imagenet/deit-s3_distill_deit-t_img.py`` and the loss's own
      defaults). They were tuned for ImageNet DeiTs with 196 tokens of 384 channels; since the terms are sums
      over tokens and channels, their size grows with the token count and width, so sweep them per pair.
    * Single stage on labelled source data; CE at weight 1 (the official distiller adds the student's own
      classification loss unweighted). That official config also switches on NKD, a logit loss; it is left out
      here (kdbench methods are pure: ViTKD's feature terms and CE only).
    * Search space: ``alpha`` log-uniform [3e-6, 3e-4] and ``beta`` log-uniform [3e-7, 3e-5], a tenth to ten
      times the official values (the only published ones, tuned for 196 tokens × 384 channels; the sums scale
      with token count and width, anchors.md §6); ``mask_ratio`` uniform [0.25, 0.75] (official 0.5; 0.75 is
      MAE's ratio).
    """

    defaults = {"alpha": 3e-5, "beta": 3e-6, "mask_ratio": 0.5}
    search_space = {"alpha": LogUniform(3e-6, 3e-4), "beta": LogUniform(3e-7, 3e-5), "mask_ratio": Uniform(0.25, 0.75)}
    student_kinds = frozenset({"vit"})
    teacher_kinds = frozenset({"vit"})

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"blocks", "tokens"})

    @classmethod
    def check_hparams(cls, hp) -> None:
        if not 0.0 < hp["mask_ratio"] <= 1.0:
            raise UserError(f"method.{cls.registered_name or 'vitkd'}.mask_ratio must lie in (0, 1], "
                            f"not {hp['mask_ratio']}")

    def __init__(self, teacher: Segmentor, student: Segmentor, context: RunContext, **hparams: float):
        super().__init__(teacher, student, context, **hparams)
        name = self.registered_name or "vitkd"
        for role, model in (("teacher", teacher), ("student", student)):
            depth = _depth(model)
            if depth is not None and depth < SHALLOW_BLOCKS:
                raise UserError(f"method {name!r} needs at least {SHALLOW_BLOCKS} transformer blocks in the "
                                f"{role}; it has {depth}")
        cs, ct = student.backbone.width, teacher.backbone.width
        self.mimic_align = nn.ModuleList(nn.Linear(cs, ct) if cs != ct else nn.Identity()
                                         for _ in range(SHALLOW_BLOCKS))
        self.generation = GenerationHead(cs, ct)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        if teacher_out is None or teacher_out.blocks is None or teacher_out.tokens is None:
            raise UserError(f"method {self.registered_name or 'vitkd'!r} needs the teacher's transformer blocks "
                            "and tokens; the teacher gave none (is it a ViT?)")
        if student_out.blocks is None or student_out.tokens is None:
            raise UserError(f"method {self.registered_name or 'vitkd'!r} needs the student's transformer blocks")
        t_grid = teacher_out.grid
        sp, tp = student_out.num_prefix, teacher_out.num_prefix
        shallow_s = [tokens_on_grid(student_out.blocks[i][:, sp:], student_out.grid, t_grid)
                     for i in range(SHALLOW_BLOCKS)]
        shallow_t = [teacher_out.blocks[i][:, tp:] for i in range(SHALLOW_BLOCKS)]
        mimic = vitkd_mimic_loss(shallow_s, shallow_t, list(self.mimic_align), self.hp["alpha"])

        deep_s, deep_t = student_patches_on_teacher_grid(student_out, teacher_out), teacher_out.patch_tokens
        b, n = deep_t.shape[:2]
        mask = random_token_mask(b, n, self.hp["mask_ratio"], device=deep_t.device)
        head = self.generation
        generation = vitkd_generation_loss(deep_s, deep_t, mask, t_grid, head.align, head.mask_token, head.block,
                                           self.hp["beta"], self.hp["mask_ratio"])
        return {"task": self.task_loss(student_out, batch), "mimic": mimic, "generation": generation}


def _depth(model: Segmentor) -> int | None:
    """Number of transformer blocks of a kdbench ViT backbone (``None`` where it cannot be told)."""
    vit = getattr(model.backbone, "vit", None)
    blocks = getattr(vit, "blocks", None)
    return None if blocks is None else len(blocks)

