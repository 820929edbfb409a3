"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017), in CIRKD's segmentation form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.distill import level_channels, resize_to
from kdbench.errors import UserError
from kdbench.method import Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform

#: the floor on an attention map's norm (``F.normalize``'s, as CIRKD's ``at`` uses it)
NORM_EPS = 1e-12


def attention_map(feature_map: torch.Tensor, p: float) -> torch.Tensor:
    """Spatial attention of a B×C×h×w map: ``A[b, y, x] = (1/C) Σ_c |F[b, c, y, x]|^p``, B×h×w, in float32."""
    return feature_map.float().abs().pow(p).mean(dim=1)


def attention_transfer_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, p: float) -> torch.Tensor:
    """AT between a student and a teacher map of any widths and grids.

    Both maps become spatial attention maps (:func:`attention_map`; channel-free, so no adapter). The student's
    attention map is resampled bilinearly to the teacher's grid *after* it is computed (a no-op on the same grid).
    Each map is then flattened and divided by its L2 norm per sample (floored at :data:`NORM_EPS`), and the loss
    is the mean over B·h_t·w_t of the squared difference of the normalised maps:
    ``(1 / (B·N)) Σ_b Σ_j (Â_s[b, j] − Â_t[b, j])²`` with N = h_t·w_t.
    """
    a_t = attention_map(teacher_map, p)
    a_s = resize_to(attention_map(student_map, p)[:, None], a_t.shape[-2:])[:, 0]
    q_s = F.normalize(a_s.flatten(1), dim=1, eps=NORM_EPS)
    q_t = F.normalize(a_t.flatten(1), dim=1, eps=NORM_EPS)
    return (q_s - q_t).pow(2).mean()


class AttentionTransfer(Method):
    """AT: channel-mean |F|^p spatial attention maps of a student and a teacher feature level, L2-normalised per
    sample and matched by mean squared error, plus CE.

    Zagoruyko, Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional Neural
    Networks via Attention Transfer", ICLR 2017, in the segmentation form of CIRKD's ``losses/at.py``
    (``CriterionAT``): attention map = mean over channels of F^p with p=2, flattened, L2-normalised per sample;
    loss = mean squared difference of the normalised maps (mean over batch and positions, the original code's
    normalisation: the paper sets β to 1000 over the attention map's element count times the batch size).
    Defaults: ``weight`` 10000 (CIRKD's segmentation ``--lambda-at``; anchors.md §6), ``p`` 2, ``level`` -1.

    Readings and choices:

    * Level: the multi-level map at ``level`` on both sides (-1 = deepest: for a ViT the un-normalised output of
      the last tapped block, for a CNN the last stage), as CIRKD distils the last backbone stage (``c4``) of both.
      A CNN's deepest map is 1×1 at synth5's 32 px (and smoke's 16 px): its attention map is one value, uniform
      once resampled and normalised, so the term is constant and gives the student no gradient. Pick a
      shallower ``level`` for CNN students (level 0, stride 4, lies on a ViT teacher's grid at patch 4).
    * Grids: no adapter (attention maps have no channels, so any widths match). Where the grids differ, the
      student's *attention map* is resampled bilinearly to the teacher's grid, before normalisation; resampling the
      C-channel feature map first would square interpolated features, which dips between cells where features
      change sign, an artefact of the interpolation rather than the student's attention, and costs C times more.
      CIRKD does not resample (its CNN pairs share the 1/8 grid); mdistiller average-pools the larger
      feature map to the smaller before squaring. Downsampling (a student on a finer grid) is bilinear, unfiltered.
    * ``p``: |F|^p as in the paper (CIRKD's ``F.pow(p)`` equals it at p=2). The paper's ablation found p=2 best
      and every codebase fixes it, so it is a hyper-parameter only for ablations, not in the search space.
    * Ignore pixels: the loss uses no labels; every position counts, as in CIRKD.
    * Magnitude: the loss is (1/N)·mean_b‖Â_s − Â_t‖², and ‖Â_s − Â_t‖² ≤ 2, so its size scales as 1/N with the
      teacher's positions N. CIRKD's λ=10^4 was set at 64×128 = 8192 positions; synth5's ViT teacher has 8×8 = 64,
      so the same λ weighs a given map mismatch 128× more here.

    Search space: ``weight`` log-uniform [300, 30000]: 1000 in mdistiller and RepDistiller (CIFAR), 10000 in
    CIRKD's segmentation scripts, widened ×0.3 below and ×3 above (anchors.md's sensitivity convention).
    """

    defaults = {"weight": 10000.0, "p": 2.0, "level": -1}
    search_space = {"weight": LogUniform(300.0, 30000.0)}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"features"})

    @classmethod
    def check_hparams(cls, hp) -> None:
        name = cls.registered_name
        if hp["weight"] < 0:
            raise UserError(f"method.{name}.weight must be non-negative, not {hp['weight']}")
        if not hp["p"] > 0:
            raise UserError(f"method.{name}.p must be positive (the attention map's power |F|^p), not {hp['p']}")

    def __init__(self, teacher, student, context, **hparams):
        super().__init__(teacher, student, context, **hparams)
        setting = f"method.{self.registered_name}.level"
        level_channels(student.backbone, self.hp["level"], setting)
        level_channels(teacher.backbone, self.hp["level"], setting)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        level = self.hp["level"]
        at = attention_transfer_loss(student_out.features[level], teacher_out.features[level], self.hp["p"])
        return {"task": self.task_loss(student_out, batch), "at": self.hp["weight"] * at}
