"""Stand-in segmentation models whose predictions are known without training, for tests of evaluation code."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class LeftHalfIsOne(nn.Module):
    """Two-class logits favouring class 1 in the left half of its input window and class 0 elsewhere."""

    def forward(self, images: torch.Tensor) -> SimpleNamespace:
        b, _, h, w = images.shape
        logits = torch.zeros(b, 2, h, w)
        logits[:, 1, :, : w // 2] = 1.0
        logits[:, 0, :, w // 2:] = 1.0
        return SimpleNamespace(logits=logits)
