"""Batches for a method's stages: labelled source images, the same images without labels, proxy images."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from kdbench.data.synthetic import PretrainStream, Split, stable_seed, to_float
from kdbench.method import Batch


class StageData:
    """Serves every data kind a :class:`~kdbench.method.Stage` may ask for, on ``device``.

    ``source`` batches walk the training split in seeded random order, epoch after epoch, with random horizontal
    flips. ``source-images`` are the same batches with labels withheld. ``proxy`` batches come from the proxy
    stream of the source's scene kind (the stand-in for ImageNet images), also without labels.
    """

    def __init__(self, train: Split, scene: str, image_size: int, device: torch.device):
        self.train, self.scene, self.image_size, self.device = train, scene, image_size, device

    def batches(self, kind: str, batch_size: int, seed: int) -> Iterator[Batch]:
        if kind == "proxy":
            stream = PretrainStream("proxy", (self.scene,), self.image_size, batch_size, seed=stable_seed(seed, kind))
            while True:
                images, _ = stream.next_batch()
                yield Batch(images=to_float(images).to(self.device))
        with_labels = kind == "source"
        gen = torch.Generator().manual_seed(stable_seed("source-order", seed))
        n = len(self.train)
        while True:
            order = torch.randperm(n, generator=gen)
            for start in range(0, n - batch_size + 1, batch_size):
                idx = order[start:start + batch_size]
                images, labels = self.train.images[idx], self.train.labels[idx]
                flip = torch.rand(batch_size, generator=gen) < 0.5
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
                labels = torch.where(flip.view(-1, 1, 1), labels.flip(-1), labels)
                yield Batch(images=to_float(images).to(self.device),
                            labels=labels.long().to(self.device) if with_labels else None)
