"""What a run costs, as the paper table's cost columns report it: GFLOPs of one evaluation forward, and training
throughput in images per second.

**GFLOPs** are counted (:func:`kdbench.engine.flops.counted_flops`: matrix multiplies, convolutions and attention,
forward only) on one forward of the evaluated model (the student; the teacher in the teacher's own row) on one
image, fp32 with autocast off, at the evaluation input size (:func:`eval_input_size`): a square of
``data.image_size`` pixels under the whole-image protocol, and one sliding window (``crop`` pixels square, or the
image where it is smaller) under a sliding-window protocol (per window).
A sliding-window image costs this times its number of windows (a Cityscapes image at GKD's 512×1024 test scale:
3 windows of 512 at stride 341).

**Images per second** are the images a run's training stages drew (each stage's steps × its global batch size,
``kdbench.engine.trainer.stage_config``) over those stages' wall seconds (no pretraining, no evaluation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from kdbench.engine.evaluator import Protocol
from kdbench.engine.flops import counted_flops
from kdbench.engine.trainer import StageResult


def eval_input_size(protocol: Protocol, image_size: int, real: bool) -> int:
    """The side of the square input one evaluation forward sees: ``image_size`` for whole-image inference; for a
    sliding window its ``crop``, or ``image_size`` where synthetic images (never test-resized) are smaller than
    the window and so scored whole."""
    if protocol.mode != "slide":
        return image_size
    return protocol.crop if real else min(protocol.crop, image_size)


def forward_gflops(model: nn.Module, size: int) -> float:
    """GFLOPs of one forward of ``model`` on one ``size``×``size`` RGB image, fp32 with autocast off, in eval mode,
    through the module's own ``forward`` (a ``torch.compile``\\ d module is counted as written)."""
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, size, size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            flops = counted_flops(lambda: model.forward(image))
    finally:
        model.train(was_training)
    return flops / 1e9


def images_per_second(stages: Iterable[StageResult], batch_sizes: Mapping[str, int]) -> float | None:
    """Training images per second: the stages' steps × their batch sizes (``batch_sizes`` by stage name) over their
    wall seconds; None where no stage trained or no time was measured."""
    stages = list(stages)
    images = sum(s.steps * batch_sizes[s.name] for s in stages)
    seconds = sum(s.wall_s for s in stages)
    return images / seconds if images and seconds > 0 else None
