"""A ViT's token grid at an image size, known before any weights exist: the model is built and run on PyTorch's
``meta`` device, which computes shapes without memory or arithmetic (a DINOv2-L takes under half a second)."""

from __future__ import annotations

import torch

from kdbench.models.spec import ModelSpec


def token_grid(spec: ModelSpec, image_size: int) -> tuple[int, int] | None:
    """The (h, w) grid of ``spec``'s patch tokens on ``image_size``² images; None for a CNN, or for a backbone
    whose forward pass does not run on the meta device (then the method's own check at run start still holds)."""
    if spec.arch != "vit":
        return None
    try:
        with torch.device("meta"):
            out = spec.build_backbone(image_size)(torch.empty(1, 3, image_size, image_size))
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    return None if out.grid is None else (int(out.grid[0]), int(out.grid[1]))
