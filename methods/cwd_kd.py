"""CWD combined with pixel-wise logit KD, the combination CIRKD's CWD scripts actually train."""

from __future__ import annotations

import torch

from kdbench.method import Batch, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform
from kdbench_methods.cwd import ChannelWiseDistillation
from kdbench_methods.kd import pixel_kd_loss


class ChannelWiseWithLogitKD(ChannelWiseDistillation):
    """CWD + pixel KD: the ``cwd`` loss plus ``kd_weight`` × pixel-wise KL at temperature ``kd_temperature``.

    CIRKD's ``train_cwd.sh`` runs CWD with ``--lambda-kd 1.0`` (and adversarial terms, which kdbench leaves out);
    its "CWD" rows are this combination, so kdbench names it instead of folding it into ``cwd``. Shu et al.,
    ICCV 2021; Hinton et al., 2015.

    Search space: ``cwd``'s (``temperature``, ``weight``) plus ``kd_weight`` log-uniform [0.3, 3] (CIRKD's
    λ_kd=1, times the ×0.3-×3 sensitivity sweep of anchors.md §6); ``kd_temperature`` stays at CIRKD's 1 (no
    codebase that combines the two uses another).
    """

    defaults = {**ChannelWiseDistillation.defaults, "kd_weight": 1.0, "kd_temperature": 1.0}
    search_space = {**ChannelWiseDistillation.search_space, "kd_weight": LogUniform(0.3, 3.0)}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({hp["on"], "logits"})

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        terms = super().loss(stage, batch, student_out, teacher_out)
        terms["kd"] = self.hp["kd_weight"] * pixel_kd_loss(student_out.logits, teacher_out.logits,
                                                           self.hp["kd_temperature"])
        return terms
