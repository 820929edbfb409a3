"""Optimiser and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(groups: dict[str, tuple[list[nn.Parameter], float]], weight_decay: float) -> list[dict]:
    """AdamW groups per named part (``name -> (params, lr)``); 1-D parameters (norms, biases, tokens) get no
    weight decay, as timm's optimiser factory does."""
    out = []
    for name, (params, lr) in groups.items():
        decay = [p for p in params if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in params if p.requires_grad and p.ndim <= 1]
        if decay:
            out.append({"name": name, "params": decay, "lr": lr, "initial_lr": lr, "weight_decay": weight_decay})
        if no_decay:
            out.append({"name": f"{name}.no_decay", "params": no_decay, "lr": lr, "initial_lr": lr,
                        "weight_decay": 0.0})
    return out


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the base LR at ``step`` (0-based) of ``total``: linear warm-up over a ``warmup`` fraction,
    then cosine to 0, poly (power 0.9) to 0, or constant."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    raise ValueError(f"unknown schedule {schedule!r}")
