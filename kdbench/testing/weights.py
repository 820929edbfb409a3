"""Random weights written in the official file formats of the real models (DINOv2 release ``.pth``, DeiT release
``{"model": ...}`` ``.pth`` with the distillation token, torchvision ResNet ``.pth``), for tests and for timing the
real pairs where the real files are absent. Values are small random normals; only names and shapes matter."""

from __future__ import annotations

from pathlib import Path

import torch

from kdbench.models.zoo import MODELS

#: the grid of the official position embeddings: DINOv2 at 518 px / patch 14, DeiT at 224 px / patch 16
OFFICIAL_GRID = {"dinov2": 37, "deit": 14}
OFFICIAL_PATCH = {"dinov2": 14, "deit": 16}


def official_state(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict named and shaped as ``model``'s official checkpoint."""
    spec = MODELS.get(model)
    gen = torch.Generator().manual_seed(seed)
    backbone = spec.build_backbone(224)
    own = backbone.state_dict()
    if spec.weights_format == "timm-cnn":
        state = {k.removeprefix("net."): v for k, v in own.items()}
        width = backbone.width
        state["fc.weight"], state["fc.bias"] = torch.zeros(1000, width), torch.zeros(1000)
    elif spec.weights_format in OFFICIAL_GRID:
        fmt, width = spec.weights_format, spec.kwargs["embed_dim"]
        state = {k.removeprefix("vit."): v for k, v in own.items() if k.startswith("vit.")}
        patch, grid = OFFICIAL_PATCH[fmt], OFFICIAL_GRID[fmt]
        state["patch_embed.proj.weight"] = torch.zeros(width, 3, patch, patch)
        prefix = 1 if fmt == "dinov2" else 2
        state["pos_embed"] = torch.zeros(1, prefix + grid * grid, width)
        if fmt == "dinov2":
            state["mask_token"] = torch.zeros(1, width)
        else:
            state["dist_token"] = torch.zeros(1, 1, width)
            for head in ("head", "head_dist"):
                state[f"{head}.weight"], state[f"{head}.bias"] = torch.zeros(1000, width), torch.zeros(1000)
    else:
        raise ValueError(f"model {model} has no official file format")
    out = {}
    for key, value in sorted(state.items()):
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith(("running_var", "norm.weight", "norm1.weight", "norm2.weight", "bn1.weight")):
            out[key] = torch.ones_like(value)
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.02
    return out


def write_official_weights(model: str, path: str | Path, seed: int = 0) -> Path:
    """``model``'s random weights saved in its official format at ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = official_state(model, seed)
    torch.save({"model": state} if MODELS.get(model).weights_format == "deit" else state, path)
    return path
