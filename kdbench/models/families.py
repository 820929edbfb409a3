"""The built-in timm models: (zoo name, timm name with pretrained tag, role, what it is and where its official
weights come from). Each runs at patch 16 (the protocols' grid; DINOv2's and EVA02's 14x14 kernels are resampled
on loading) and loads a ``weights.<model>`` file (official or timm key layout) or, without one, the timm tag's
entry in the offline Hugging Face cache. docs/real-data.md lists the official sources per family.
"""

from __future__ import annotations

TIMM_MODELS: tuple[tuple[str, str, str, str], ...] = (
    ("dinov2-g", "vit_giant_patch14_dinov2.lvd142m", "foundation",
     "DINOv2 ViT-g/14 (dinov2_vitg14_pretrain.pth): 1536-d, 24 heads, 40 blocks, SwiGLU"),
    ("dinov2-s-reg4", "vit_small_patch14_reg4_dinov2.lvd142m", "foundation",
     "DINOv2 ViT-S/14 with 4 registers (dinov2_vits14_reg4_pretrain.pth): 384-d, 12 blocks"),
    ("dinov2-b-reg4", "vit_base_patch14_reg4_dinov2.lvd142m", "foundation",
     "DINOv2 ViT-B/14 with 4 registers (dinov2_vitb14_reg4_pretrain.pth): 768-d, 12 blocks"),
    ("dinov2-l-reg4", "vit_large_patch14_reg4_dinov2.lvd142m", "foundation",
     "DINOv2 ViT-L/14 with 4 registers (dinov2_vitl14_reg4_pretrain.pth): 1024-d, 24 blocks"),
    ("dinov2-g-reg4", "vit_giant_patch14_reg4_dinov2.lvd142m", "foundation",
     "DINOv2 ViT-g/14 with 4 registers (dinov2_vitg14_reg4_pretrain.pth): 1536-d, 40 blocks, SwiGLU"),
    ("dinov3-s", "vit_small_patch16_dinov3.lvd1689m", "foundation",
     "DINOv3 ViT-S/16 LVD-1689M (dinov3_vits16_pretrain_lvd1689m-*.pth): 384-d, 12 blocks, RoPE, 4 registers"),
    ("dinov3-s-plus", "vit_small_plus_patch16_dinov3.lvd1689m", "foundation",
     "DINOv3 ViT-S+/16 LVD-1689M (dinov3_vits16plus_pretrain_lvd1689m-*.pth): 384-d, SwiGLU, RoPE, 4 registers"),
    ("dinov3-b", "vit_base_patch16_dinov3.lvd1689m", "foundation",
     "DINOv3 ViT-B/16 LVD-1689M (dinov3_vitb16_pretrain_lvd1689m-*.pth): 768-d, 12 blocks, RoPE, 4 registers"),
    ("dinov3-l", "vit_large_patch16_dinov3.lvd1689m", "foundation",
     "DINOv3 ViT-L/16 LVD-1689M (dinov3_vitl16_pretrain_lvd1689m-*.pth): 1024-d, 24 blocks, RoPE, 4 registers"),
    ("dinov3-l-sat", "vit_large_patch16_dinov3.sat493m", "foundation",
     "DINOv3 ViT-L/16 satellite SAT-493M (dinov3_vitl16_pretrain_sat493m-*.pth): 1024-d, 24 blocks, RoPE"),
    ("eva02-s", "eva02_small_patch14_224.mim_in22k", "foundation",
     "EVA02-S/14 MIM IN-22k (eva02_S_pt_in21k_p14.pt): 384-d, 12 blocks, RoPE, SwiGLU"),
    ("eva02-b", "eva02_base_patch14_224.mim_in22k", "foundation",
     "EVA02-B/14 MIM IN-22k (eva02_B_pt_in21k_p14.pt): 768-d, 12 blocks, RoPE, SwiGLU, sub-LN"),
    ("eva02-l", "eva02_large_patch14_224.mim_m38m", "foundation",
     "EVA02-L/14 MIM Merged-38M (eva02_L_pt_m38m_p14.pt, Rein's and GKD's EVA02): 1024-d, 24 blocks, RoPE"),
    ("dino-s16", "vit_small_patch16_224.dino", "local",
     "DINO ViT-S/16 (dino_deitsmall16_pretrain.pth): self-supervised on ImageNet-1k, 384-d, 12 blocks"),
    ("dino-b16", "vit_base_patch16_224.dino", "local",
     "DINO ViT-B/16 (dino_vitbase16_pretrain.pth): self-supervised on ImageNet-1k, 768-d, 12 blocks"),
    ("convnext-t", "convnext_tiny.fb_in1k", "local",
     "ConvNeXt-T ImageNet-1k (convnext_tiny_1k_224_ema.pth): CNN, 4 stages at strides 4-32"),
    ("convnext-s", "convnext_small.fb_in1k", "local",
     "ConvNeXt-S ImageNet-1k (convnext_small_1k_224_ema.pth): CNN, 4 stages at strides 4-32"),
    ("convnext-b", "convnext_base.fb_in1k", "local",
     "ConvNeXt-B ImageNet-1k (convnext_base_1k_224_ema.pth): CNN, 4 stages at strides 4-32"),
    ("resnet101", "resnet101.tv_in1k", "local",
     "ResNet-101 (torchvision resnet101-63fe2227.pth or timm): CNN, 4 stages at strides 4-32"),
)

#: the official GKD release's EVA02 F2F pairs (dg5): (pair name, teacher, student, description)
TIMM_PAIRS: tuple[tuple[str, str, str, str], ...] = (
    ("f2f-eva02-l-b", "eva02-l", "eva02-b", "EVA02-L -> EVA02-B (the official code's EVA02 F2F pair)"),
    ("f2f-eva02-b-s", "eva02-b", "eva02-s", "EVA02-B -> EVA02-S (the official code's EVA02 F2F pair)"),
)
