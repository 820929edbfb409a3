"""Every timm family of the zoo, tiny and random, through the code path its real models take: the built-in's
timm name with width/depth overrides, a state dict in the family's official key layout (and in timm's) loaded
strictly, prefix tokens in timm's order, the mask token, and one GKD and one CWD step. No network, no weights."""

from __future__ import annotations

import pytest
import torch

from kdbench.errors import UserError
from kdbench.method import METHODS, Batch, RunContext
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.spec import ModelSpec
from kdbench.models.timm_specs import timm_spec
from kdbench.models.weights import load_pretrained
from kdbench.models.zoo import MODELS
from kdbench.testing.methods import check_gradient_flow
from kdbench.testing.zoo_weights import official_state, write_weights

SIZE, PATCH, CLASSES = 32, 8, 4
VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2}
TEACHER_VIT = {"embed_dim": 48, "depth": 4, "num_heads": 2}
#: family -> (the built-in model whose timm name the tiny config shares, tiny overrides, registers)
FAMILIES = {
    "dinov2-reg4": ("dinov2-s-reg4", VIT, 4),
    "dinov2-g": ("dinov2-g", VIT, 0),
    "dinov3": ("dinov3-s", VIT, 4),
    "dinov3-s-plus": ("dinov3-s-plus", VIT, 4),
    "dinov3-sat": ("dinov3-l-sat", VIT, 4),
    "eva02-s": ("eva02-s", VIT, 0),
    "eva02-b": ("eva02-b", VIT, 0),
    "dino": ("dino-s16", VIT, 0),
    "convnext": ("convnext-t", {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)}, 0),
    "resnet": ("resnet101", {"layers": (1, 1, 1, 1)}, 0),
}


def tiny(family: str, overrides: dict | None = None, name: str = "") -> ModelSpec:
    built_in, kwargs, _ = FAMILIES[family]
    real = MODELS.get(built_in)
    return timm_spec(name or f"tiny-{family}", real.kwargs["timm_name"], real.model_role, patch=PATCH,
                     kwargs=overrides or kwargs)


def segmentor(spec: ModelSpec) -> Segmentor:
    backbone = spec.build_backbone(SIZE)
    return Segmentor(backbone, LightHead(backbone.level_channels, CLASSES))


@pytest.mark.parametrize("family", FAMILIES)
def test_official_and_timm_layouts_load_strictly(family, tmp_path):
    spec = tiny(family)
    for layout, suffix in (("official", ".pth"), ("timm", ".safetensors")):
        path = write_weights(spec, tmp_path / f"{layout}{suffix}", layout)
        backbone = spec.build_backbone(SIZE)
        load_pretrained(spec, backbone, path)  # strict: raises on any key left over or missing
        model = backbone.vit if spec.arch == "vit" else backbone.net
        own = model.state_dict()
        if layout == "timm":
            from safetensors.torch import load_file

            written = load_file(str(path))
            assert all(torch.equal(own[k], written[k]) for k in own if k != "pos_embed")  # pos: resampled
    official = official_state(spec)
    if spec.arch == "vit" and "mask_token" in official:  # the release's mask token becomes the backbone's
        official["mask_token"] = torch.full_like(official["mask_token"], 0.5)
        torch.save(official, tmp_path / "masked.pth")
        backbone = spec.build_backbone(SIZE)
        load_pretrained(spec, backbone, tmp_path / "masked.pth")
        assert torch.all(backbone.mask_token == 0.5)


def test_patch_14_kernels_are_resampled_and_16_kept(tmp_path):
    eva = tiny("eva02-b")
    assert official_state(eva)["patch_embed.proj.weight"].shape[-1] == 14
    backbone = eva.build_backbone(SIZE)
    load_pretrained(eva, backbone, write_weights(eva, tmp_path / "eva.pth"))
    assert backbone.vit.patch_embed.proj.weight.shape[-1] == PATCH
    assert MODELS.get("eva02-l").kwargs["patch_size"] == 16 and MODELS.get("dinov2-g").kwargs["patch_size"] == 16
    assert "patch_size" not in MODELS.get("dinov3-l").kwargs  # native 16: nothing to resample


