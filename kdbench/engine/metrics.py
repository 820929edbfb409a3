"""Segmentation metrics from a confusion matrix accumulated over a whole domain (mmseg's convention)."""

from __future__ import annotations

import torch

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """K×K int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` pixels are skipped."""
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.numel() and (int(target.max()) >= num_classes or int(target.min()) < 0):
        raise ValueError(f"label value {int(target.max())} outside 0..{num_classes - 1} (and not {ignore_index})")
    index = target * num_classes + pred
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU = TP / (TP + FP + FN) per class; NaN where a class is neither present nor predicted."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean of the per-class IoUs that are defined (a class predicted but absent counts as 0)."""
    return float(torch.nanmean(iou_per_class(confusion)))
