"""FitNets feature distillation (Romero et al., ICLR 2015), in CIRKD's segmentation form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.distill import level_channels, resize_to, student_patches_on_teacher_grid
from kdbench.errors import UserError
from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform


def hint_mse_loss(adapted_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element of two same-shaped tensors."""
    return F.mse_loss(adapted_student.float(), teacher.float())


class FitNet(Method):
    """FitNet: a student feature mapped to the teacher's width by an adapter and regressed onto the teacher's
    feature with MSE, plus CE.

    Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015, as CIRKD's
    ``losses/fitnet.py`` does it for segmentation: a bias-free 1×1 convolution on a backbone map and the mean
    squared error. ``target=features`` (default) uses the multi-level map at ``level`` (-1 = deepest; for ViTs the
    un-normalised output of the last tapped block); ``target=tokens`` uses the final-LayerNorm patch tokens through
    a bias-free linear adapter. A student map on another grid than the teacher's (a CNN at stride 32) is resampled
    bilinearly to the teacher's grid after the adapter. Weight 1 by default (CIRKDv2's scripts; CIRKD's older
    scripts use 10): the MSE of un-normalised ViT maps is already of the order of the task loss here.

    Search space (anchors.md §6): ``weight`` log-uniform [0.1, 100] (1 CIRKDv2, 10 CIRKD and mmrazor, 100
    mdistiller and RepDistiller; down to 0.1 since kdbench's un-normalised ViT maps give a large MSE).
    """

    defaults = {"weight": 1.0, "target": "features", "level": -1}
    search_space = {"weight": LogUniform(0.1, 100.0)}

    @classmethod
    def check_hparams(cls, hp) -> None:
        if hp["target"] not in ("features", "tokens"):
            raise UserError(f"method.{cls.registered_name}.target must be 'features' or 'tokens', "
                            f"not {hp['target']!r}")

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({hp["target"]})

    def __init__(self, teacher, student, context, **hparams):
        super().__init__(teacher, student, context, **hparams)
        target = self.hp["target"]
        if target == "features":
            setting = f"method.{self.registered_name}.level"
            s_ch = level_channels(student.backbone, self.hp["level"], setting)
            t_ch = level_channels(teacher.backbone, self.hp["level"], setting)
            self.adapter: nn.Module = nn.Conv2d(s_ch, t_ch, 1, bias=False)
        else:
            self.adapter = nn.Linear(student.backbone.width, teacher.backbone.width, bias=False)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        if self.hp["target"] == "features":
            teacher = teacher_out.features[self.hp["level"]]
            student = resize_to(self.adapter(student_out.features[self.hp["level"]]), teacher.shape[-2:])
        else:
            teacher = teacher_out.patch_tokens
            student = self.adapter(student_patches_on_teacher_grid(student_out, teacher_out))
        return {"task": self.task_loss(student_out, batch), "hint": self.hp["weight"] * hint_mse_loss(student, teacher)}
