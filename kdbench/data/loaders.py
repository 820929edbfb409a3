"""Batches for a method's stages: labelled source images, the same images without labels, proxy images."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any

import torch

from kdbench.data.synthetic import PretrainStream, Split, stable_seed, to_float
from kdbench.method import Batch

#: ``Batch.meta`` key of the ids of a batch's images within their :class:`FixedInputs` (a B-long int64 tensor)
INPUT_IDS = "input_ids"
#: data kinds whose batches are drawn from a fixed finite set (a split, each image as it is or flipped)
FIXED_KINDS = frozenset({"source", "source-images"})


class FixedInputs:
    """Every input a fixed-set stream can yield: each image of a split as it is (id ``2i``) or flipped
    horizontally (id ``2i + 1``), as :class:`BatchStream` draws them. A frozen teacher's outputs on these are the
    same at every draw, so they can be computed once (``kdbench.engine.teacher_cache``)."""

    def __init__(self, images: torch.Tensor, device: torch.device):
        self.images, self.device = images, device

    def __len__(self) -> int:
        return 2 * self.images.shape[0]

    def batch(self, ids: torch.Tensor) -> torch.Tensor:
        """The float images of ``ids``, exactly as a :class:`BatchStream` batch holds them."""
        ids = ids.cpu()
        images = self.images[ids // 2]
        flip = (ids % 2 == 1).view(-1, 1, 1, 1)
        return to_float(torch.where(flip, images.flip(-1), images)).to(self.device)

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the images' shape and bytes: what the set is, by content."""
        data = self.images.contiguous()
        digest = hashlib.sha256(f"{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(-1).numpy().tobytes())
        return digest.hexdigest()[:16]


class StageData:
    """Serves every data kind a :class:`~kdbench.method.Stage` may ask for, on ``device``.

    ``source`` batches walk the training split in seeded random order, epoch after epoch, with random horizontal
    flips. ``source-images`` are the same batches with labels withheld. ``proxy`` batches come from the proxy
    stream of the source's scene kind (the stand-in for ImageNet images), also without labels.
    """

    def __init__(self, train: Split, scene: str, image_size: int, device: torch.device):
        self.train, self.scene, self.image_size, self.device = train, scene, image_size, device
        self._fixed: FixedInputs | None = None

    def fixed_inputs(self, kind: str) -> FixedInputs | None:
        """The finite set ``kind``'s batches are drawn from, or ``None`` where every draw is new (``proxy``)."""
        if kind not in FIXED_KINDS:
            return None
        if self._fixed is None:
            self._fixed = FixedInputs(self.train.images, self.device)
        return self._fixed

    def batches(self, kind: str, batch_size: int, seed: int) -> BatchStream:
        return BatchStream(self, kind, batch_size, seed)

    def size(self, kind: str) -> int:
        """Images in one epoch of ``kind`` (the proxy stream is endless; its nominal epoch is the source's)."""
        return len(self.train)


class BatchStream:
    """An endless iterator of one stage's batches whose position can be saved and restored (``state_dict``), so a
    run resumed after a crash sees exactly the batches it would have seen."""

    def __init__(self, data: StageData, kind: str, batch_size: int, seed: int):
        self.data, self.kind, self.batch_size = data, kind, batch_size
        self.proxy = None
        if kind == "proxy":
            self.proxy = PretrainStream("proxy", (data.scene,), data.image_size, batch_size,
                                        seed=stable_seed(seed, kind))
        self.gen = torch.Generator().manual_seed(stable_seed("source-order", seed))
        self.order: torch.Tensor | None = None
        self.position = 0

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        device = self.data.device
        if self.proxy is not None:
            images, _ = self.proxy.next_batch()
            return Batch(images=to_float(images).to(device))
        n, size = len(self.data.train), self.batch_size
        if self.order is None or self.position + size > n:
            self.order, self.position = torch.randperm(n, generator=self.gen), 0
        idx = self.order[self.position:self.position + size]
        self.position += size
        images, labels = self.data.train.images[idx], self.data.train.labels[idx]
        flip = torch.rand(size, generator=self.gen) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        labels = torch.where(flip.view(-1, 1, 1), labels.flip(-1), labels)
        return Batch(images=to_float(images).to(device),
                     labels=labels.long().to(device) if self.kind == "source" else None,
                     meta={INPUT_IDS: 2 * idx + flip.long()})

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"gen": self.gen.get_state(), "order": self.order, "position": self.position}
        if self.proxy is not None:
            state["proxy"] = {"rng": self.proxy.rng.bit_generator.state, "gen": self.proxy.gen.get_state()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.order, self.position = state["order"], state["position"]
        if self.proxy is not None:
            self.proxy.rng.bit_generator.state = state["proxy"]["rng"]
            self.proxy.gen.set_state(state["proxy"]["gen"])
