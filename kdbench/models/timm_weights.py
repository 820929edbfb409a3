"""A state dict in a family's official key layout, or in timm's, -> a timm backbone, loaded strictly.

The official layouts (DINOv2 with registers and SwiGLU, DINOv3, EVA02, DINO, ConvNeXt, torchvision ResNet) are
turned into timm's by the converter timm ships for that architecture (the ``checkpoint_filter_fn`` of the module
that defines it); a timm-layout file (timm's Hugging Face files) passes through unchanged. Around it, kdbench's
own rules (``kdbench.models.weights``):

- patch kernel: a 14x14 kernel is resized bicubically to the model's patch, values not rescaled (Rein's
  ``convert_dinov2``), before the converter sees it; position embeddings are resized bicubically without
  antialiasing to the model's grid;
- the classifier named by the timm config (``head``, ``fc``, ``head.fc``, DeiT's ``head_dist``) is dropped, since
  backbones have none; the mask token of a file (DINOv2, DINOv3, EVA02 MIM) is kept as the backbone's, else zeros;
- every other key must fit: missing, unexpected or mis-shaped keys are a UserError naming the file, the model and
  the first keys (``checkpoints.load_state``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from kdbench.errors import UserError
from kdbench.models.checkpoints import load_state
from kdbench.models.spec import ModelSpec
from kdbench.models.timm_backbones import TimmCNNBackbone, TimmViTBackbone

PATCH_KERNEL = "patch_embed.proj.weight"


def load_timm_state(state: dict[str, torch.Tensor], backbone: nn.Module, origin: str) -> None:
    """Load ``state`` (official or timm layout) into a timm backbone; a mismatch is a UserError naming ``origin``."""
    from kdbench.models.weights import resample_patch_kernel

    if isinstance(backbone, TimmViTBackbone):
        model = backbone.vit
    elif isinstance(backbone, TimmCNNBackbone):
        model = backbone.net
    else:
        raise TypeError(f"{origin}: the timm format needs a timm backbone, got {type(backbone).__name__}")
    for wrapper in ("module", "model_ema"):  # EVA's training checkpoints wrap the weights once more
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = dict(state)
    mask = state.get("mask_token")
    kernel = getattr(getattr(getattr(model, "patch_embed", None), "proj", None), "weight", None)
    if kernel is not None and PATCH_KERNEL in state and state[PATCH_KERNEL].dim() == 4:
        state[PATCH_KERNEL] = resample_patch_kernel(state[PATCH_KERNEL], kernel.shape[-1])
    converted = _convert(state, model)
    converted.pop("mask_token", None)
    own = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier") or ()
    for head in (classifier,) if isinstance(classifier, str) else classifier:
        for key in [k for k in converted if (k == head or k.startswith(f"{head}.")) and k not in own]:
            del converted[key]
    load_state(model, converted, origin)
    if isinstance(backbone, TimmViTBackbone):
        target = backbone.mask_token
        if mask is not None and mask.numel() != target.numel():
            raise UserError(f"{origin} does not fit the model: shape mismatch at mask_token: file "
                            f"{tuple(mask.shape)}, model {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(mask.reshape(target.shape) if mask is not None else torch.zeros_like(target))


def _convert(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` in timm's names through the converter of the module that defines ``model``'s class; a file the
    converter cannot read comes back as it is, for ``load_state`` to name its keys."""
    convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return state
    options = inspect.signature(convert).parameters
    extra = {k: v for k, v in (("interpolation", "bicubic"), ("antialias", False)) if k in options}
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # timm's converters print what they drop
            return dict(convert(dict(state), model, **extra))
    except Exception:  # another family's keys: let the strict load name them
        return state


def check_timm_weights(spec: ModelSpec, path: str | Path, image_size: int) -> None:
    """Read ``path`` and fit it to ``spec``'s backbone built without memory (the meta device), so a file of
    another family fails before any work with the keys that do not fit; nothing is kept."""
    from kdbench.models.weights import load_pretrained

    with torch.device("meta"):
        backbone = spec.build_backbone(image_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        load_pretrained(spec, backbone, path)
