"""Single-stage token MSE: the GKD paper's "Vanilla KD" row, read as FitNets-style feature distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.distill import layer_norm_linear, student_patches_on_teacher_grid
from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform


def token_mse_loss(projected_student: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element (B·N·C_t), ``torch.nn.MSELoss``'s default reduction."""
    return F.mse_loss(projected_student.float(), teacher_tokens.float())


class VanillaFeatureKD(Method):
    """Vanilla KD: final student tokens regressed onto the teacher's final tokens (MSE through a LayerNorm ->
    Linear head), trained together with the task loss in one stage.

    GKD (CVPR 2026) Table 1 lists "+Vanilla KD [36]" without defining it. gkd.md §8 reads it as single-stage
    feature MSE (FitNets, Romero et al., ICLR 2015): its GTAV score for ViT-S (46.4) equals the paper's
    "single-stage MSE" ablation. kdbench follows that reading: the same LN -> Linear head as GKD's MSE ablation
    and Proteus, on the final-LayerNorm tokens (CLS and patches for ViT students; a CNN student's last map,
    resampled to the teacher's token grid, against the teacher's patch tokens), loss weight 1.
    For pixel-wise logit KD see ``kd``; for an adapter on a chosen feature level see ``fitnet``.

    Search space: ``weight`` log-uniform [0.1, 10] (GKD gives no weight; 1 as its MSE ablation and Proteus, and
    the FitNets-style spread of anchors.md §6 capped at 10, since the target is the teacher's final-LayerNorm
    tokens, not an un-normalised map).
    """

    defaults = {"weight": 1.0}
    search_space = {"weight": LogUniform(0.1, 10.0)}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"tokens"})

    def __init__(self, teacher, student, context, **hparams):
        super().__init__(teacher, student, context, **hparams)
        self.head = layer_norm_linear(student.backbone.width, teacher.backbone.width)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        if student_out.num_prefix == teacher_out.num_prefix > 0 and student_out.grid == teacher_out.grid:
            student, target = student_out.tokens, teacher_out.tokens
        else:
            student, target = student_patches_on_teacher_grid(student_out, teacher_out), teacher_out.patch_tokens
        mse = token_mse_loss(self.head(student), target)
        return {"task": self.task_loss(student_out, batch), "feat": self.hp["weight"] * mse}
