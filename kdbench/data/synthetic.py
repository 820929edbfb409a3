"""Deterministic synthetic data: fixed splits of named domains and endless pretraining streams.

Splits are generated from a seed that depends on the scene kind, layout scale, split and image size, never on the
style: two domains with the same scenes share layouts image for image, so the score difference between them is the
appearance shift alone (as Potsdam RGB and Potsdam IRRG are the same tiles in other bands).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from kdbench.data.domains import Domain, sample_proxy_style, sample_randomised_style
from kdbench.data.render import render
from kdbench.data.scenes import LAYOUTS, SCENE_CLASSES

SPLIT_OFFSETS = {"train": 0, "val": 1}
RENDER_CHUNK = 256


def stable_seed(*parts: object) -> int:
    """A seed from any printable parts, stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Split:
    """Images (N×3×H×W uint8) and labels (N×H×W uint8, 255 = ignore) of one domain split."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return self.images.shape[0]


def make_split(domain: Domain, split: str, count: int, size: int, seed: int = 0) -> Split:
    """Render ``count`` images of ``domain``. Layouts depend on (scene, scale, split, size, seed); the rendering
    noise additionally on the domain name."""
    layout_rng = np.random.default_rng(stable_seed(domain.scene, domain.scale, split, size, seed))
    layouts = [LAYOUTS[domain.scene](size, layout_rng, domain.scale) for _ in range(count)]
    gen = torch.Generator().manual_seed(stable_seed("render", domain.name, split, size, seed))
    images = []
    for start in range(0, count, RENDER_CHUNK):
        chunk = layouts[start:start + RENDER_CHUNK]
        images.append(render(chunk, [domain.style] * len(chunk), domain.classes, gen))
    labels = torch.from_numpy(np.stack([lay.labels for lay in layouts]).astype(np.uint8))
    return Split(images=to_uint8(torch.cat(images)), labels=labels, classes=domain.classes)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to the float input every model sees: [0, 1] scaled, then centred at 0.5."""
    return images.float().div(255).sub(0.5).div(0.25)


class PretrainStream:
    """An endless, seeded stream of labelled batches over several scene kinds, for pretraining backbones.

    ``kind`` is ``randomised`` (broad domain randomisation that keeps away from ``exclude`` domains: the stand-in for
    a foundation model's web-scale data) or ``proxy`` (one narrow natural look: the stand-in for ImageNet). Labels
    of the scene kinds are stacked into one label space (``classes``), urban first.
    """

    def __init__(self, kind: str, scenes: tuple[str, ...], size: int, batch_size: int, seed: int,
                 exclude: list[Domain] | None = None):
        if kind not in ("randomised", "proxy"):
            raise ValueError(f"unknown stream kind {kind!r}")
        self.kind, self.scenes, self.size, self.batch_size = kind, scenes, size, batch_size
        self.exclude = exclude or []
        self.offsets = {}
        classes: list[str] = []
        for scene in scenes:
            self.offsets[scene] = len(classes)
            classes.extend(f"{scene}/{c}" for c in SCENE_CLASSES[scene])
        self.classes = tuple(classes)
        self.rng = np.random.default_rng(stable_seed("stream", kind, scenes, size, seed))
        self.gen = torch.Generator().manual_seed(stable_seed("stream-render", kind, scenes, size, seed))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        per_scene = np.array_split(np.arange(self.batch_size), len(self.scenes))
        images, labels = [], []
        for scene, idx in zip(self.scenes, per_scene, strict=True):
            layouts = [LAYOUTS[scene](self.size, self.rng, float(self.rng.uniform(0.7, 1.4))) for _ in idx]
            if self.kind == "randomised":
                styles = [sample_randomised_style(scene, self.rng, self.exclude) for _ in idx]
            else:
                styles = [sample_proxy_style(scene, self.rng) for _ in idx]
            images.append(render(layouts, styles, SCENE_CLASSES[scene], self.gen))
            labels.append(torch.from_numpy(np.stack([lay.labels for lay in layouts])) + self.offsets[scene])
        return to_uint8(torch.cat(images)), torch.cat(labels).to(torch.uint8)
