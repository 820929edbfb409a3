"""The GKD paper's data pipelines on real images, as numpy arrays in and normalised tensors out.

* :class:`SegTrainTransform`: the stage-2 training recipe of every GKD/Rein experiment config (datasets.md §0):
  ``RandomChoiceResize`` (shortest edge ∈ base·{0.5, 0.6, …, 2.0}, long edge ≤ 2048, ``ResizeShortestEdge``) ->
  ``RandomCrop`` (crop², ``cat_max_ratio`` 0.75, up to 10 redraws) -> ``RandomFlip`` 0.5 -> mmseg's
  ``PhotoMetricDistortion`` -> ImageNet normalisation -> pad to crop² (image 0 after normalisation, label 255).
* :func:`images_transform`: the stage-1 view of unlabelled images (GKD's ``general_distillation``: timm's
  ``create_transform(is_training=True)`` with RandomResizedCrop(scale 0.08-1, bicubic), flip,
  RandAugment ``rand-m9-mstd0.5-inc1``, RandomErasing p 0.25 'pixel', gkd.md §3), built with timm itself.
* :func:`resize_for_test`: mmseg's ``Resize(scale, keep_ratio=True)`` of the test pipeline; labels are not resized
  (scoring is at label resolution).

Every random draw comes from a ``numpy`` generator (or, for timm's transform, seeded ``random``/``torch`` state
restored afterwards) derived from the sample's draw number, so a sample's augmentation is the same in any worker
and after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

IGNORE = 255
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
#: RandomChoiceResize's short-edge factors (GKD: ``int(512 * x * 0.1)`` for x = 5..20)
SCALE_FACTORS = tuple(x / 10 for x in range(5, 21))
MAX_LONG_EDGE = 2048


def normalise(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB -> 3×H×W float, ImageNet mean/std on 0..255 (GKD/Rein ``SegDataPreProcessor``)."""
    return torch.from_numpy(((image.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1).copy())


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size`` for ``Resize(scale, keep_ratio=True)``: the factor that fits the long side within
    max(scale) and the short side within min(scale); returns (new_h, new_w), rounded as mmcv does."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_for_test(image: np.ndarray, scale: tuple[int, int] | None) -> np.ndarray:
    """The test-time resize of an image (bilinear, as mmcv's ``imresize`` default); ``None`` keeps it."""
    if scale is None:
        return image
    h, w = rescale_size(*image.shape[:2], scale)
    if (h, w) == image.shape[:2]:
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def shortest_edge_size(height: int, width: int, short: int, max_long: int = MAX_LONG_EDGE) -> tuple[int, int]:
    """mmseg ``ResizeShortestEdge``: short edge to ``short`` unless that makes the long edge exceed ``max_long``."""
    factor = short / min(height, width)
    if max(height, width) * factor > max_long:
        factor = max_long / max(height, width)
    return int(height * factor + 0.5), int(width * factor + 0.5)


class SegTrainTransform:
    """The stage-2 (labelled) training view; see the module docstring. ``scale_base``: the short-edge base of the
    resize list (512 for all dg5 sources; 540 for ACDC as a source)."""

    def __init__(self, crop: int, scale_base: int = 512, cat_max_ratio: float = 0.75, photometric: bool = True):
        self.crop, self.cat_max_ratio, self.photometric = crop, cat_max_ratio, photometric
        self.scales = [int(scale_base * f) for f in SCALE_FACTORS]

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        short = self.scales[rng.integers(len(self.scales))]
        h, w = shortest_edge_size(*image.shape[:2], short)
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
        image, label = self.random_crop(image, label, rng)
        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.photometric:
            image = photometric_distortion(np.ascontiguousarray(image), rng)
        out = torch.zeros(3, self.crop, self.crop)
        target = torch.full((self.crop, self.crop), IGNORE, dtype=torch.uint8)
        ch, cw = label.shape
        out[:, :ch, :cw] = normalise(np.ascontiguousarray(image))
        target[:ch, :cw] = torch.from_numpy(np.ascontiguousarray(label))
        return out, target

    def random_crop(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
        """mmseg ``RandomCrop``: redraw up to 10 times while one class covers ≥ ``cat_max_ratio`` of the labelled
        pixels (the 10th draw is kept whatever it is)."""
        h, w = label.shape
        ch, cw = min(self.crop, h), min(self.crop, w)
        for _ in range(10):
            y = int(rng.integers(h - ch + 1))
            x = int(rng.integers(w - cw + 1))
            crop = label[y:y + ch, x:x + cw]
            if self.cat_max_ratio >= 1:
                break
            _, counts = np.unique(crop[crop != IGNORE], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` with its defaults: brightness ±32, contrast ×[0.5, 1.5] (before or after the
    HSV steps, at random), saturation ×[0.5, 1.5], hue ±18 (OpenCV's 0-180 hue); each step with probability 0.5."""

    def convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if rng.integers(2):
        image = convert(image, beta=rng.uniform(-32, 32))
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(0.5, 1.5))
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = convert(hsv[..., 1], alpha=rng.uniform(0.5, 1.5))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-18, 18))) % 180
        image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(0.5, 1.5))
    return image


def images_transform(size: int) -> Callable[[np.ndarray, np.random.Generator], torch.Tensor]:
    """The stage-1 view of an unlabelled image (GKD's timm ``create_transform``), seeded per sample."""
    from timm.data import create_transform

    transform = create_transform(size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25,
                                 re_mode="pixel", interpolation="bicubic", mean=tuple(MEAN / 255),
                                 std=tuple(STD / 255))
    for step in transform.transforms:
        for op in getattr(step, "ops", ()):
            if op.name == "PosterizeIncreasing":
                op.aug_fn = _posterize

    def apply(image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        seed = int(rng.integers(2**31))
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            torch.manual_seed(seed)
            out = transform(Image.fromarray(image))
        random.setstate(state)
        return out

    return apply


def _posterize(image: Image.Image, bits: int, **_: object) -> Image.Image:
    """timm's posterize at magnitude 10 keeps 0 bits: a black image under the Pillow GKD ran on, an error under
    Pillow ≥ 13; this keeps the old result."""
    if bits >= 1:
        return ImageOps.posterize(image, bits)
    return Image.new(image.mode, image.size)
