"""Render scene layouts into images in a given visual style.

A :class:`Style` is plain data: a 4-band (R, G, B, near-infrared) reflectance per class, the three bands shown as
the image's channels, photometric settings and weather. Every class also carries a fixed material texture
(windows on buildings, lane marks on roads, paving joints, foliage speckle) that styles scale but never remove:
texture and shape are the cues a style-invariant model can learn; colour is the cue that shifts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from kdbench.data.scenes import Layout

# Per class: (noise amplitude, noise cells across the image, pattern). Patterns are drawn in the renderer; every
# class has a material cue of its own, so a model that learns to ignore colour can still tell classes apart.
_MATERIALS = {
    "road": (0.04, 16, "lanes"),
    "sidewalk": (0.05, 16, "tiles"),
    "building": (0.06, 8, "windows"),
    "vegetation": (0.22, 24, None),
    "sky": (0.03, 4, "gradient"),
    "car": (0.04, 8, "glass"),
    "impervious surface": (0.05, 16, "lanes"),
    "low vegetation": (0.12, 16, None),
    "tree": (0.25, 32, None),
    "clutter": (0.1, 32, "checker"),
}


@dataclass(frozen=True)
class Style:
    """How a domain looks. ``palette`` maps class name to (R, G, B, NIR) reflectance in [0, 1]."""

    palette: dict[str, tuple[float, float, float, float]]
    bands: tuple[int, int, int] = (0, 1, 2)
    instance_jitter: float = 0.06
    texture: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    saturation: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: float = 0.0
    noise: float = 0.01
    fog: float = 0.0
    night: float = 0.0
    snow: float = 0.0
    rain: float = 0.0
    extra: dict = field(default_factory=dict)

    def with_(self, **changes) -> Style:
        return replace(self, **changes)


def _value_noise(batch: int, size: int, cells: int, gen: torch.Generator) -> torch.Tensor:
    cells = max(2, min(cells, size))
    coarse = torch.rand(batch, 1, cells, cells, generator=gen) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur; ``sigma`` in pixels, shape (B,). Images with sigma 0 pass through."""
    if float(sigma.max()) <= 0:
        return images
    radius = int(np.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)
    b, c, h, w = images.shape
    x = images.reshape(1, b * c, h, w)
    k = kernels.repeat_interleave(c, 0)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=b * c)
    out = x.reshape(b, c, h, w)
    keep = (sigma <= 0).view(b, 1, 1, 1)
    return torch.where(keep, images, out)


