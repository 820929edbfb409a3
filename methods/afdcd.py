"""Af-DCD: masked feature generation plus an omni-contrastive loss over channel groups and local windows."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.distill import resize_to
from kdbench.errors import UserError
from kdbench.method import Batch, Method, RunContext, Stage
from kdbench.models.segmentor import Segmentor, SegOutput
from kdbench.search import LogUniform

MapFn = Callable[[torch.Tensor], torch.Tensor]

MASK_MODES = ("random", "center")
PROJECTORS = ("plain", "enhanced")


# ----------------------------------------------------------------------------------------------- masks


def random_keep_mask(batch: int, height: int, width: int, ratio: float, device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """B×1×h×w float mask, 0 where a position is masked and 1 where it is kept.

    Every position is masked independently with probability ``ratio`` (a uniform draw ``u`` masks where
    ``u > 1 - ratio``), shared by all channels, so the realised fraction varies from image to image. Drawn on the
    CPU (reproducible across devices) and moved to ``device``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1], not {ratio}")
    u = torch.rand(batch, 1, height, width, generator=generator)
    return (u <= 1.0 - ratio).float().to(device)


def center_keep_mask(batch: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """B×1×h×w float mask that zeroes the central block, rows ``h//3 .. 2h//3`` and columns ``w//3 .. 2w//3``
    (end exclusive), and keeps everything else."""
    keep = torch.ones(batch, 1, height, width, device=device)
    keep[:, :, height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 0.0
    return keep


# ----------------------------------------------------------------------------------------------- losses


def mimicking_loss(generated: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Masked feature mimicking: ``Σ_{b,c,y,x} (G_{b,c,y,x} − T_{b,c,y,x})² / B``, over every position (masked or
    not) and channel, divided by the batch size only, in float32."""
    if generated.shape != teacher_map.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and teacher {tuple(teacher_map.shape)} differ")
    return (generated.float() - teacher_map.float()).pow(2).sum() / generated.shape[0]


def effective_groups(channels: int, groups: int) -> int:
    """The channel-group count actually used: ``groups`` when it divides ``channels``, else the largest divisor of
    ``channels`` below it (so that every group holds the same number of channels)."""
    if groups < 1:
        raise ValueError(f"groups must be at least 1, not {groups}")
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


def contrast_layout(height: int, width: int, pool: int, window: int) -> tuple[int, tuple[int, int]]:
    """``(pool factor, (window_h, window_w))`` for a ``height``×``width`` map.

    The max-pool factor is the largest one not above ``pool`` that still leaves at least one full ``window``×
    ``window`` in both directions (1 = no pooling); the window shrinks to the pooled map where the map is smaller
    than it.
    """
    if pool < 1 or window < 1:
        raise ValueError(f"pool and window must be at least 1, not {pool} and {window}")
    factor = max(1, min(pool, height // window, width // window))
    ph, pw = height // factor, width // factor
    return factor, (min(window, ph), min(window, pw))


def pool_for_contrast(feature_map: torch.Tensor, factor: int, window: tuple[int, int]) -> torch.Tensor:
    """Max-pool by ``factor`` (kernel = stride = factor, trailing rows/columns that do not fill a kernel dropped)
    and crop to whole windows from the top-left corner."""
    if factor > 1:
        feature_map = F.max_pool2d(feature_map, factor)
    h, w = feature_map.shape[-2:]
    return feature_map[..., : h - h % window[0], : w - w % window[1]]


def _samples(feature_map: torch.Tensor, groups: int, window: tuple[int, int]) -> torch.Tensor:
    """B×C×H×W -> (B·windows)×(wh·ww·groups)×(C/groups): every window's contrastive samples, one per (position in
    the window, channel group), numbered position-major (sample k has channel group ``k % groups``)."""
    b, c, h, w = feature_map.shape
    wh, ww = window
    x = feature_map.reshape(b, groups, c // groups, h // wh, wh, w // ww, ww)
    x = x.permute(0, 3, 5, 4, 6, 1, 2)  # b, window row, window col, y in window, x in window, group, channel
    return x.reshape(b * (h // wh) * (w // ww), wh * ww * groups, c // groups)


def omni_contrastive_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, tau: float, groups: int,
                          window: tuple[int, int] | int) -> torch.Tensor:
    """Af-DCD's omni-contrastive loss between two B×C×H×W maps whose H and W are whole multiples of ``window``.

    The channels are cut into ``groups`` consecutive groups and the map into non-overlapping windows. Each
    (position, channel group) of a window is one contrastive sample: a C/groups-vector. For the student sample
    ``s_i``, the positive is the teacher sample ``t_i`` at the same position and group; the negatives are the
    teacher samples of the same window whose channel group differs from ``i``'s, at any position (teacher samples
    of ``i``'s group at other positions are neither positive nor negative). Similarity is the negative L1
    distance over temperature:

        ℓ_i = −log( exp(−‖s_i − t_i‖₁/τ) / (exp(−‖s_i − t_i‖₁/τ) + Σ_{j: g(j) ≠ g(i)} exp(−‖s_i − t_j‖₁/τ)) )

    and the loss is ``Σ_i ℓ_i / (B·H·W)``: summed over channel groups, averaged over positions and images.
    Computed in float32; with ``groups=1`` there are no negatives and the loss is 0.
    """
    if student_map.shape != teacher_map.shape:
        raise ValueError(f"student {tuple(student_map.shape)} and teacher {tuple(teacher_map.shape)} differ")
    b, c, h, w = student_map.shape
    win = (window, window) if isinstance(window, int) else tuple(window)
    if h % win[0] or w % win[1]:
        raise ValueError(f"a {h}×{w} map is not a whole number of {win[0]}×{win[1]} windows")
    if c % groups:
        raise ValueError(f"{c} channels do not split into {groups} equal groups")
    s = _samples(student_map.float(), groups, win)
    t = _samples(teacher_map.float(), groups, win)
    k = s.shape[1]
    logits = -torch.cdist(s, t, p=1) / tau  # n × k × k: student sample i against teacher sample j
    group = torch.arange(k, device=s.device) % groups
    same_group = group[:, None] == group[None, :]
    neither = same_group & ~torch.eye(k, dtype=torch.bool, device=s.device)
    logits = logits.masked_fill(neither, float("-inf"))
    targets = torch.arange(k, device=s.device).repeat(s.shape[0])
    return F.cross_entropy(logits.reshape(-1, k), targets, reduction="sum") / (b * h * w)


def afdcd_losses(aligned_student: torch.Tensor, teacher_map: torch.Tensor, keep_mask: torch.Tensor,
                 projector: MapFn, tau: float, groups: int, window: int, pool: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two unweighted Af-DCD terms ``(mimic, contrast)`` for one batch.

    ``aligned_student``: the student map already at the teacher's width and grid (B×C_t×h×w); ``keep_mask``:
    B×1×h×w, 0 at masked positions. The masked map ``aligned_student · keep_mask`` goes through ``projector``
    (the generation block); the generated map is compared with the teacher by :func:`mimicking_loss` at full
    resolution, and by :func:`omni_contrastive_loss` after both are max-pooled and cropped to whole windows
    (:func:`contrast_layout`), with :func:`effective_groups` channel groups.
    """
    generated = projector(aligned_student * keep_mask.to(aligned_student.dtype))
    mimic = mimicking_loss(generated, teacher_map)
    factor, win = contrast_layout(*teacher_map.shape[-2:], pool, window)
    g = effective_groups(teacher_map.shape[1], groups)
    contrast = omni_contrastive_loss(pool_for_contrast(generated.float(), factor, win),
                                     pool_for_contrast(teacher_map.float(), factor, win), tau, g, win)
    return mimic, contrast


# ----------------------------------------------------------------------------------------------- modules


def plain_projector(channels: int) -> nn.Sequential:
    """The generation block: conv 3×3 -> ReLU -> conv 3×3 at the teacher's width (with biases)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1))


class EnhancedProjector(nn.Module):
    """The official code's optional two-depth generation block: two stacked conv 3×3 + ReLU stages, each read out
    by its own conv 3×3, and the two read-outs averaged."""

    def __init__(self, channels: int):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.stage2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.readout1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.readout2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.stage1(x)
        h2 = self.stage2(h1)
        return 0.5 * (self.readout1(h1) + self.readout2(h2))


# ----------------------------------------------------------------------------------------------- method


class AfDCD(Method):
    """Af-DCD: masked student features regenerated towards the teacher's deepest map, with MSE and an
    omni-contrastive loss over channel groups and local windows, plus CE.

    Fan, Li, Liu, Song, Yao, "Augmentation-free Dense Contrastive Knowledge Distillation for Efficient Semantic
    Segmentation", NeurIPS 2023. Official code: OSVAI/Af-DCD, loss ``losses/ocmgd.py``
    (``OmniContrastiveFeatureLoss``), wiring ``train_ocmgd.py``, Cityscapes scripts
    ``train_scripts/cityscape/deeplabv3_r101_*_ocmgd.sh``.

    Loss = CE + ``lambda_fd`` · mimic + ``lambda_ctr`` · contrast, logged as ``task``, ``fd`` and ``ctr``:

    * The student's deepest backbone map goes through a 1×1 conv (student width -> teacher width, with bias; the
      identity when the widths agree) and, when its grid differs from the teacher's (a stride-32 CNN against a
      stride-4 ViT), is resampled bilinearly to the teacher's grid (``kdbench.distill.resize_to``; both are
      linear and per-position/per-channel, so the order does not change the result).
    * Masked feature generation: positions are zeroed by a B×1×h×w mask (all channels together) and the masked
      map is regenerated by a projector, conv 3×3 -> ReLU -> conv 3×3 at the teacher's width.
    * mimic (:func:`mimicking_loss`): squared error between generated and teacher maps summed over all positions
      (not only the masked ones) and channels, divided by the batch size (``MSELoss(reduction='sum') / BS``).
    * contrast (:func:`omni_contrastive_loss`): on the *generated* map and the teacher's, both max-pooled, cut
      into channel groups and local windows; positive = the teacher's sample at the same position and channel
      group, negatives = the teacher's samples of other channel groups anywhere in the window; similarity
      −L1 distance / τ; cross-entropy summed and divided by B·H·W of the pooled map.

    Readings and choices:

    * Level: the deepest map on both sides (``features[-1]``; for ViTs the un-normalised output of the last tapped
      block, for CNNs the last stage), as the official code taps ``c4``, the last backbone stage before the head.
    * Negatives: taken from the official code. The paper presents spatial, channel and omni contrasting (the
      README's figure); the code ships only the omni variant, which uses as negatives every teacher sample of a
      *different* channel group in the window, including those at the same position, and excludes same-group
      samples at other positions. So ``groups=1`` disables the term (no negatives).
    * Masking: ``mask="random"`` (default) masks each position independently with probability ``mask_ratio``
      (the official ``rand_mask=True`` branch), drawn afresh every step from the global RNG, so the masked
      fraction varies around the ratio rather than being exact; ``mask="center"`` zeroes the fixed central third
      block (the official ``rand_mask=False`` branch; ``mask_ratio`` is then unused). The mask is applied after
      the 1×1 alignment (so the adapter's bias is masked too), as in the official code.
    * Projector: ``projector="plain"`` (default; the loss module's default, conv 3×3 -> ReLU -> conv 3×3 as in
      masked generative distillation) or ``"enhanced"`` (the official ``EnhancedProjector``: two stacked
      conv 3×3 + ReLU stages, each read out by a conv 3×3, the read-outs averaged). The ResNet-18 Cityscapes
      script asks for ``--rand_mask False --enhance_projector True``, but ``train_ocmgd.py`` defines
      ``--rand-mask`` and ``--enhance-projector`` with ``type=bool``, so argparse rejects those spellings (and
      would read "False" as True with the right spelling); the MobileNetV2 script sets neither. The defaults
      are therefore the settings that demonstrably run: random masking and the plain projector.
    * Pooling and windows: the official Cityscapes path max-pools both maps by 4 and uses 4×4 windows with 16
      channel groups (``pool_size=4``, ``patch_size=(4, 4)``, ``M_ocd=16``; on CamVid it crops to 44×44 instead
      of pooling). kdbench's maps are much smaller (8×8 for synth5, 4×4 for smoke), so the pool factor is the
      largest one ≤ ``pool`` that still leaves a full ``window``×``window`` (8×8 -> pool 2 -> one 4×4 window;
      4×4 -> no pooling), the window shrinks to the map when the map is smaller, and rows/columns that do not
      fill a window are cropped from the bottom/right. ``groups`` falls back to the largest divisor of the
      teacher's width below it when it does not divide the width.
    * Normalisation: kept as in the official code (mimic: sum / B; contrast: sum / (B·H·W) = ``groups`` × the
      mean cross-entropy per sample), so the official weights apply unchanged. Both terms are raw: features
      are not normalised, and the L1 distance over C/groups channels divided by τ=0.07 makes the contrastive
      logits large. The mimic term grows with the teacher map's size (C·h·w) and magnitude: the official
      λ_fd was tuned for 2048×64×128 ResNet-101 maps, some 500× more elements than synth5's 128×8×8 teacher
      map. At initialisation on synth5 (f2l) the weighted terms are about fd 0.05 and ctr 7.7 against a CE of
      about 2 (ctr falls to about 1.2 within 60 steps), and on smoke fd 2e-4, ctr 0.9-1.2; sweep the weights
      per pair.
    * Defaults: ``lambda_fd=2e-6``, ``lambda_ctr=0.005`` (both Cityscapes scripts; the argparse defaults are
      4e-5 and 1e-3), ``tau=0.07``, ``mask_ratio=0.75``, ``groups=16``, ``window=4``, ``pool=4`` (loss-module
      defaults).
    * Search space: ``lambda_fd`` log-uniform [1e-6, 1e-4] (2e-6 the Cityscapes scripts, 4e-5 the argparse
      default; up to 1e-4 because synth5's maps are ~500× smaller, so the default fd term is negligible),
      ``lambda_ctr`` log-uniform [3e-4, 1e-2] (5e-3 the scripts, 1e-3 the argparse default; down to 3e-4 because
      the default ctr term starts at ~4× the CE), ``tau`` log-uniform [0.035, 0.14] (half to twice the loss
      module's 0.07, the only published value; anchors.md §6).
    * Left out, as kdbench methods are pure: ``train_ocmgd.py`` also adds pixel-wise logit KD with weight 1
      (``--lambda-kd`` defaults to 1.0 and no script changes it) and, for ResNet students, an auxiliary-head
      CE at 0.4; neither is part of Af-DCD's own loss. The official per-module gradient clipping of the loss
      modules (max norm 15) is replaced by the trainer's global clipping.
    * Teacher: any kind with feature maps; students: ViTs and CNNs. Single stage on labelled source data.
    """

    defaults = {"lambda_fd": 2e-6, "lambda_ctr": 0.005, "tau": 0.07, "mask_ratio": 0.75, "mask": "random",
                "projector": "plain", "groups": 16, "window": 4, "pool": 4}
    search_space = {"lambda_fd": LogUniform(1e-6, 1e-4), "lambda_ctr": LogUniform(3e-4, 1e-2),
                    "tau": LogUniform(0.035, 0.14)}
    student_kinds = frozenset({"vit", "cnn"})

    @classmethod
    def teacher_taps(cls, hp) -> frozenset[str]:
        return frozenset({"features"})

    @classmethod
    def check_hparams(cls, hp) -> None:
        name = cls.registered_name or "afdcd"
        if hp["mask"] not in MASK_MODES:
            raise UserError(f"method.{name}.mask must be one of {', '.join(MASK_MODES)}, not {hp['mask']!r}")
        if hp["projector"] not in PROJECTORS:
            raise UserError(f"method.{name}.projector must be one of {', '.join(PROJECTORS)}, "
                            f"not {hp['projector']!r}")
        if not 0.0 <= hp["mask_ratio"] <= 1.0:
            raise UserError(f"method.{name}.mask_ratio must lie in [0, 1], not {hp['mask_ratio']}")
        if hp["tau"] <= 0:
            raise UserError(f"method.{name}.tau must be positive, not {hp['tau']}")
        for key in ("groups", "window", "pool"):
            if hp[key] < 1:
                raise UserError(f"method.{name}.{key} must be at least 1, not {hp[key]}")

    def __init__(self, teacher: Segmentor, student: Segmentor, context: RunContext, **hparams: object):
        super().__init__(teacher, student, context, **hparams)
        hp = self.hp
        s_ch = student.backbone.level_channels[-1]
        t_ch = teacher.backbone.level_channels[-1]
        self.align: nn.Module = nn.Conv2d(s_ch, t_ch, 1) if s_ch != t_ch else nn.Identity()
        self.projector: nn.Module = plain_projector(t_ch) if hp["projector"] == "plain" else EnhancedProjector(t_ch)

    def keep_mask(self, teacher_map: torch.Tensor) -> torch.Tensor:
        b, _, h, w = teacher_map.shape
        if self.hp["mask"] == "center":
            return center_keep_mask(b, h, w, teacher_map.device)
        return random_keep_mask(b, h, w, self.hp["mask_ratio"], teacher_map.device)

    def loss(self, stage: Stage, batch: Batch, student_out: SegOutput, teacher_out: SegOutput | None
             ) -> dict[str, torch.Tensor]:
        teacher_map = teacher_out.features[-1].detach()
        aligned = resize_to(self.align(student_out.features[-1]), teacher_map.shape[-2:])
        hp = self.hp
        mimic, contrast = afdcd_losses(aligned, teacher_map, self.keep_mask(teacher_map), self.projector,
                                       hp["tau"], hp["groups"], hp["window"], hp["pool"])
        return {"task": self.task_loss(student_out, batch), "fd": hp["lambda_fd"] * mimic,
                "ctr": hp["lambda_ctr"] * contrast}
