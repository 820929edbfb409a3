"""Pixel-wise logit knowledge distillation (Hinton et al., 2015), in the segmentation form of CIRKD."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_t || p_s) between temperature-softened class distributions at every pixel, averaged over pixels
    (B·H·W), scaled by T² so gradients keep their size as T changes."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * t * t


class LogitKD(Method):
    """Pixel-wise logit KD: KL between temperature-softened teacher and student class maps, times T², plus CE.

    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015); per-pixel form and defaults
    (T=1, weight 1) as CIRKD's ``losses/kd.py``. kdbench computes it on logits at the input resolution (both
    models' head outputs upsampled bilinearly), where CIRKD uses 1/8-resolution logits; every pixel counts,
    including those labelled ignore, since the teacher's distribution is defined there too.

    Search space (anchors.md §6): ``temperature`` log-uniform [1, 4] (T=1 in CIRKD, mmrazor and torchdistill, T=4
    in mdistiller and RepDistiller); ``weight`` log-uniform [0.3, 10] (0.5 torchdistill, 0.9 mdistiller, 1 CIRKD,
    3 mmrazor, 10 SKD's pixel term).
    """

    defaults = {"temperature": 1.0, "weight": 1.0}
    search_space = {"temperature": LogUniform(1.0, 4.0), "weight": LogUniform(0.3, 10.0)}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"logits"})

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        kd = pixel_kd_loss(student_out.logits, teacher_out.logits, self.hp["temperature"])
        return {"task": self.task_loss(student_out, batch), "kd": self.hp["weight"] * kd}
