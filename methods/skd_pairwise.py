"""SKD's pair-wise similarity distillation (Liu et al., CVPR 2019), without its adversarial holistic term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.distill import level_channels, resize_to
from kdbench.errors import UserError
from kdbench.method import Batch, Method, RunContext, Stage
from kdbench.models.segmentor import Segmentor, SegOutput
from kdbench.search import Choice, LogUniform

#: added to each node's L2 norm before dividing, as the official ``L2`` helper does
NORM_EPS = 1e-8


def patch_kernel(height: int, width: int, scale: float) -> tuple[int, int]:
    """The max-pool kernel (= stride) that cuts an ``height``×``width`` map into patches:
    ``(max(1, floor(h·scale)), max(1, floor(w·scale)))``, the official ``int(total · scale)`` kept at least 1."""
    return max(1, int(height * scale)), max(1, int(width * scale))


def pool_into_patches(feature_map: torch.Tensor, scale: float) -> torch.Tensor:
    """Max-pool a B×C×h×w map with kernel = stride = :func:`patch_kernel`, partial windows at the bottom and right
    kept (``ceil_mode``): a 5×5 map at scale 0.5 gives 3×3 nodes, the last row and column from 1-pixel windows."""
    kernel = patch_kernel(*feature_map.shape[-2:], scale)
    return F.max_pool2d(feature_map, kernel, stride=kernel, ceil_mode=True)


def similarity_matrices(feature_map: torch.Tensor) -> torch.Tensor:
    """B×C×h×w -> B×N×N (N = h·w, row-major): the cosine similarity ``a_ij = f_iᵀf_j / (‖f_i‖‖f_j‖)`` of every pair
    of positions' C-vectors, each norm taken with :data:`NORM_EPS` added."""
    nodes = feature_map.float().flatten(2)  # B×C×N
    nodes = nodes / (nodes.norm(dim=1, keepdim=True) + NORM_EPS)
    return nodes.transpose(1, 2) @ nodes


def pairwise_similarity_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, scale: float) -> torch.Tensor:
    """SKD's pair-wise term between a student and a teacher map on the same h×w grid (channel counts may differ).

    Both maps are max-pooled into patches (:func:`pool_into_patches`; the grids agree, so the kernels do), each
    patch is a node, and with ``a`` the node-pair cosine similarities (:func:`similarity_matrices`):

        ℓ = Σ_b Σ_i Σ_j (a^s_bij − a^t_bij)² / (N² · B)

    with N the number of nodes and B the batch size: the mean over node pairs and samples (the official
    ``sim_dis_compute``; CIRKD's ``.mean()`` is the same number). In float32.
    """
    if student_map.shape[0] != teacher_map.shape[0] or student_map.shape[-2:] != teacher_map.shape[-2:]:
        raise ValueError(f"student {tuple(student_map.shape)} and teacher {tuple(teacher_map.shape)} must share "
                         "batch size and grid")
    pooled_s = pool_into_patches(student_map.float(), scale)
    pooled_t = pool_into_patches(teacher_map.float(), scale)
    return (similarity_matrices(pooled_s) - similarity_matrices(pooled_t)).pow(2).mean()


