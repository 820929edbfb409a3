"""The paper's real teachers and students (gkd.md §3.1, §4, §6) at real size, loaded from local official files.

Each file is written here with random values in its format's documented key layout (DINOv2 release and chunked
training naming, timm DINOv2, DeiT release and timm, torchvision and timm ResNet-50), built from the architecture
numbers below and not from the converter or the model. Expectations for the resampled tensors are computed here
with ``F.interpolate`` as Rein's ``convert_dinov2_large_512x512.py`` does (bicubic, ``align_corners=False``, no
rescaling). One real-size build per architecture and one file per format are shared across the module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from kdbench.errors import UserError
from kdbench.models.weights import load_pretrained
from kdbench.models.zoo import MODELS, PAIRS

IMAGE = 512  # the paper's crop: a 32x32 grid at patch 16 (gkd.md §3.1)
GRID = IMAGE // 16
#: width, heads, blocks, stage-2 readout blocks (gkd.md §4, §6)
VITS = {
    "dinov2-s": (384, 6, 12, (3, 5, 7, 11)),
    "dinov2-b": (768, 12, 12, (3, 5, 7, 11)),
    "dinov2-l": (1024, 16, 24, (7, 11, 15, 23)),
    "deit-s": (384, 6, 12, (3, 5, 7, 11)),
    "deit-b": (768, 12, 12, (3, 5, 7, 11)),
}
RESNET50_LEVELS = [(256, 4), (512, 8), (1024, 16), (2048, 32)]  # channels, stride of layer1..layer4
PAIR_TABLE = {
    "f2f-dinov2-l-b": ("dinov2-l", "dinov2-b", "F2F"),
    "f2f-dinov2-b-s": ("dinov2-b", "dinov2-s", "F2F"),
    "f2l-dinov2-l-deit-b": ("dinov2-l", "deit-b", "F2L"),
    "f2l-dinov2-b-deit-s": ("dinov2-b", "deit-s", "F2L"),
    "f2l-dinov2-b-resnet50": ("dinov2-b", "resnet50", "F2L"),
}
#: which file layout each model's shared file is written in
FILE_LAYOUT = {"dinov2-l": "dinov2 release .pth", "dinov2-b": "timm dinov2 .safetensors",
               "dinov2-s": "dinov2 chunked .pth", "deit-b": "deit release .pth", "deit-s": "timm deit .safetensors",
               "resnet50": "torchvision .pth"}


# ---------------------------------------------------------------- official key layouts, from the formats' key names


def vit_layout(width: int, depth: int, *, kernel: int, prefix: tuple[str, ...], positions: int,
               layerscale: bool) -> dict[str, tuple[int, ...]]:
    """DINOv2 (facebookresearch/dinov2 ``DinoVisionTransformer``) / DeiT (timm ``VisionTransformer``) names."""
    shapes: dict[str, tuple[int, ...]] = {name: (1, 1, width) for name in prefix}
    shapes["pos_embed"] = (1, positions, width)
    shapes["patch_embed.proj.weight"] = (width, 3, kernel, kernel)
    shapes["patch_embed.proj.bias"] = (width,)
    for i in range(depth):
        block = {"norm1.weight": (width,), "norm1.bias": (width,), "attn.qkv.weight": (3 * width, width),
                 "attn.qkv.bias": (3 * width,), "attn.proj.weight": (width, width), "attn.proj.bias": (width,),
                 "norm2.weight": (width,), "norm2.bias": (width,), "mlp.fc1.weight": (4 * width, width),
                 "mlp.fc1.bias": (4 * width,), "mlp.fc2.weight": (width, 4 * width), "mlp.fc2.bias": (width,)}
        if layerscale:
            block |= {"ls1.gamma": (width,), "ls2.gamma": (width,)}
        shapes |= {f"blocks.{i}.{k}": v for k, v in block.items()}
    shapes |= {"norm.weight": (width,), "norm.bias": (width,)}
    return shapes


def dinov2_layout(name: str, mask_token: bool = True) -> dict[str, tuple[int, ...]]:
    """``dinov2_vit*14_pretrain.pth``: img 518 at patch 14, so 37x37 positions; timm's files lack the mask token."""
    width, _, depth, _ = VITS[name]
    shapes = vit_layout(width, depth, kernel=14, prefix=("cls_token",), positions=1 + 37 * 37, layerscale=True)
    return shapes | ({"mask_token": (1, width)} if mask_token else {})


