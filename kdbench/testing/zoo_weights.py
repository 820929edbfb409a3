"""Random weights for timm-built zoo models, in each family's official key layout or in timm's, and a fake
Hugging Face cache folder holding them, for tests without network or real weights.

The official layouts are those of the release files (facebookresearch/dinov2 with registers and SwiGLU,
facebookresearch/dinov3, baaivision/EVA EVA02 MIM, facebookresearch/dino, facebookresearch/ConvNeXt, torchvision
ResNet) as timm's converters read them: official names, the official patch kernel (14 for DINOv2 and EVA02) and
position-embedding grid (37x37 at 518 px, 16x16 at 224 px), the pretraining-only entries (mask token, MIM head,
RoPE buffers) and the ImageNet classifiers included. Values are small random normals; names and shapes matter.
"""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch

from kdbench.models.spec import ModelSpec
from kdbench.models.timm_specs import _PATCH

#: a commit id for the fake cache's ``main`` snapshot
FAKE_REVISION = "0123456789abcdef0123456789abcdef01234567"


def family(spec: ModelSpec) -> str:
    """The family of a timm-built spec: dinov2, dinov3, eva02, dino, convnext or resnet."""
    name = spec.kwargs["timm_name"]
    for fam in ("dinov2", "dinov3", "eva02", "convnext", "resnet"):
        if fam in name:
            return fam
    if name.endswith(".dino"):
        return "dino"
    raise ValueError(f"no official layout known for timm model {name}")


def timm_state(spec: ModelSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """``spec``'s backbone's own timm state dict (as timm's Hugging Face files), random."""
    backbone = spec.build_backbone(64)
    model = backbone.vit if spec.arch == "vit" else backbone.net
    return _randomised(model.state_dict(), seed)


def official_state(spec: ModelSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict named and shaped as ``spec``'s family's official release file, random."""
    fam = family(spec)
    state = timm_state(spec, seed)
    width = state["cls_token"].shape[-1] if "cls_token" in state else 0
    if fam in ("dinov2", "eva02", "dino"):
        state = _official_grid(spec, state)
    if fam == "dinov2":
        state = {re.sub(r"mlp\.fc1\.", "mlp.w12.", k) if _packed(spec) else k: v for k, v in state.items()}
        state = {re.sub(r"mlp\.fc2\.", "mlp.w3.", k) if _packed(spec) else k: v for k, v in state.items()}
        state["mask_token"] = torch.zeros(1, width)
        if "reg_token" in state:  # the official pos_embed has the CLS entry; registers have none
            state["register_tokens"] = state.pop("reg_token")
            pos = state["pos_embed"]
            state["pos_embed"] = torch.cat([torch.zeros(1, 1, width), pos], dim=1)
    elif fam == "dinov3":
        renames = (("reg_token", "storage_tokens"), ("gamma_1", "ls1.gamma"), ("gamma_2", "ls2.gamma"),
                   ("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."))
        swiglu = any(".fc1_g." in k for k in state)
        state = {_renamed(k, renames + ((("mlp.fc2.", "mlp.w3."),) if swiglu else ())): v for k, v in state.items()}
        for key in [k for k in state if k.endswith("attn.qkv.weight")]:
            state[key.replace("weight", "bias")] = torch.zeros(3 * width)
            state[key.replace("weight", "bias_mask")] = torch.ones(3 * width)
        state["rope_embed.periods"] = torch.ones(max(1, width // 8))
        state["mask_token"] = torch.zeros(1, width)
    elif fam == "eva02":
        renames = (("attn.q_proj.bias", "attn.q_bias"), ("attn.v_proj.bias", "attn.v_bias"),
                   ("attn.norm.", "attn.inner_attn_ln."), ("mlp.norm.", "mlp.ffn_ln."), ("mlp.fc1_g.", "mlp.w1."),
                   ("mlp.fc1_x.", "mlp.w2."), ("mlp.fc1.", "mlp.w12."), ("mlp.fc2.", "mlp.w3."), ("fc_norm.", "norm."))
        state = {_renamed(k, renames): v for k, v in state.items()}
        state["mask_token"] = torch.zeros(1, 1, width)
        state["lm_head.weight"], state["lm_head.bias"] = torch.zeros(16, width), torch.zeros(16)
        state["rope.freqs_cos"] = state["rope.freqs_sin"] = torch.zeros(4, 4)
    elif fam == "convnext":
        state = {_convnext_official(k): v for k, v in state.items()}
        state["head.weight"], state["head.bias"] = torch.zeros(1000, state["norm.weight"].shape[0]), torch.zeros(1000)
    elif fam == "resnet":
        channels = max(v.shape[0] for k, v in state.items() if k.endswith("bn3.weight"))
        state["fc.weight"], state["fc.bias"] = torch.zeros(1000, channels), torch.zeros(1000)
    return state


def write_weights(spec: ModelSpec, path: str | Path, layout: str = "official", seed: int = 0) -> Path:
    """``spec``'s random weights in ``layout`` ("official" or "timm") at ``path`` (.pth/.pt, or .safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = official_state(spec, seed) if layout == "official" else timm_state(spec, seed)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def write_hub_cache(cache: str | Path, spec: ModelSpec, seed: int = 0) -> Path:
    """A Hugging Face hub cache folder (``HF_HUB_CACHE``) holding ``spec.hub``'s ``model.safetensors`` in timm's
    layout, as ``hf download`` leaves it: blob, ``main`` snapshot link, ``refs/main``. Returns the snapshot file."""
    org, name = spec.hub.split("/", 1)
    repo = Path(cache) / f"models--{org}--{name}"
    blob = write_weights(spec, repo / "blobs" / "weights.safetensors", layout="timm", seed=seed)
    snapshot = repo / "snapshots" / FAKE_REVISION / "model.safetensors"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(Path("../..") / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(FAKE_REVISION)
    return snapshot


def _official_grid(spec: ModelSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release file's patch kernel (native size) and position embedding (native grid)."""
    name = spec.kwargs["timm_name"]
    patch = int(_PATCH.search(name).group(1))
    side = timm.models.get_pretrained_cfg(name).input_size[-1] // patch
    kernel = state["patch_embed.proj.weight"]
    state["patch_embed.proj.weight"] = torch.randn(*kernel.shape[:2], patch, patch) * 0.02
    pos = state["pos_embed"]
    prefix = pos.shape[1] - _grid_cells(spec)
    state["pos_embed"] = torch.randn(1, prefix + side * side, pos.shape[-1]) * 0.02
    return state


def _grid_cells(spec: ModelSpec) -> int:
    backbone = spec.build_backbone(64)
    return int(backbone.vit.patch_embed.num_patches)


def _packed(spec: ModelSpec) -> bool:
    """DINOv2-g's SwiGLU is one fused ``w12`` projection (timm ``SwiGLUPacked``: fc1, fc2)."""
    return "giant" in spec.kwargs["timm_name"]


def _renamed(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if old in key:
            return key.replace(old, new)
    return key


def _convnext_official(key: str) -> str:
    key = re.sub(r"^stem\.", "downsample_layers.0.", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
    key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
    key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
    return key.replace("head.norm.", "norm.")


def _randomised(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sorted(state.items()):
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.ones_like(value)
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.02
    return out
