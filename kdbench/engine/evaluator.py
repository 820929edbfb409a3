"""Evaluation: a named inference protocol, confusion matrices accumulated over a whole domain, mIoU."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from kdbench.data.synthetic import Split, to_float
from kdbench.engine.metrics import confusion_matrix, iou_per_class, mean_iou
from kdbench.engine.runtime import Runtime
from kdbench.errors import UserError
from kdbench.models.segmentor import Segmentor


@dataclass(frozen=True)
class Protocol:
    """How predictions are made: ``whole`` image at native resolution, or ``slide`` windows of ``crop`` pixels
    every ``stride`` pixels whose logits are averaged where windows overlap (mmseg's slide mode)."""

    name: str
    mode: str
    crop: int = 0
    stride: int = 0
    description: str = ""

    def caption(self) -> str:
        if self.mode == "whole":
            return f"{self.name}: whole-image inference at native resolution, single scale, no flip"
        return f"{self.name}: sliding window {self.crop}px, stride {self.stride}px, single scale, no flip"


PROTOCOLS = {p.name: p for p in [
    Protocol("whole", "whole", description="whole image, native resolution"),
    Protocol("slide-24", "slide", crop=24, stride=16, description="sliding 24px window, stride 16 (tests)"),
    Protocol("gkd-512", "slide", crop=512, stride=341, description="GKD/Rein: 512 window, stride 341"),
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


def predict_logits(model: Segmentor, images: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    if protocol.mode == "whole":
        return model(images).logits.float()
    return slide_logits(model, images, protocol.crop, protocol.stride)


def slide_logits(model: Segmentor, images: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """Average logits of ``crop``-pixel windows placed every ``stride`` pixels (the last window flush with the
    border); images smaller than a window are scored whole."""
    b, _, h, w = images.shape
    ch, cw = min(crop, h), min(crop, w)
    rows = max(math.ceil((h - ch) / stride), 0) + 1
    cols = max(math.ceil((w - cw) / stride), 0) + 1
    logits = None
    counts = torch.zeros(1, 1, h, w, device=images.device)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * stride, h - ch), min(c * stride, w - cw)
            out = model(images[:, :, y0:y0 + ch, x0:x0 + cw]).logits.float()
            if logits is None:
                logits = torch.zeros(b, out.shape[1], h, w, device=images.device)
            logits[:, :, y0:y0 + ch, x0:x0 + cw] += out
            counts[:, :, y0:y0 + ch, x0:x0 + cw] += 1
    return logits / counts


@torch.inference_mode()
def evaluate(model: Segmentor, split: Split, protocol: Protocol, batch_size: int, runtime: Runtime,
             desc: str = "eval") -> DomainScore:
    model.eval()
    k = len(split.classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    for start in tqdm(range(0, len(split), batch_size), desc=desc, leave=False, disable=None):
        images = to_float(split.images[start:start + batch_size]).to(runtime.device)
        with runtime.autocast():
            pred = predict_logits(model, images, protocol).argmax(1)
        confusion += confusion_matrix(pred, split.labels[start:start + batch_size].to(pred.device), k)
    ious = iou_per_class(confusion)
    return DomainScore(
        miou=100 * mean_iou(confusion),
        per_class_iou=[None if math.isnan(v) else round(100 * float(v), 3) for v in ious],
        images=len(split), confusion=confusion,
    )
