"""Cross-image relational distillation, mini-batch variant (Yang et al., CVPR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.distill import labels_to_grid, level_channels, resize_to
from kdbench.errors import UserError
from kdbench.method import IGNORE_INDEX, Batch, Method, Stage
from kdbench.models.segmentor import SegOutput
from kdbench.search import LogUniform


def unit_pixels(feature_map: torch.Tensor) -> torch.Tensor:
    """B×C×h×w -> B×C×(h·w) in float32, every pixel's C-vector scaled to unit L2 norm."""
    return F.normalize(feature_map.float().flatten(2), p=2, dim=1)


def relation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Σ over rows of KL(softmax(teacher row) || softmax(student row)), softmax over the last dimension."""
    log_p_s = F.log_softmax(student_logits, dim=-1)
    log_p_t = F.log_softmax(teacher_logits, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum()


def pixel_relation_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, tau: float,
                        pool: bool = False) -> torch.Tensor:
    """CIRKD's mini-batch pixel-to-pixel loss between two maps on the same h×w grid (widths may differ).

    Pixels are L2-normalised over channels (after a 2×2 average pool with ``ceil_mode`` when ``pool``). For
    every ordered pair of images (i, j) of the batch, i = j included, S_ij = F_iᵀ F_j is the N×N matrix of
    cosine similarities between the pixels of image i (rows) and of image j (columns), N = h·w; each row becomes
    a distribution over image j's pixels by softmax(S_ij / τ), and

        L = 1/B² Σ_{i,j} 1/N Σ_rows KL(p_t || p_s)

    (``F.kl_div(..., reduction='batchmean')`` per pair, averaged over the B² pairs; no τ² factor). Float32."""
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        raise ValueError(f"student {tuple(student_map.shape)} and teacher {tuple(teacher_map.shape)} differ in grid")
    if pool:
        student_map = F.avg_pool2d(student_map.float(), 2, 2, ceil_mode=True)
        teacher_map = F.avg_pool2d(teacher_map.float(), 2, 2, ceil_mode=True)
    s, t = unit_pixels(student_map), unit_pixels(teacher_map.detach())
    b, _, n = s.shape
    total = s.new_zeros(())
    for i in range(b):  # one row image at a time: B×N×N similarities, not B×B×N×N
        s_sim = torch.einsum("cn,bcm->bnm", s[i], s) / tau
        t_sim = torch.einsum("cn,bcm->bnm", t[i], t) / tau
        total = total + relation_kl(s_sim, t_sim)
    return total / (b * b * n)


def teacher_regions(teacher_pixels: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """M×C region embeddings, one per (image, class present in it) in image-major, class-ascending order: the
    mean of the image's unit teacher pixels of that class (ignore excluded), scaled to unit norm.
    ``teacher_pixels``: B×C×N unit vectors; ``labels``: B×N, classes 0..K-1 or 255."""
    index = torch.where(labels == IGNORE_INDEX, torch.full_like(labels, num_classes), labels)
    one_hot = F.one_hot(index, num_classes + 1).to(teacher_pixels.dtype)[:, :, :num_classes]
    sums = torch.bmm(teacher_pixels, one_hot).transpose(1, 2)
    present = one_hot.sum(1) > 0
    return F.normalize(sums[present], p=2, dim=1)


def pixel_region_loss(student_embedding: torch.Tensor, teacher_map: torch.Tensor, labels: torch.Tensor,
                      num_classes: int, tau: float) -> torch.Tensor:
    """Pixel-to-region loss over the mini-batch. ``student_embedding`` is the projected student map, already at
    the teacher's width and grid; ``labels`` B×h×w on that grid (255 = ignore).

    Regions r_m: for every image and every class present in it, the unit-normalised mean of the teacher's unit
    pixel embeddings of that class (:func:`teacher_regions`), pooled over the whole batch (M regions). Anchors:
    every valid (non-ignore) pixel p of the batch, A in all. Each anchor's similarities to all regions, divided
    by τ, become a distribution by softmax, for the student (ŝ_p · r_m) and the teacher (t̂_p · r_m):

        L = 1/A Σ_p KL(softmax(t̂_p·R/τ) || softmax(ŝ_p·R/τ))

    0 (still attached to the student) when no pixel is valid. Float32."""
    if student_embedding.shape != teacher_map.shape or labels.shape[-2:] != teacher_map.shape[-2:]:
        raise ValueError(f"student {tuple(student_embedding.shape)}, teacher {tuple(teacher_map.shape)} and labels "
                         f"{tuple(labels.shape)} must agree")
    s, t = unit_pixels(student_embedding), unit_pixels(teacher_map.detach())
    flat = labels.flatten(1)
    valid = flat != IGNORE_INDEX
    if not bool(valid.any()):
        return s.sum() * 0.0
    regions = teacher_regions(t, flat, num_classes)
    anchors_s = s.transpose(1, 2)[valid]
    anchors_t = t.transpose(1, 2)[valid]
    return relation_kl(anchors_s @ regions.T / tau, anchors_t @ regions.T / tau) / anchors_s.shape[0]


def projection_head(in_channels: int, out_channels: int) -> nn.Sequential:
    """CIRKD's student projection head: conv 1×1 (no bias) -> BatchNorm -> ReLU -> conv 1×1 (no bias), from the
    student's width to the teacher's."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True), nn.Conv2d(out_channels, out_channels, 1, bias=False))


