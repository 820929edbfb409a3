"""Evaluation: a named inference protocol, confusion matrices accumulated over a whole domain, mIoU."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kdbench.data.synthetic import Split, to_float
from kdbench.engine.metrics import IGNORE_INDEX, confusion_matrix, iou_per_class, mean_iou
from kdbench.engine.runtime import Runtime
from kdbench.errors import UserError
from kdbench.models.segmentor import Segmentor


@dataclass(frozen=True)
class Protocol:
    """How predictions are made: ``whole`` image at native resolution, or ``slide`` windows of ``crop`` pixels
    every ``stride`` pixels whose logits are averaged where windows overlap (mmseg's slide mode). With
    ``test_resize`` each real dataset's image is first resized to that dataset's test scale (keep ratio) and the
    logits resized back to the label's resolution (GKD/Rein's test pipeline, datasets.md §0); synthetic images
    have no test scale."""

    name: str
    mode: str
    crop: int = 0
    stride: int = 0
    test_resize: bool = False
    description: str = ""

    def caption(self) -> str:
        if self.mode == "whole":
            return f"{self.name}: whole-image inference at native resolution, single scale, no flip"
        resize = ("each dataset's test resize (keep ratio), " if self.test_resize else "")
        scored = ", scored at label resolution" if self.test_resize else ""
        return (f"{self.name}: {resize}sliding window {self.crop}px, stride {self.stride}px, single scale, "
                f"no flip{scored}")


PROTOCOLS = {p.name: p for p in [
    Protocol("whole", "whole", description="whole image, native resolution"),
    Protocol("slide-24", "slide", crop=24, stride=16, description="sliding 24px window, stride 16 (tests)"),
    Protocol("gkd-512", "slide", crop=512, stride=341, test_resize=True,
             description="GKD/Rein: per-dataset test resize, 512 window, stride 341, scored at label resolution"),
]}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown evaluation protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass
class DomainScore:
    miou: float
    per_class_iou: list[float | None]
    images: int
    confusion: torch.Tensor
    #: wall seconds the scoring took (set by the caller that timed it)
    seconds: float | None = None
    #: the predicted class maps (H×W uint8 at label resolution, 255 where the label is ignored) of the first
    #: ``keep`` images scored, in split order (``kdbench.engine.predictions`` saves them)
    predictions: tuple[np.ndarray, ...] = ()


def predict_logits(model: Segmentor, images: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    if protocol.mode == "whole":
        return model(images).logits.float()
    return slide_logits(model, images, protocol.crop, protocol.stride)


def slide_logits(model: Segmentor, images: torch.Tensor, crop: int, stride: int, windows_per_pass: int = 8
                 ) -> torch.Tensor:
    """Average logits of ``crop``-pixel windows placed every ``stride`` pixels (mmseg's slide mode: the last
    window flush with the border); images smaller than a window are scored whole. Windows go through the model
    ``windows_per_pass`` at a time (all windows of an image share one size), which changes no result."""
    b, _, h, w = images.shape
    ch, cw = min(crop, h), min(crop, w)
    rows = max(math.ceil((h - ch) / stride), 0) + 1
    cols = max(math.ceil((w - cw) / stride), 0) + 1
    boxes = [(min(r * stride, h - ch), min(c * stride, w - cw)) for r in range(rows) for c in range(cols)]
    logits = None
    counts = torch.zeros(1, 1, h, w, device=images.device)
    for first in range(0, len(boxes), windows_per_pass):
        group = boxes[first:first + windows_per_pass]
        crops = torch.cat([images[:, :, y0:y0 + ch, x0:x0 + cw] for y0, x0 in group])
        out = model(crops).logits.float()
        if logits is None:
            logits = torch.zeros(b, out.shape[1], h, w, device=images.device)
        for i, (y0, x0) in enumerate(group):
            logits[:, :, y0:y0 + ch, x0:x0 + cw] += out[i * b:(i + 1) * b]
            counts[:, :, y0:y0 + ch, x0:x0 + cw] += 1
    return logits / counts


@torch.inference_mode()
def evaluate(model: Segmentor, split: Split, protocol: Protocol, batch_size: int, runtime: Runtime,
             desc: str = "eval", keep: int = 0) -> DomainScore:
    """Score a synthetic split in batches; ``keep``: how many of its first predictions to hand back."""
    model.eval()
    k = len(split.classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    kept: list[np.ndarray] = []
    for start in tqdm(range(0, len(split), batch_size), desc=desc, leave=False, disable=None):
        images = to_float(split.images[start:start + batch_size]).to(runtime.device)
        with runtime.autocast():
            pred = predict_logits(model, images, protocol).argmax(1)
        labels = split.labels[start:start + batch_size].to(pred.device)
        confusion += confusion_matrix(pred, labels, k)
        kept += _kept(pred, labels, keep - len(kept))
    return dataclasses.replace(domain_score(confusion, len(split)), predictions=tuple(kept))


def _kept(pred: torch.Tensor, labels: torch.Tensor, wanted: int) -> list[np.ndarray]:
    """The first ``wanted`` predicted maps of a batch as uint8 arrays, 255 where the label is ignored."""
    if wanted <= 0:
        return []
    pred, labels = pred[:wanted], labels[:wanted]
    return list(torch.where(labels == IGNORE_INDEX, IGNORE_INDEX, pred).to(torch.uint8).cpu().numpy())


def domain_score(confusion: torch.Tensor, images: int) -> DomainScore:
    """mIoU and per-class IoU (in %) from a domain's summed confusion matrix."""
    ious = iou_per_class(confusion)
    return DomainScore(miou=100 * mean_iou(confusion),
                       per_class_iou=[None if math.isnan(v) else round(100 * float(v), 3) for v in ious],
                       images=images, confusion=confusion)


@torch.inference_mode()
def evaluate_loader(model: Segmentor, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                    protocol: Protocol, runtime: Runtime, desc: str = "eval", keep: int = 0) -> DomainScore:
    """Score real images one at a time: logits of the (test-resized) image, resized bilinearly to its label's
    resolution, argmax; confusion summed over the split (mmseg's ``IoUMetric`` per dataset). ``keep``: how many
    of the first predictions (at label resolution) to hand back."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    images = 0
    kept: list[np.ndarray] = []
    for image, label in tqdm(loader, desc=desc, leave=False, disable=None):
        image = image.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = predict_logits(model, image, protocol)
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        pred, label = logits.argmax(1), label.to(logits.device).long()
        confusion += confusion_matrix(pred, label, num_classes).cpu()
        kept += _kept(pred, label, keep - len(kept))
        images += image.shape[0]
    return dataclasses.replace(domain_score(confusion, images), predictions=tuple(kept))