def deit_layout(name: str, distilled: bool = True) -> dict[str, tuple[int, ...]]:
    """``deit_*_distilled_patch16_224``: 14x14 positions after the CLS and dist tokens, ImageNet heads."""
    width, _, depth, _ = VITS[name]
    prefix = ("cls_token", "dist_token") if distilled else ("cls_token",)
    shapes = vit_layout(width, depth, kernel=16, prefix=prefix, positions=len(prefix) + 14 * 14, layerscale=False)
    heads = ("head", "head_dist") if distilled else ("head",)
    return shapes | {f"{h}.{p}": s for h in heads for p, s in (("weight", (1000, width)), ("bias", (1000,)))}


def resnet50_layout(batches_tracked: bool = True) -> dict[str, tuple[int, ...]]:
    """torchvision ``resnet50`` names (timm's are the same): bottlenecks [3, 4, 6, 3], expansion 4, ``fc``."""

    def bn(name: str, c: int) -> dict[str, tuple[int, ...]]:
        out = {f"{name}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")}
        return out | ({f"{name}.num_batches_tracked": ()} if batches_tracked else {})

    shapes = {"conv1.weight": (64, 3, 7, 7)} | bn("bn1", 64)
    channels = 64
    for layer, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}."
            shapes |= {p + "conv1.weight": (width, channels, 1, 1)} | bn(p + "bn1", width)
            shapes |= {p + "conv2.weight": (width, width, 3, 3)} | bn(p + "bn2", width)
            shapes |= {p + "conv3.weight": (4 * width, width, 1, 1)} | bn(p + "bn3", 4 * width)
            if b == 0:
                shapes |= {p + "downsample.0.weight": (4 * width, channels, 1, 1)} | bn(p + "downsample.1", 4 * width)
            channels = 4 * width
    return shapes | {"fc.weight": (1000, 2048), "fc.bias": (1000,)}


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif re.search(r"norm\d?\.weight$", key):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def chunked(state: dict[str, torch.Tensor], chunks: int, depth: int) -> dict[str, torch.Tensor]:
    """DINOv2's ``block_chunks``: block i sits in chunk i // (depth / chunks) under its global index."""
    size = depth // chunks
    return {re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{int(m[1]) // size}.{m[1]}.", k): v
            for k, v in state.items()}


def test_written_layouts_match_the_libraries_models_of_those_names():
    """The hand-written layouts equal the key/shape sets of timm's and torchvision's own models (timm's DINOv2 is
    Meta's release without the mask token)."""
    import timm

    tv_models = pytest.importorskip("torchvision.models")

    def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    assert shapes(timm.create_model("vit_small_patch14_dinov2")) == dinov2_layout("dinov2-s", mask_token=False)
    assert shapes(timm.create_model("deit_small_distilled_patch16_224")) == deit_layout("deit-s")
    assert shapes(timm.create_model("deit_small_patch16_224")) == deit_layout("deit-s", distilled=False)
    assert shapes(tv_models.resnet50()) == resnet50_layout()


# ---------------------------------------------------------------- expected model tensors, computed independently


def bicubic(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps.float(), size=size, mode="bicubic", align_corners=False)


def expected_vit(file: dict[str, torch.Tensor], prefix: int) -> dict[str, torch.Tensor]:
    """The backbone state a file should give: kernel 14 -> 16 and positions -> 32x32 as Rein, CLS position kept,
    dist token / heads dropped, mask token zero when the file has none."""
    width = file["cls_token"].shape[-1]
    out = {"vit." + k: v for k, v in file.items()
           if k not in ("mask_token", "dist_token") and not k.startswith(("head.", "head_dist."))}
    out["mask_token"] = file.get("mask_token", torch.zeros(1, width))
    kernel = file["patch_embed.proj.weight"]
    if kernel.shape[-1] != 16:
        out["vit.patch_embed.proj.weight"] = bicubic(kernel, (16, 16))
    pos = file["pos_embed"]
    side = round((pos.shape[1] - prefix) ** 0.5)
    grid = pos[:, prefix:].reshape(1, side, side, width).permute(0, 3, 1, 2)
    patches = bicubic(grid, (GRID, GRID)).permute(0, 2, 3, 1).reshape(1, GRID * GRID, width)
    out["vit.pos_embed"] = torch.cat([pos[:, :1], patches], dim=1)
    return out


def expected_resnet(file: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"net." + k: v for k, v in file.items() if not k.startswith("fc.")}


# ---------------------------------------------------------------- shared real-size models and files


@dataclass
class Loaded:
    backbone: nn.Module
    file: dict[str, torch.Tensor]  # the file's tensors, in the flat (non-chunked) naming
    expected: dict[str, torch.Tensor]
    path: Path


class RealModels:
    """Each architecture built once at real size and loaded once from its format's file."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cache: dict[str, Loaded] = {}

    def get(self, name: str) -> Loaded:
        if name not in self.cache:
            self.cache[name] = self._load(name)
        return self.cache[name]

    def _load(self, name: str) -> Loaded:
        seed = sorted(FILE_LAYOUT).index(name)
        if name == "dinov2-l":
            file = random_state(dinov2_layout(name), seed)
            path = self.folder / "dinov2_vitl14_pretrain.pth"
            torch.save(file, path)
            expected = expected_vit(file, prefix=1)
        elif name == "dinov2-b":
            file = random_state(dinov2_layout(name, mask_token=False), seed)
            path = self.folder / "vit_base_patch14_dinov2.safetensors"
            save_file(file, str(path))
            expected = expected_vit(file, prefix=1)
        elif name == "dinov2-s":
            file = random_state(dinov2_layout(name), seed)
            # a kernel constant over each 14x14 window: resampling must keep every window at its constant
            file["patch_embed.proj.weight"] = torch.randn(384, 3, 1, 1).expand(384, 3, 14, 14).contiguous()
            path = self.folder / "dinov2_vits14_chunked.pth"
            torch.save(chunked(file, chunks=4, depth=12), path)
            expected = expected_vit(file, prefix=1)
        elif name == "deit-b":
            file = random_state(deit_layout(name), seed)
            path = self.folder / "deit_base_distilled_patch16_224-df68dfff.pth"
            torch.save({"model": file}, path)
            expected = expected_vit(file, prefix=2)
        elif name == "deit-s":
            file = random_state(deit_layout(name), seed)
            path = self.folder / "deit_small_distilled_patch16_224.safetensors"
            save_file(file, str(path))
            expected = expected_vit(file, prefix=2)
        else:
            file = random_state(resnet50_layout(), seed)
            path = self.folder / "resnet50-11ad3fa6.pth"
            torch.save(file, path)
            expected = expected_resnet(file)
        spec = MODELS.get(name)
        backbone = spec.build_backbone(IMAGE).eval()
        load_pretrained(spec, backbone, path)
        return Loaded(backbone, file, expected, path)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> RealModels:
    return RealModels(tmp_path_factory.mktemp("official-weights"))


def assert_state(backbone: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = backbone.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value.to(state[key].dtype), rtol=0, atol=1e-6, msg=key)


# ---------------------------------------------------------------- the zoo


def test_zoo_names_the_real_models_and_pairs():
    for name, (width, heads, depth, readout) in VITS.items():
        spec = MODELS.get(name)
        assert (spec.arch, spec.pretrain, spec.weights_format) == ("vit", "file", name.split("-")[0])
        kw = spec.kwargs
        assert (kw["embed_dim"], kw["num_heads"], kw["depth"], kw["patch_size"]) == (width, heads, depth, 16)
        assert tuple(kw["out_indices"]) == readout
        assert kw.get("init_values") == (1e-5 if name.startswith("dinov2") else None)
    cnn = MODELS.get("resnet50")
    assert (cnn.arch, cnn.pretrain, cnn.weights_format, cnn.kwargs["timm_name"]) == ("cnn", "file", "timm-cnn",
                                                                                     "resnet50")
    for name, (teacher, student, kind) in PAIR_TABLE.items():
        pair = PAIRS.get(name)
        assert (pair.teacher, pair.student, pair.kind) == (teacher, student, kind)
    for name in ("synth-vit-b", "synth-deit-s", "tiny-vit-b", "tiny-resnet"):  # the synthetic zoo is untouched
        spec = MODELS.get(name)
        assert spec.pretrain in ("randomised", "proxy") and spec.weights_format is None
        assert "init_values" not in spec.kwargs
    assert not any("ls1" in k for k in MODELS.get("synth-vit-b").build_backbone(32).state_dict())


def test_synthetic_models_cannot_load_a_weight_file(tmp_path):
    spec = MODELS.get("tiny-vit-s")
    with pytest.raises(UserError, match="tiny-vit-s is not loaded from a weight file"):
        load_pretrained(spec, spec.build_backbone(16), tmp_path / "x.pth")


@pytest.mark.parametrize("name", list(VITS))
def test_real_vits_are_dinov2_style(real, name):
    vit = real.get(name).backbone.vit
    norms = [m for m in vit.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * VITS[name][2] + 1 and all(m.eps == 1e-6 for m in norms)
    assert vit.num_prefix_tokens == 1 and vit.cls_token is not None and vit.reg_token is None
    assert all(b.attn.qkv.bias is not None for b in vit.blocks)
    assert vit.patch_embed.proj.kernel_size == (16, 16) and tuple(vit.patch_embed.grid_size) == (GRID, GRID)
    layerscale = {type(b.ls1).__name__ for b in vit.blocks} | {type(b.ls2).__name__ for b in vit.blocks}
    assert layerscale == ({"LayerScale"} if name.startswith("dinov2") else {"Identity"})


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("name", list(FILE_LAYOUT))
def test_loaded_tensors_equal_the_file_with_rein_resampling(real, name):
    loaded = real.get(name)
    assert_state(loaded.backbone, loaded.expected)
    if name.startswith("dinov2"):
        assert loaded.backbone.vit.pos_embed.shape == (1, 1 + GRID * GRID, VITS[name][0])
    if name == "dinov2-l":  # the release's trained mask token is kept
        assert torch.equal(loaded.backbone.mask_token, loaded.file["mask_token"])
    if name == "dinov2-b":  # timm files have none: GKD's zero init
        assert not loaded.backbone.mask_token.any()


def test_resampled_constant_kernel_stays_the_same_constant(real):
    loaded = real.get("dinov2-s")
    kernel = loaded.backbone.vit.patch_embed.proj.weight
    constants = loaded.file["patch_embed.proj.weight"][:, :, :1, :1]
    assert kernel.shape == (384, 3, 16, 16)
    torch.testing.assert_close(kernel, constants.expand(384, 3, 16, 16), rtol=0, atol=1e-6)  # not rescaled


def test_non_distilled_deit_file_loads(real, tmp_path):
    file = random_state(deit_layout("deit-s", distilled=False), seed=99)
    path = tmp_path / "deit_small_patch16_224.pth"
    torch.save({"model": file}, path)
    backbone = MODELS.get("deit-s").build_backbone(IMAGE)
    load_pretrained(MODELS.get("deit-s"), backbone, path)
    assert_state(backbone, expected_vit(file, prefix=1))


def test_timm_resnet_file_without_batch_counters_loads(real, tmp_path):
    file = random_state(resnet50_layout(batches_tracked=False), seed=7)
    path = tmp_path / "resnet50.a1_in1k.safetensors"
    save_file(file, str(path))
    backbone = real.get("resnet50").backbone
    load_pretrained(MODELS.get("resnet50"), backbone, path)
    state = backbone.state_dict()
    assert all(state["net." + k].equal(v) for k, v in file.items() if not k.startswith("fc."))
    assert all(v.item() == 0 for k, v in state.items() if k.endswith("num_batches_tracked"))
    load_pretrained(MODELS.get("resnet50"), backbone, real.get("resnet50").path)  # back to the shared file


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("name", list(FILE_LAYOUT))
def test_forward_at_a_small_input_gives_the_levels(real, name):
    backbone = real.get(name).backbone
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    if name == "resnet50":
        assert [tuple(f.shape) for f in out.features] == [(1, c, 64 // s, 96 // s) for c, s in RESNET50_LEVELS]
        return
    width, _, depth, readout = VITS[name]
    assert out.grid == (4, 6) and out.num_prefix == 1 and len(out.blocks) == depth
    assert out.tokens.shape == (1, 1 + 4 * 6, width)
    assert [tuple(f.shape) for f in out.features] == [(1, width, 4, 6)] * 4
    for level, block in zip(out.features, readout, strict=True):  # un-normalised outputs of the readout blocks
        raw = out.blocks[block][:, 1:].transpose(1, 2).reshape(1, width, 4, 6)
        assert torch.equal(level, raw)


def reference_vit(state: dict[str, torch.Tensor], images: torch.Tensor, heads: int) -> tuple[list, torch.Tensor]:
    """DINOv2's ViT forward written out (facebookresearch/dinov2 ``Block``: x + ls1(attn(norm1(x))), x +
    ls2(mlp(norm2(x))), exact GELU, LN eps 1e-6); a block without ``ls*.gamma`` adds the branch unscaled (DeiT)."""
    x = F.conv2d(images, state["vit.patch_embed.proj.weight"], state["vit.patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    b, n, c = x.shape
    x = torch.cat([state["vit.cls_token"].expand(b, 1, c), x], dim=1) + state["vit.pos_embed"]
    blocks, i = [], 0
    while f"vit.blocks.{i}.norm1.weight" in state:
        p = f"vit.blocks.{i}."

        def norm(t: torch.Tensor, which: str, p: str = p) -> torch.Tensor:
            return F.layer_norm(t, (c,), state[p + which + ".weight"], state[p + which + ".bias"], eps=1e-6)

        qkv = F.linear(norm(x, "norm1"), state[p + "attn.qkv.weight"], state[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n + 1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
        a = F.linear((attn @ v).transpose(1, 2).reshape(b, n + 1, c), state[p + "attn.proj.weight"],
                     state[p + "attn.proj.bias"])
        x = x + a * state.get(p + "ls1.gamma", 1.0)
        h = F.gelu(F.linear(norm(x, "norm2"), state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"]) * state.get(p + "ls2.gamma", 1.0)
        blocks.append(x)
        i += 1
    tokens = F.layer_norm(x, (c,), state["vit.norm.weight"], state["vit.norm.bias"], eps=1e-6)
    return blocks, tokens


@pytest.mark.parametrize("name", ["dinov2-s", "deit-s"])
def test_forward_matches_the_dinov2_block_written_out(real, name):
    loaded = real.get(name)
    images = torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    state = {k: v.double() if v.is_floating_point() else v for k, v in loaded.expected.items()}
    with torch.no_grad():
        out = loaded.backbone(images)
        blocks, tokens = reference_vit(state, images.double(), heads=VITS[name][1])
    # The reference runs in float64; float32 rounding in the model grows with the residual stream's scale (DeiT's
    # reaches 100, DINOv2's 240), so the absolute bound is 1e-5 of each block's largest value (the model stays
    # within 3e-6 of it; the tanh GELU in place of the exact one puts the final tokens 7e-4 off, and fails).
    torch.testing.assert_close(out.tokens, tokens.float(), rtol=1e-4, atol=1e-4)
    for got, want in zip(out.blocks, blocks, strict=True):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("pair", list(PAIR_TABLE))
def test_every_pair_loads_teacher_and_student(real, pair):
    teacher, student, _ = PAIR_TABLE[pair]
    t, s = real.get(teacher).backbone, real.get(student).backbone
    assert t.width == VITS[teacher][0] and t.level_channels == [VITS[teacher][0]] * 4
    if student == "resnet50":
        assert s.level_channels == [c for c, _ in RESNET50_LEVELS] and s.level_strides == [4, 8, 16, 32]
    else:
        assert s.width == VITS[student][0] < t.width and s.level_strides == [16] * 4


# ---------------------------------------------------------------- errors


def unchanged(loaded: Loaded) -> bool:
    state = loaded.backbone.state_dict()
    return all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in loaded.expected.items())


def test_missing_file_is_a_user_error(real, tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=f"weights file {re.escape(str(path))} does not exist"):
        load_pretrained(MODELS.get("deit-s"), real.get("deit-s").backbone, path)


def test_another_models_file_names_the_file_model_and_keys(real):
    base, large = real.get("dinov2-b"), real.get("dinov2-l")
    with pytest.raises(UserError) as err:
        load_pretrained(MODELS.get("dinov2-l"), large.backbone, base.path)
    message = str(err.value)
    assert str(base.path) in message and "for model dinov2-l" in message
    assert "missing keys blocks.12.attn.proj.bias" in message
    assert re.search(r"shape mismatch at blocks\.0\.\S+: file \(768.*\), model \(1024", message)
    assert unchanged(large)


def test_deit_file_for_dinov2_and_dinov2_file_for_deit(real, tmp_path):
    with pytest.raises(UserError) as err:
        load_pretrained(MODELS.get("dinov2-b"), real.get("dinov2-b").backbone, real.get("deit-b").path)
    assert str(real.get("deit-b").path) in str(err.value) and "missing keys blocks.0.ls1.gamma" in str(err.value)
    assert "unexpected keys dist_token, head.bias, head.weight" in str(err.value)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(real.get("dinov2-s").file, path)
    with pytest.raises(UserError, match="for model deit-s does not fit the model: unexpected keys blocks.0.ls1.gamma"):
        load_pretrained(MODELS.get("deit-s"), real.get("deit-s").backbone, path)
    assert unchanged(real.get("dinov2-b")) and unchanged(real.get("deit-s"))


@pytest.mark.parametrize(("name", "key"), [("deit-s", "blocks.5.mlp.fc2.weight"), ("dinov2-s", "blocks.7.ls2.gamma"),
                                           ("resnet50", "layer4.2.bn3.running_var")])
def test_file_missing_a_key_names_it(real, tmp_path, name, key):
    loaded = real.get(name)
    file = {k: v for k, v in loaded.file.items() if k != key}
    path = tmp_path / f"{name}-missing.pth"
    torch.save(file, path)
    with pytest.raises(UserError, match=rf"weights file {re.escape(str(path))} .* for model {name} does not fit "
                                        rf"the model: missing keys {re.escape(key)}$"):
        load_pretrained(MODELS.get(name), loaded.backbone, path)
    assert unchanged(loaded)
