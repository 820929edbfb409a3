"""GKD's ablations as registered variants, so one report shows them beside GKD (gkd.md §9.4)."""

from __future__ import annotations

from kdbench_methods.gkd import GKD, MSEHead


class GKDSingleStage(GKD):
    """GKD single-stage ablation: the QSD terms and the task loss trained together in one stage on labelled source
    images, the student not frozen (no proxy stage, no separate task stage). The paper's ablation (DINOv2-B ->
    ViT-S, GTAV average mIoU) reports 48.8 against 54.1 for two-stage QSD.

    Search space: GKD's without ``distill_lr``, ``proxy_steps`` and ``distill_steps`` (one stage at the run's
    ``train.steps`` and ``train.lr``: there is no stage 1 to size)."""

    ablation_of = "gkd"
    single_stage = True
    search_space = {k: v for k, v in GKD.search_space.items()
                    if k not in ("distill_lr", "proxy_steps", "distill_steps")}


class GKDMSEHeads(GKD):
    """GKD with MSE heads: LN -> Linear projections instead of QSD, with GKD's two-stage schedule (the paper's
    "two-stage MSE" ablation: 53.1 against 54.1 for QSD).

    Search space: GKD's."""

    ablation_of = "gkd"
    head_class = MSEHead


class GKDNoMask(GKD):
    """GKD without L_mask: the masked second student pass and its head are dropped (``mask_weight=0``).

    Search space: GKD's without ``mask_weight``, ``mask_probability`` and ``mask_ratio`` (no masked pass)."""

    ablation_of = "gkd"
    defaults = {**GKD.defaults, "mask_weight": 0.0}
    search_space = {k: v for k, v in GKD.search_space.items()
                    if k not in ("mask_weight", "mask_probability", "mask_ratio")}


class GKDNoCLS(GKD):
    """GKD without L_cls: the CLS-token term is dropped (``cls_weight=0``; the CLS still enters L_feat).

    Search space: GKD's without ``cls_weight``."""

    ablation_of = "gkd"
    defaults = {**GKD.defaults, "cls_weight": 0.0}
    search_space = {k: v for k, v in GKD.search_space.items() if k not in ("cls_weight",)}


class GKDFinalReadout(GKD):
    """GKD whose stage-2 head reads the final-LayerNorm patch tokens (the ones stage 1 distils), at every level of
    the head, instead of the un-normalised outputs of intermediate blocks (the official readout, gkd.md §4, which
    stage 1 never supervises directly). A kdbench diagnostic, not in the paper; ViT students only.

    Search space: GKD's."""

    ablation_of = "gkd"
    student_kinds = frozenset({"vit"})

    def __init__(self, teacher, student, context, **hparams):
        super().__init__(teacher, student, context, **hparams)
        student.backbone.readout = "final"
