"""Real-data batches for training stages and images for evaluation, through ``torch.utils.data.DataLoader``.

Training batches are resumable and identical whatever the number of workers: sample ``d`` of a stream (its draw
number) is image ``perm_e[d mod n]`` of epoch ``e = d div n``, with a permutation and an augmentation seeded by
(seed, epoch) and (seed, draw). A stream's state is the number of batches it has served. Under DDP each process
loads only its own slice of every global batch (the batch is marked as already sharded).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kdbench.data.real.pipeline import SegTrainTransform, images_transform, normalise, resize_for_test
from kdbench.engine.distributed import DistInfo
from kdbench.errors import UserError
from kdbench.method import Batch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class ImageItem:
    """One image (and its label file, where there is one) of a real split."""

    image: Path
    label: Path | None = None


def proxy_items(root: str) -> list[ImageItem]:
    """Every image under ``data.proxy_root`` (recursively, as an ImageNet ``train/<class>/*.JPEG`` folder)."""
    if not root:
        raise UserError("this stage trains on proxy images (GKD's stage 1a: ImageNet) and data.proxy_root is not "
                        "set; set it to a folder of unlabelled images, or run without the proxy stage")
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"data.proxy_root {folder} is not a folder")
    items = [ImageItem(p) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise UserError(f"data.proxy_root {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return items


class TrainImages(Dataset):
    """Training views of ``items``: labelled (:class:`SegTrainTransform`) or unlabelled (timm's stage-1 view).
    Indexed by ``(draw, index)`` so the augmentation depends on the draw number alone."""

    def __init__(self, items: list[ImageItem], read_image, read_label, crop: int, labelled: bool, seed: int,
                 scale_base: int = 512):
        self.items, self.read_image, self.read_label = items, read_image, read_label
        self.labelled, self.seed, self.crop = labelled, seed, crop
        self.seg = SegTrainTransform(crop, scale_base) if labelled else None
        self._images = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        draw, index = key
        item = self.items[index]
        rng = np.random.default_rng([self.seed, draw])
        image = self.read_image(item.image)
        if self.seg is not None:
            return self.seg(image, self.read_label(item.label), rng)
        if self._images is None:  # built lazily: timm's transform is not needed in processes that never use it
            self._images = images_transform(self.crop)
        return self._images(image, rng), torch.empty(0, dtype=torch.uint8)


class DrawSampler(Sampler):
    """Endless ``(draw, index)`` keys from global batch ``start`` on: this process's slice of each global batch."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int, info: DistInfo):
        self.size, self.batch_size, self.seed, self.start, self.info = size, batch_size, seed, start, info

    def __iter__(self) -> Iterator[tuple[int, int]]:
        local = self.batch_size // self.info.world
        epoch, perm = -1, None
        batch = self.start
        while True:
            first = batch * self.batch_size + self.info.rank * local
            for draw in range(first, first + local):
                if draw // self.size != epoch:
                    epoch = draw // self.size
                    perm = np.random.default_rng([self.seed, 1_000_003, epoch]).permutation(self.size)
                yield draw, int(perm[draw % self.size])
            batch += 1


class RealBatchStream:
    """Endless batches of one stage, resumable (``state_dict``: the count of batches served)."""

    def __init__(self, dataset: TrainImages, batch_size: int, seed: int, device: torch.device, workers: int,
                 info: DistInfo):
        self.dataset, self.batch_size, self.seed, self.device = dataset, batch_size, seed, device
        self.workers, self.info = workers, info
        self.served = 0
        self._iter: Iterator | None = None

    def _loader(self) -> Iterator:
        sampler = DrawSampler(len(self.dataset), self.batch_size, self.seed, self.served, self.info)
        loader = DataLoader(self.dataset, batch_size=self.batch_size // self.info.world, sampler=sampler,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=self.workers > 0, prefetch_factor=4 if self.workers else None)
        return iter(loader)

    def __iter__(self) -> RealBatchStream:
        return self

    def __next__(self) -> Batch:
        if self._iter is None:
            self._iter = self._loader()
        images, labels = next(self._iter)
        self.served += 1
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True).long() if self.dataset.labelled else None
        return Batch(images=images, labels=labels, meta={"sharded": self.info.enabled})

    def state_dict(self) -> dict[str, Any]:
        return {"served": self.served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.served = state["served"]
        self._iter = None


class EvalImages(Dataset):
    """A target or source split for scoring: the image resized by the dataset's test scale and normalised, the
    label at its own resolution (predictions are resized to it, as mmseg scores)."""

    def __init__(self, items: list[ImageItem], read_image, read_label, test_scale: tuple[int, int] | None):
        self.items, self.read_image, self.read_label, self.test_scale = items, read_image, read_label, test_scale

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[index]
        image = normalise(resize_for_test(self.read_image(item.image), self.test_scale))
        return image, torch.from_numpy(np.array(self.read_label(item.label), dtype=np.uint8))


def eval_loader(dataset: EvalImages, workers: int, device: torch.device) -> DataLoader:
    """One image at a time (sizes differ), decoded by ``workers`` processes ahead of the model."""
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
