"""Proteus feature distillation (Zhang et al., 2024), trained single-stage alongside the task loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.distill import first_samples_mask, layer_norm_linear
from kdbench.errors import UserError
from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform, Uniform


def proteus_losses(cls_student: torch.Tensor, patches_student: torch.Tensor, masked_patches_student: torch.Tensor,
                   cls_teacher: torch.Tensor, patches_teacher: torch.Tensor, mask: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    """Proteus's three MSE terms on already-projected student tokens (B×C_t CLS, B×N×C_t patches of the clean and
    of the masked pass) against the teacher's (B×C_t, B×N×C_t):

    - ``token``: the CLS token;
    - ``fea``: the whole sequence, [CLS; patches], as one tensor (so the CLS counts once among N+1 tokens);
    - ``patch``: the masked pass's patch tokens at masked positions only (zero when nothing is masked).
    """
    token = F.mse_loss(cls_student.float(), cls_teacher.float())
    whole_student = torch.cat([cls_student.unsqueeze(1), patches_student], dim=1).float()
    whole_teacher = torch.cat([cls_teacher.unsqueeze(1), patches_teacher], dim=1).float()
    fea = F.mse_loss(whole_student, whole_teacher)
    if mask.any():
        patch = F.mse_loss(masked_patches_student[mask].float(), patches_teacher[mask].float())
    else:
        patch = masked_patches_student.sum() * 0.0
    return {"token": token, "fea": fea, "patch": patch}


class Proteus(Method):
    """Proteus: CLS-token, whole-sequence and masked-patch MSE through three LayerNorm -> Linear heads, plus CE.

    Zhang, Wang, Wang, Zhang, Kuo, Tu, "Accessing Vision Foundation Models at ImageNet-level Costs" (2024);
    official code ``BeSpontaneous/Proteus-pytorch``, ``pretrain/models_proteus_dinov2.py`` and ``main.py``. As
    there: the student runs twice, on the clean image and with ``mask_ratio`` of the patch embeddings of the first
    ``mask_probability`` share of the batch replaced by the learnable mask token (uniformly random positions,
    exactly ⌊ratio·N⌋ per masked sample); targets are the teacher's final-LayerNorm tokens of the clean image;
    ``token_head`` serves the CLS token in both the token and the whole-sequence term, ``fea_head`` the clean
    patches, ``patch_head`` the masked pass; the patch term covers masked positions only (unlike GKD, which
    covers all tokens). Weights 1/1/1, mask probability 0.5, mask ratio 0.5 as its ``run_pretrain.sh``.

    Reading chosen here: Proteus is a pretraining method; as a baseline in GKD Table 1 kdbench trains it in one
    stage on labelled source images together with CE (gkd.md §8: the paper's baselines are single-stage), where
    GKD separates the two. ViT students and teachers only (the masked branch needs a mask token and a CLS
    token); student and teacher must share the token grid.

    Search space: ``token_weight``, ``fea_weight``, ``patch_weight`` log-uniform [0.3, 3] each (official 1/1/1,
    the ×0.3-×3 sensitivity sweep of anchors.md §6); ``mask_probability`` uniform [0.25, 1] and ``mask_ratio``
    uniform [0.25, 0.75] (official 0.5 and 0.5; 0.75 is MAE's and Af-DCD's ratio, probability 1 masks every
    sample).
    """

    defaults = {"token_weight": 1.0, "fea_weight": 1.0, "patch_weight": 1.0, "mask_probability": 0.5,
                "mask_ratio": 0.5}
    search_space = {"token_weight": LogUniform(0.3, 3.0), "fea_weight": LogUniform(0.3, 3.0),
                    "patch_weight": LogUniform(0.3, 3.0), "mask_probability": Uniform(0.25, 1.0),
                    "mask_ratio": Uniform(0.25, 0.75)}
    student_kinds = frozenset({"vit"})
    teacher_kinds = frozenset({"vit"})
    same_grid = True

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"tokens"})

    def __init__(self, teacher, student, context, **hparams):
        super().__init__(teacher, student, context, **hparams)
        s_dim, t_dim = student.backbone.width, teacher.backbone.width
        self.token_head = layer_norm_linear(s_dim, t_dim)
        self.fea_head = layer_norm_linear(s_dim, t_dim)
        self.patch_head = layer_norm_linear(s_dim, t_dim)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        if student_out.grid != teacher_out.grid:
            raise UserError(f"method {self.registered_name!r} needs student and teacher on the same token grid "
                            f"(student {student_out.grid}, teacher {teacher_out.grid})")
        patches = student_out.patch_tokens
        mask = first_samples_mask(patches.shape[0], patches.shape[1], self.hp["mask_probability"],
                                  self.hp["mask_ratio"], device=patches.device)
        masked = self.student.backbone(batch.images, mask=mask)
        masked_patches = masked.tokens[:, masked.num_prefix:]
        terms = proteus_losses(self.token_head(student_out.cls_token), self.fea_head(patches),
                               self.patch_head(masked_patches), teacher_out.cls_token, teacher_out.patch_tokens, mask)
        return {"task": self.task_loss(student_out, batch),
                "token": self.hp["token_weight"] * terms["token"],
                "fea": self.hp["fea_weight"] * terms["fea"],
                "patch": self.hp["patch_weight"] * terms["patch"]}
