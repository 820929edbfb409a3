"""Intra-class feature variation distillation (Wang et al., ECCV 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.distill import labels_to_grid, level_channels, resize_to
from kdbench.errors import UserError
from kdbench.method import IGNORE_INDEX, Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform


def class_index(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B×h×w labels (classes 0..K-1, 255 = ignore) -> B×(h·w) class indices with ignore mapped to the extra
    index K, so that ignore pixels form their own bin and never join a class."""
    flat = labels.flatten(1)
    return torch.where(flat == IGNORE_INDEX, torch.full_like(flat, num_classes), flat)


def intra_class_feature_variation(feature_map: torch.Tensor, labels: torch.Tensor, num_classes: int
                                  ) -> torch.Tensor:
    """B×(h·w) IFV map of a B×C×h×w map with B×h×w labels on its grid: for each sample b and class k present in
    it, the prototype c_bk is the mean feature over the pixels labelled k; a pixel p of class k gets
    cos(f_p, c_bk). Ignore pixels get their own feature's similarity with itself (1), as in the official code,
    where their "center" is the pixel's feature. Computed in float32."""
    b, c = feature_map.shape[:2]
    flat = feature_map.float().flatten(2)
    index = class_index(labels, num_classes)
    one_hot = F.one_hot(index, num_classes + 1).to(flat.dtype)
    counts = one_hot.sum(1).clamp_min(1.0)
    prototypes = torch.bmm(flat, one_hot) / counts[:, None]
    centers = torch.gather(prototypes, 2, index[:, None].expand(b, c, -1))
    valid = (index < num_classes)[:, None]
    centers = torch.where(valid, centers, flat)
    return F.cosine_similarity(flat, centers, dim=1, eps=1e-8)


def ifvd_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, labels: torch.Tensor, num_classes: int
              ) -> torch.Tensor:
    """IFVD between two maps on the same h×w grid (channel counts may differ) with B×h×w labels on that grid:

        L = Σ_{valid p} (IFV_s(p) − IFV_t(p))² / (B·h·w)

    i.e. the official ``MSELoss`` over all B·h·w pixels, to which ignore pixels contribute exactly zero (their IFV
    is 1 in both networks); so the loss is the mean over valid pixels times the valid fraction."""
    if student_map.shape[-2:] != teacher_map.shape[-2:] or labels.shape[-2:] != teacher_map.shape[-2:]:
        raise ValueError(f"student {tuple(student_map.shape)}, teacher {tuple(teacher_map.shape)} and labels "
                         f"{tuple(labels.shape)} must share one grid")
    ifv_s = intra_class_feature_variation(student_map, labels, num_classes)
    ifv_t = intra_class_feature_variation(teacher_map.detach(), labels, num_classes)
    valid = labels.flatten(1) != IGNORE_INDEX
    diff = torch.where(valid, ifv_s - ifv_t, torch.zeros_like(ifv_s))
    return diff.pow(2).mean()


class IntraClassFeatureVariation(Method):
    """IFVD: per-pixel cosine similarity to its class prototype (mean feature of the class in the image),
    matched between student and teacher by MSE, plus CE.

    Wang, Zhou, Jiang, Bai, Xu, "Intra-class Feature Variation Distillation for Semantic Segmentation", ECCV 2020.
    Read from the official code (YukangWang/IFVD ``utils/criterion.py`` ``CriterionIFV``) and CIRKD's copy
    (winycg/CIRKD ``losses/ifvd.py``), which compute the same thing.

    * Labels are downsampled to the feature grid by nearest neighbour (``kdbench.distill.labels_to_grid``, the
      official ``nn.Upsample(mode='nearest')``). Per sample and per class present, the prototype is the mean
      feature over the class's pixels; a pixel's IFV is the cosine similarity (over channels) between its feature
      and its class's prototype; the loss is the squared difference of the student's and teacher's IFV maps.
    * Ignore pixels (255): the official code starts its "center" map from the features themselves and overwrites
      only pixels of classes 0..K-1, so an ignore pixel's center is its own feature, its IFV is 1 in both networks
      and it adds exactly 0, but ``MSELoss`` still divides by all B·h·w pixels. kdbench keeps that normalisation
      (so the official weights apply) and zeroes ignore pixels explicitly rather than through cos(f, f) ≈ 1.
      Gradients flow through both the pixel features and the student's prototypes, as in the official code.
    * Feature map: the multi-level map at ``level`` (-1 = deepest; for a ViT the un-normalised output of the last
      tapped block, for a CNN its last stage). The official code and CIRKD use the decoder's pre-classifier
      feature (PSPNet/DeepLabV3 after the context module); kdbench's light heads expose none, so the backbone's
      deepest map stands in, as for fitnet and cwd. Student and teacher may differ in width (cosine similarity is
      computed within each network, so no adapter); a student on another grid is resampled bilinearly to the
      teacher's grid (``resize_to``) and the labels go to that grid. A CNN's deepest map is a single cell on
      small images (16-32 px): resampled, it is constant, its IFV is 1 everywhere and it gets no gradient; pick a
      shallower ``level`` for CNN students there.
    * Defaults: ``weight`` 20 (CIRKD's IFVD runs, anchors.md §6; the official IFVD argparse default
      ``--lambda-ifv`` is 200, beside its λ_kd=10 and adversarial terms, which kdbench's pure ``ifvd`` omits).
    * Search space: ``weight`` log-uniform [6, 600] (the published 20 and 200, widened ×0.3 and ×3; the loss is a
      mean of squared cosine differences, bounded by 4, so no wider range for token counts is needed).
    """

    defaults = {"weight": 20.0, "level": -1}
    search_space = {"weight": LogUniform(6.0, 600.0)}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"features"})

    @classmethod
    def check_hparams(cls, hp) -> None:
        if hp["weight"] < 0:
            raise UserError(f"method.{cls.registered_name or 'ifvd'}.weight must be >= 0, not {hp['weight']}")

    def __init__(self, teacher, student, context, **hparams):
        super().__init__(teacher, student, context, **hparams)
        setting = f"method.{self.registered_name or 'ifvd'}.level"
        level_channels(student.backbone, self.hp["level"], setting)
        level_channels(teacher.backbone, self.hp["level"], setting)

    def ifvd_term(self, batch: Batch, student_out: SegOutput, teacher_out: SegOutput) -> torch.Tensor:
        teacher = teacher_out.features[self.hp["level"]]
        student = resize_to(student_out.features[self.hp["level"]], teacher.shape[-2:])
        labels = labels_to_grid(batch.labels, teacher.shape[-2:])
        return ifvd_loss(student, teacher, labels, self.student.num_classes)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        return {"task": self.task_loss(student_out, batch),
                "ifvd": self.hp["weight"] * self.ifvd_term(batch, student_out, teacher_out)}
