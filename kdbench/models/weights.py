"""Official pretrained weight files -> the zoo's real backbones, converted in memory and loaded strictly.

``ModelSpec.weights_format`` picks the reader:

- ``"dinov2"``: Meta's release files ``dinov2_vit{s,b,l}14_pretrain.pth`` (facebookresearch/dinov2): ``cls_token``,
  ``pos_embed`` (1, 1+37*37, C), ``mask_token`` (1, C), ``patch_embed.proj.*`` (kernel 14),
  ``blocks.<i>.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}.*`` and ``norm.*``. Also
  the chunked naming ``blocks.<chunk>.<i>.*`` of DINOv2 training checkpoints (with ``block_chunks > 0`` its
  ``vision_transformer.py`` pads each chunk with identities, so ``i`` is the global block index), and timm's
  ``vit_*_patch14_dinov2`` files (the same names without ``mask_token``). Register tokens are not supported.
- ``"deit"``: DeiT's release files (facebookresearch/deit, ``{"model": ...}``) and timm's ``deit_*_patch16_224``
  files, which share names: ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.<i>.*`` (no LayerScale),
  ``norm.*``, ``head.*``, and for the distilled models ``dist_token`` and ``head_dist.*`` with a second prefix
  position in ``pos_embed`` (1, 2+14*14, C). GKD's DeiT student keeps the CLS token only (gkd.md §3.1): the dist
  token, its position embedding and both heads are dropped. Non-distilled files (one prefix token) load too.
- ``"timm-cnn"``: timm or torchvision ResNet files (the same key names). ``fc.*`` is dropped, and BatchNorm
  ``num_batches_tracked`` counters that a file leaves out are set to 0.
- ``"timm"``: any timm-built model (DINOv2-g and registers, DINOv3, EVA02, DINO, ConvNeXt, ResNet-101), in its
  family's official key layout or in timm's (``kdbench.models.timm_weights``), from a file or the offline
  Hugging Face cache.

A ViT file without ``mask_token`` gets zeros, GKD's student initialisation (gkd.md §3.1). Files already at the
model's patch size and grid (Rein-converted DINOv2 files, GKD's exported students) load unchanged.

Resampling follows Rein's ``tools/convert_models/convert_dinov2_large_512x512.py`` (GKD's stage-2 ``convert_dinov2``,
gkd.md §4) and GKD's stage-1b teacher (gkd.md §3.1):

- patch kernel: ``F.interpolate(kernel.float(), size=(p, p), mode="bicubic", align_corners=False)``. The values are
  not rescaled: a constant kernel stays the same constant, so a flat image's response grows by (16/14)^2.
- position embedding: the CLS entry is kept; the patch entries are reshaped row-major to their square grid,
  resized the same way (bicubic, ``align_corners=False``, no antialiasing) to the model's grid (32x32 at 512 px)
  and flattened back.

Every mismatch left after conversion is a ``UserError`` naming the file, the model and the first keys or shapes
(``checkpoints.load_state``, which writes nothing unless every key fits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.errors import UserError
from kdbench.models.backbones import CNNBackbone, ViTBackbone
from kdbench.models.checkpoints import load_state, read_state_dict
from kdbench.models.zoo import ModelSpec

_TITLES = {"dinov2": "DINOv2 checkpoint", "deit": "DeiT checkpoint", "timm-cnn": "timm/torchvision CNN checkpoint"}
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def load_pretrained(spec: ModelSpec, backbone: nn.Module, path: str | Path) -> None:
    """Load the official weight file ``path`` into ``backbone`` (built by ``spec.build_backbone``), converting it
    from ``spec.weights_format`` in memory. A missing file, another model's file or missing/unexpected keys are a
    UserError naming the file, the model and the first offending keys."""
    reader = _READERS.get(spec.weights_format or "")
    if reader is None:
        raise UserError(f"model {spec.name} is not loaded from a weight file (its pretraining is {spec.pretrain!r})")
    state = read_state_dict(path)
    title = _TITLES.get(spec.weights_format) or f"official or timm checkpoint of {spec.kwargs.get('timm_name')}"
    reader(state, backbone, f"weights file {path} ({title}) for model {spec.name}")


def resample_patch_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """A (C, 3, k, k) patch-embedding kernel resized to (C, 3, size, size), bicubic, values not rescaled."""
    if tuple(weight.shape[-2:]) == (size, size):
        return weight
    return F.interpolate(weight.float(), size=(size, size), mode="bicubic", align_corners=False)


def resample_pos_embed(pos: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(1, num_prefix + n*n, C) -> (1, 1 + h*w, C): the first (CLS) entry kept, other prefix entries dropped, the
    n x n patch entries resized bicubically to ``grid``. Anything else comes back unchanged, for ``load_state`` to
    report as a shape mismatch."""
    if pos.dim() != 3 or pos.shape[1] <= num_prefix:
        return pos
    patches = pos[:, num_prefix:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        return pos
    if (side, side) != tuple(grid):
        maps = patches.reshape(pos.shape[0], side, side, -1).permute(0, 3, 1, 2).float()
        maps = F.interpolate(maps, size=tuple(grid), mode="bicubic", align_corners=False)
        patches = maps.permute(0, 2, 3, 1).reshape(pos.shape[0], grid[0] * grid[1], -1)
    return torch.cat([pos[:, :1].to(patches.dtype), patches], dim=1)


def _read_dinov2(state: dict[str, torch.Tensor], backbone: nn.Module, origin: str) -> None:
    state = {_CHUNKED_BLOCK.sub(r"blocks.\1.", k): v for k, v in state.items()}
    _load_vit(state, backbone, origin, num_prefix=1)


def _read_deit(state: dict[str, torch.Tensor], backbone: nn.Module, origin: str) -> None:
    num_prefix = 2 if "dist_token" in state else 1
    state = {k: v for k, v in state.items() if k != "dist_token" and not k.startswith(("head.", "head_dist."))}
    _load_vit(state, backbone, origin, num_prefix=num_prefix)


def _load_vit(state: dict[str, torch.Tensor], backbone: nn.Module, origin: str, num_prefix: int) -> None:
    if not isinstance(backbone, ViTBackbone):
        raise TypeError(f"{origin}: a ViT weight format needs a ViTBackbone, got {type(backbone).__name__}")
    vit = backbone.vit
    mask = state.pop("mask_token", None)
    if "patch_embed.proj.weight" in state:
        state["patch_embed.proj.weight"] = resample_patch_kernel(state["patch_embed.proj.weight"], backbone.patch_size)
    if "pos_embed" in state:
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], num_prefix, tuple(vit.patch_embed.grid_size))
    load_state(vit, state, origin)
    own = backbone.mask_token
    if mask is not None and tuple(mask.shape) != tuple(own.shape):  # only a corrupt file: the rest fitted
        raise UserError(f"{origin} does not fit the model: shape mismatch at mask_token: file {tuple(mask.shape)}, "
                        f"model {tuple(own.shape)}")
    with torch.no_grad():
        own.copy_(mask if mask is not None else torch.zeros_like(own))


def _read_cnn(state: dict[str, torch.Tensor], backbone: nn.Module, origin: str) -> None:
    if not isinstance(backbone, CNNBackbone):
        raise TypeError(f"{origin}: a CNN weight format needs a CNNBackbone, got {type(backbone).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    for key in backbone.net.state_dict():
        running = key.removesuffix("num_batches_tracked") + "running_mean"
        if key.endswith(".num_batches_tracked") and key not in state and running in state:
            state[key] = torch.zeros((), dtype=torch.long)
    load_state(backbone.net, state, origin)


def _read_timm(state: dict[str, torch.Tensor], backbone: nn.Module, origin: str) -> None:
    from kdbench.models.timm_weights import load_timm_state

    load_timm_state(state, backbone, origin)


_READERS: dict[str, Callable[[dict[str, torch.Tensor], nn.Module, str], None]] = {
    "dinov2": _read_dinov2, "deit": _read_deit, "timm-cnn": _read_cnn, "timm": _read_timm}