def render(layouts: list[Layout], styles: list[Style], classes: tuple[str, ...], gen: torch.Generator
           ) -> torch.Tensor:
    """Render layouts (one style each) to a float image batch B×3×H×W in [0, 1]."""
    b = len(layouts)
    size = layouts[0].labels.shape[0]
    labels = torch.from_numpy(np.stack([lay.labels for lay in layouts]))
    instance = torch.from_numpy(np.stack([lay.instance for lay in layouts]))
    depth = torch.from_numpy(np.stack([lay.depth for lay in layouts]))

    palette = torch.tensor([[s.palette[c] for c in classes] for s in styles], dtype=torch.float32)  # B×K×4
    img = torch.gather(palette, 1, labels.view(b, -1, 1).expand(-1, -1, 4)).view(b, size, size, 4)

    # Per-object colour jitter: one random offset per (image, instance id), shared by the object's pixels.
    n_inst = int(instance.max()) + 1
    jitter_sd = torch.tensor([s.instance_jitter for s in styles]).view(b, 1, 1)
    offsets = torch.randn(b, n_inst, 4, generator=gen) * jitter_sd
    offsets[:, 0] = 0
    img = img + torch.gather(offsets, 1, instance.view(b, -1, 1).expand(-1, -1, 4)).view(b, size, size, 4)

    # Materials: a fixed texture per class, scaled by the style's texture gain.
    texture_gain = torch.tensor([s.texture for s in styles]).view(b, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    shade = torch.zeros(b, size, size)
    unit = max(1, size // 32)
    for ci, name in enumerate(classes):
        amp, cells, pattern = _MATERIALS[name]
        mask = labels == ci
        if not bool(mask.any()):
            continue
        pat = amp * _value_noise(b, size, cells * size // 64 or cells, gen)
        if pattern == "windows":
            pat = pat - 0.25 * (((xs // unit) % 3 == 1) & ((ys // unit) % 3 == 1)).float()
        elif pattern == "tiles":
            pat = pat - 0.15 * (((xs // unit) % 4 == 0) | ((ys // unit) % 4 == 0)).float()
        elif pattern == "lanes":
            pat = pat + 0.35 * (((xs + ys) // unit) % 8 == 0).float()
        elif pattern == "gradient":
            pat = pat + 0.25 * (ys.float() / size)
        elif pattern == "checker":
            pat = pat + 0.3 * (((xs // (2 * unit)) + (ys // (2 * unit))) % 2).float() - 0.15
        elif pattern == "glass":
            pat = pat - 0.2 * ((ys // unit) % 3 == 0).float()
        shade = torch.where(mask, pat, shade)
    img = img + (shade * texture_gain)[..., None]

    img = img.clamp(0, 1)
    # Weather acts on reflectance before the band mapping, as real weather acts on the scene.
    img = _weather(img, labels, depth, styles, classes, gen)
    band_index = torch.tensor([s.bands for s in styles])  # B×3
    img = torch.gather(img, 3, band_index.view(b, 1, 1, 3).expand(-1, size, size, -1))
    img = img.permute(0, 3, 1, 2).contiguous()  # B×3×H×W
    img = _photometric(img, styles, gen)
    return img.clamp(0, 1)


def _weather(img: torch.Tensor, labels: torch.Tensor, depth: torch.Tensor, styles: list[Style],
             classes: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    b, size = img.shape[0], img.shape[1]
    fog = torch.tensor([s.fog for s in styles]).view(b, 1, 1, 1)
    night = torch.tensor([s.night for s in styles]).view(b, 1, 1, 1)
    snow = torch.tensor([s.snow for s in styles]).view(b, 1, 1, 1)
    rain = torch.tensor([s.rain for s in styles]).view(b, 1, 1, 1)
    if float(snow.max()) > 0:
        ground = torch.zeros_like(labels, dtype=torch.bool)
        for name in ("road", "sidewalk", "vegetation", "building", "car", "low vegetation", "tree"):
            if name in classes:
                ground |= labels == classes.index(name)
        cover = (snow * ground[..., None].float() * (0.5 + 0.5 * torch.rand(b, size, size, 1, generator=gen)))
        img = img * (1 - 0.8 * cover) + 0.9 * 0.8 * cover
        flakes = (torch.rand(b, size, size, 1, generator=gen) < 0.04 * snow).float()
        img = img * (1 - flakes) + flakes
    if float(rain.max()) > 0:
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        phase = torch.randint(0, 7, (b, 1, 1), generator=gen)
        streak = (((xs[None] + 2 * ys[None] + phase) % 7) == 0).float()
        streak = streak * (torch.rand(b, size, size, generator=gen) < 0.5).float()
        img = img * (1 - 0.35 * rain) + rain * 0.25 * streak[..., None]
    if float(fog.max()) > 0:
        veil = fog * depth[..., None].clamp(0, 1) ** 0.7
        img = img * (1 - veil) + 0.75 * veil
    if float(night.max()) > 0:
        dark = img * (1 - 0.8 * night)
        glow = torch.zeros(b, size, size, 1)
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        for _ in range(3):
            cy = torch.rand(b, 1, 1, generator=gen) * size * 0.7
            cx = torch.rand(b, 1, 1, generator=gen) * size
            r2 = (ys[None] - cy) ** 2 + (xs[None] - cx) ** 2
            glow = glow + torch.exp(-r2 / (2 * (size / 12) ** 2))[..., None]
        lamp = torch.tensor([1.0, 0.85, 0.5, 0.6])
        img = dark + night * 0.45 * glow * lamp
    return img.clamp(0, 1)


def _photometric(img: torch.Tensor, styles: list[Style], gen: torch.Generator) -> torch.Tensor:
    b = img.shape[0]

    def per_image(attr: str) -> torch.Tensor:
        return torch.tensor([getattr(s, attr) for s in styles], dtype=torch.float32).view(b, 1, 1, 1)

    tint = torch.tensor([s.tint for s in styles], dtype=torch.float32).view(b, 3, 1, 1)
    img = img * tint
    grey = img.mean(1, keepdim=True)
    img = grey + per_image("saturation") * (img - grey)
    mean = img.mean((1, 2, 3), keepdim=True)
    img = mean + per_image("contrast") * (img - mean)
    img = img.clamp(0, 1) ** per_image("gamma") * per_image("brightness")
    img = _gaussian_blur(img, torch.tensor([s.blur for s in styles], dtype=torch.float32))
    img = img + per_image("noise") * torch.randn(img.shape, generator=gen)
    return img
