"""Device, precision, threads and seeding: the run-time facts every record states."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdbench.errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "cpu"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def resolve_runtime(device: str, amp: str, threads: int = 0) -> Runtime:
    """``device`` auto|cpu|cuda; ``amp`` auto (bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU)
    |off|bf16|fp16. ``threads`` > 0 sets torch's intra-op thread count."""
    if threads > 0:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is available here (use --device cpu or auto)")
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    if amp == "auto":
        dtype = None
        if dev.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif amp == "off":
        dtype = None
    elif amp == "fp16" and dev.type == "cpu":
        raise UserError("train.amp=fp16 needs a GPU; on CPU use bf16 or off")
    else:
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return Runtime(device=dev, amp_dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def apply_speed_options(method: torch.nn.Module, train: Any) -> None:
    """``train.channels_last``: CNN student and teacher weights in channels-last layout (faster convolutions on
    most GPUs and oneDNN CPUs). ``train.compile``: ``torch.compile`` the student and the teacher in place
    (``nn.Module.compile``: parameter names, state dicts and checkpoints stay as they are). Neither changes what
    a run computes beyond float rounding, so neither is part of a run's identity."""
    models = [method.student, method.teacher]
    if train.channels_last:
        for model in models:
            if getattr(model.backbone, "kind", "") == "cnn":
                model.to(memory_format=torch.channels_last)
    if train.compile:
        for model in models:
            if getattr(model, "_compiled_call_impl", None) is None:
                model.compile()