class PairwiseSimilarityKD(Method):
    """SKD pair-wise (no adversarial term): the student's patch-to-patch cosine-similarity matrix regressed onto
    the teacher's with a squared error, plus CE.

    Liu, Chen, Liu, Qin, Luo, Wang, "Structured Knowledge Distillation for Semantic Segmentation", CVPR 2019
    (extended as Liu, Shu, Wang, Shen, "Structured Knowledge Distillation for Dense Prediction", TPAMI 2020).
    Official code: irfanICMLL/structure_knowledge_distillation, ``utils/criterion.py``
    (``CriterionPairWiseforWholeFeatAfterPool``, ``sim_dis_compute``), ``run_train_val.sh``; benchmark form:
    winycg/CIRKD ``losses/skd.py`` (``CriterionStructuralKD``).

    Only the pair-wise term of SKD, so not the full method: the holistic (adversarial, Wasserstein discriminator)
    term is left out, and so is SKD's pixel-wise term (λ_pi=10 in ``run_train_val.sh``), which is kdbench's
    ``kd``. CIRKD's SKD script likewise adds pixel KD (λ_kd=1) and adversarial terms (λ_adv=0.001, λ_d=0.1);
    kdbench methods are pure, so this one is pair-wise + CE.

    Loss = CE + ``weight`` · :func:`pairwise_similarity_loss`, logged as ``task`` and ``pairwise``:

    * Feature map: the backbone's multi-level map at ``level`` (-1 = deepest), for ViTs the un-normalised
      output of the last tapped block, for CNNs the last stage. The official code and CIRKD tap the decoder's
      context feature (PSP/ASPP output before the classifier), which kdbench's decode heads do not expose; the
      deepest backbone map is the nearest feature every student has. No adapter: the similarity matrices are
      N×N whatever the channel counts, so student and teacher widths may differ.
    * Grid: a student map on another grid (a stride-32 CNN against a stride-4 ViT) is resampled bilinearly to
      the teacher's grid before pooling (the official code needs equal grids). A CNN's deepest map is 1×1 on
      synth5 and smoke images; resampled, it is constant, every student similarity is 1 and the term passes
      no gradient to the student: pick a shallower ``level`` for CNN students at those sizes.
    * Pooling: max-pool with kernel = stride = ``floor(h·pool_scale)`` × ``floor(w·pool_scale)`` (at least 1),
      ``ceil_mode`` so partial windows at the bottom/right count, as the official code; ``pool_scale=0.5``
      (``run_train_val.sh``) gives 2×2 nodes on any even grid. CIRKD instead uses a fixed 2×2 kernel (many
      more nodes on Cityscapes maps); ``pool_scale=0.25``/``0.125`` give 4×4/8×8 nodes on synth5's 8×8 map.
    * Normalisation: nodes L2-normalised along channels with 1e-8 added to the norm, squared differences
      averaged over the N² pairs and the batch (official: ``sum / (wh)² / B``; CIRKD: ``mean``; identical).
      The official code detaches the norm (gradients flow through the dot products only); CIRKD's
      ``F.normalize`` and the paper's formula do not, and kdbench follows them. Values are identical.
    * Labels are not used, so ignore pixels play no part; every position of the map is a node input.
    * Defaults: ``weight=0.5`` (λ_pa, ``run_train_val.sh``), ``pool_scale=0.5``, ``level=-1``.
    * Search space: ``weight`` log-uniform [0.25, 20] (0.5 official SKD, 10 CIRKD's ``--lambda-skd``, on the
      same mean normalisation; half the smallest to twice the largest); ``pool_scale`` choice {0.125, 0.25, 0.5}
      (0.5 official; the finer grids approach CIRKD's 2×2 kernel).
    """

    defaults = {"weight": 0.5, "pool_scale": 0.5, "level": -1}
    search_space = {"weight": LogUniform(0.25, 20.0), "pool_scale": Choice((0.125, 0.25, 0.5))}

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"features"})

    @classmethod
    def check_hparams(cls, hp) -> None:
        name = cls.registered_name or "skd-pairwise"
        if hp["weight"] < 0:
            raise UserError(f"method.{name}.weight must be non-negative, not {hp['weight']}")
        if not 0.0 < hp["pool_scale"] < 1.0:
            raise UserError(f"method.{name}.pool_scale must lie in (0, 1) (the pooling kernel's share of the map; "
                            f"1 pools it into a single node), not {hp['pool_scale']}")

    def __init__(self, teacher: Segmentor, student: Segmentor, context: RunContext, **hparams: object):
        super().__init__(teacher, student, context, **hparams)
        setting = f"method.{self.registered_name}.level"
        for model in (student, teacher):
            level_channels(model.backbone, self.hp["level"], setting)  # refuses a level either lacks

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        level = self.hp["level"]
        teacher = teacher_out.features[level].detach()
        student = resize_to(student_out.features[level], teacher.shape[-2:])
        term = pairwise_similarity_loss(student, teacher, self.hp["pool_scale"])
        return {"task": self.task_loss(student_out, batch), "pairwise": self.hp["weight"] * term}