def test_a_file_of_another_family_names_the_keys(tmp_path):
    path = write_weights(tiny("dinov3"), tmp_path / "dinov3.pth")
    eva = tiny("eva02-b")
    with pytest.raises(UserError, match=r"for model tiny-eva02-b does not fit the model: missing keys .*"
                                        r"unexpected keys"):
        load_pretrained(eva, eva.build_backbone(SIZE), path)
    cnn = write_weights(tiny("convnext"), tmp_path / "convnext.pth")
    with pytest.raises(UserError, match="does not fit the model: missing keys"):
        load_pretrained(tiny("resnet"), tiny("resnet").build_backbone(SIZE), cnn)


@pytest.mark.parametrize("family", ["dinov2-reg4", "dinov3", "eva02-b"])
def test_cls_leads_and_registers_are_prefix_tokens(family):
    """What the first block sees: CLS at 0, the registers next, then the patches; outputs say so."""
    backbone = tiny(family).build_backbone(SIZE).eval()
    vit, registers = backbone.vit, FAMILIES[family][2]
    seen: dict[str, torch.Tensor] = {}

    def record(module, args, kwargs) -> None:
        seen.setdefault("x", args[0])

    vit.blocks[0].register_forward_pre_hook(record, with_kwargs=True)
    out = backbone(torch.randn(2, 3, SIZE, SIZE))
    cls = vit.cls_token[0, 0]
    if vit.pos_embed is not None and not vit.no_embed_class:
        cls = cls + vit.pos_embed[0, 0]
    assert torch.allclose(seen["x"][0, 0], cls)
    if registers:
        assert torch.allclose(seen["x"][0, 1:1 + registers], vit.reg_token[0])
    grid = (SIZE // PATCH) ** 2
    assert out.num_prefix == 1 + registers and out.tokens.shape[1] == 1 + registers + grid
    assert all(b.shape[1] == 1 + registers + grid for b in out.blocks)
    assert [f.shape[-2:] for f in out.features] == [torch.Size([SIZE // PATCH] * 2)] * len(out.features)


@pytest.mark.parametrize("family", ["dinov3", "eva02-s", "dinov2-reg4"])
def test_the_mask_token_replaces_masked_patches(family):
    backbone = tiny(family).build_backbone(SIZE).eval()
    images = torch.randn(1, 3, SIZE, SIZE)
    mask = torch.zeros(1, (SIZE // PATCH) ** 2, dtype=torch.bool)
    mask[0, :3] = True
    with torch.no_grad():
        backbone.mask_token.fill_(1.0)
        masked = backbone(images, mask=mask).tokens
        plain = backbone(images).tokens
        none = backbone(images, mask=torch.zeros_like(mask)).tokens
    assert torch.equal(plain, none) and not torch.allclose(plain, masked)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["gkd", "cwd"])
def test_one_gkd_and_one_cwd_step(family, method):
    """Each family as the student; a teacher of the same family (a ViT one: a tiny DINOv2-reg4 for CNNs)."""
    student = tiny(family)
    teacher = tiny(family if student.arch == "vit" else "dinov2-reg4", TEACHER_VIT, name="tiny-teacher")
    kind = "F2F" if student.model_role == "foundation" else "F2L"
    torch.manual_seed(0)
    built = METHODS.get(method)(segmentor(teacher), segmentor(student),
                                RunContext(kind, SIZE, CLASSES, torch.device("cpu")))
    gen = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(2, 3, SIZE, SIZE, generator=gen), torch.randint(0, CLASSES, (2, SIZE, SIZE),
                                                                              generator=gen))
    terms = check_gradient_flow(built, batch)
    assert terms and all(torch.isfinite(torch.tensor(v)) for v in terms.values())


@pytest.mark.parametrize("family", ["dinov3", "eva02-b", "dinov2-reg4"])
@pytest.mark.parametrize("method", ["proteus", "vitkd"])
def test_token_methods_on_rope_and_register_families(family, method):
    """Proteus's CLS term and mask token, ViTKD's prefix-free tokens and its mask token, on RoPE backbones and
    on register tokens: one step each."""
    torch.manual_seed(0)
    teacher, student = tiny(family, TEACHER_VIT, name="tiny-teacher"), tiny(family)
    built = METHODS.get(method)(segmentor(teacher), segmentor(student),
                                RunContext("F2F", SIZE, CLASSES, torch.device("cpu")))
    gen = torch.Generator().manual_seed(1)
    batch = Batch(torch.randn(2, 3, SIZE, SIZE, generator=gen), torch.randint(0, CLASSES, (2, SIZE, SIZE),
                                                                              generator=gen))
    check_gradient_flow(built, batch)