class CrossImageRelationalKD(Method):
    """CIRKD (mini-batch): pixel-to-pixel similarity distributions across every image pair of the batch and
    pixel-to-region distributions against the batch's teacher class regions, matched by KL, plus CE.

    Yang, Zhou, An, Jiang, Xu, Zhang, "Cross-Image Relational Knowledge Distillation for Semantic Segmentation",
    CVPR 2022. Read from the official code (winycg/CIRKD ``losses/cirkd_mini_batch.py``
    ``CriterionMiniBatchCrossImagePair``, ``losses/cirkd_memory.py`` ``StudentSegContrast``, ``train_cirkd.py``).

    * pixel (``pixel_weight``, default 1 = ``--lambda-minibatch-pixel``): :func:`pixel_relation_loss`, as the
      official mini-batch criterion: no projection head and no labels; student and teacher pixels L2-normalised
      in their own widths; one N×N similarity matrix per ordered image pair (i, j), softmax at τ over each row
      within image j's pixels (not over all pixels of the batch), KL(teacher ‖ student) averaged over rows and
      the B² pairs, no τ² factor. ``pool`` (official option, off in ``train_cirkd.py``) average-pools 2×2 first.
    * region (``region_weight``, default 0.1 = ``--lambda-memory-region``): the official code has pixel-to-region
      relations only in its memory variant, against a queue of teacher region embeddings (2000 per class, 1024
      sampled per step). kdbench implements the mini-batch variant only, so the memory is replaced by the
      current batch: regions are the teacher's class regions of every image in the batch (the queue's entries,
      computed the same way: the unit mean of unit teacher pixels of one class in one image, ignore excluded),
      anchors are the batch's valid pixels (labels nearest-downsampled to the teacher grid with
      ``labels_to_grid``; ignore pixels are dropped, as the official anchors are), student anchors go through
      the official projection head (conv 1×1 -> BN -> ReLU -> conv 1×1 to the teacher's width, the method's one
      extra module) and are L2-normalised; similarities / τ, softmax over regions, KL(teacher ‖ student)
      averaged over anchors (the official ``contrast_kd_temperature`` 1 is folded in, its τ_kd² = 1). Regions
      are few (classes present × B, not 1024 sampled ones) and always the current images' own; the memory
      variant's pixel-to-pixel queue term (λ 0.1) is not implemented, keeping the method bank-free.
    * τ = 0.1 for both terms (``--contrast-temperature``). Pixel KD (λ_kd 1), which ``train_cirkd.py`` adds, is
      left out: kdbench methods are pure.
    * Features: the official code relates the decoder's pre-classifier embedding (DeepLabV3 after ASPP);
      kdbench's light heads expose none, so both terms use the backbone map at ``level`` (-1 = deepest: a ViT's
      un-normalised last tapped block, a CNN's last stage). The student map is resampled bilinearly to the
      teacher's grid (after the projection head for the region term). A CNN's deepest map is one cell on small
      images (16-32 px): resampled it is constant, so its pixel term is uniform and gives no gradient; pick a
      shallower ``level`` for CNN students there. The pixel term's cost grows as B·(B·N²): use ``pool`` for
      large teacher grids.
    * Search space (only values published are the defaults; anchors.md §6 lists CIRKDv2's λ_minibatch 1 and
      λ_memory 0.1): ``pixel_weight`` log-uniform [0.3, 3], ``region_weight`` log-uniform [0.03, 0.3], ``tau``
      log-uniform [0.03, 0.3], each ×0.3-×3 around the official value (both terms are means, not sums).
    """

    defaults = {"pixel_weight": 1.0, "region_weight": 0.1, "tau": 0.1, "pool": False, "level": -1}
    search_space = {"pixel_weight": LogUniform(0.3, 3.0), "region_weight": LogUniform(0.03, 0.3),
                    "tau": LogUniform(0.03, 0.3)}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"features"})

    @classmethod
    def check_hparams(cls, hp) -> None:
        name = cls.registered_name or "cirkd"
        for key in ("pixel_weight", "region_weight"):
            if hp[key] < 0:
                raise UserError(f"method.{name}.{key} must be >= 0, not {hp[key]}")
        if hp["tau"] <= 0:
            raise UserError(f"method.{name}.tau must be > 0, not {hp['tau']}")

    def __init__(self, teacher, student, context, **hparams):
        super().__init__(teacher, student, context, **hparams)
        setting = f"method.{self.registered_name or 'cirkd'}.level"
        s_ch = level_channels(student.backbone, self.hp["level"], setting)
        t_ch = level_channels(teacher.backbone, self.hp["level"], setting)
        self.head = projection_head(s_ch, t_ch)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        hp = self.hp
        teacher = teacher_out.features[hp["level"]]
        grid = teacher.shape[-2:]
        student = student_out.features[hp["level"]]
        pixel = pixel_relation_loss(resize_to(student, grid), teacher, hp["tau"], hp["pool"])
        embedding = resize_to(self.head(student), grid)
        region = pixel_region_loss(embedding, teacher, labels_to_grid(batch.labels, grid),
                                   self.student.num_classes, hp["tau"])
        return {"task": self.task_loss(student_out, batch), "pixel": hp["pixel_weight"] * pixel,
                "region": hp["region_weight"] * region}
