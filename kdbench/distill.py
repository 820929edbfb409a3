"""Shape plumbing shared by feature-distillation methods: token/map conversion, grid matching, token masks.

Student and teacher rarely agree on shape: a ViT gives B×N×C tokens, a CNN B×C×h×w maps at another stride. Every
method resolves that the same way, here: the student's map is resampled bilinearly to the teacher's grid, and
tokens are maps flattened row by row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.errors import UserError
from kdbench.models.segmentor import SegOutput


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """B×N×C patch tokens (row-major) -> B×C×h×w."""
    b, n, c = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} tokens do not fill a {grid[0]}×{grid[1]} grid")
    return tokens.transpose(1, 2).reshape(b, c, *grid)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """B×C×h×w -> B×(h·w)×C, row-major."""
    return feature_map.flatten(2).transpose(1, 2)


def resize_to(feature_map: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resampling to ``size`` (a no-op when it already has it)."""
    if tuple(feature_map.shape[-2:]) == tuple(size):
        return feature_map
    return F.interpolate(feature_map, size=tuple(size), mode="bilinear", align_corners=False)


def tokens_on_grid(patches: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """B×N×C patch tokens lying on ``grid`` moved to ``target``: untouched when the grids agree, else made a map,
    resampled bilinearly and flattened again."""
    if tuple(grid) == tuple(target):
        return patches
    return map_to_tokens(resize_to(tokens_to_map(patches, grid), target))


def student_patches_on_teacher_grid(student: SegOutput, teacher: SegOutput) -> torch.Tensor:
    """The student's final patch tokens on the teacher's token grid, B×N_t×C_s (a CNN's stride-32 map or another
    patch size resampled, see :func:`tokens_on_grid`)."""
    return tokens_on_grid(student.patch_tokens, student.grid, teacher.grid)


def random_token_mask(batch: int, tokens: int, ratio: float, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """B×N bool mask with exactly ``floor(ratio·N)`` True entries per row, at uniformly random positions
    (argsort of uniform noise; the count is Proteus's and GKD's ``int(N · ratio)``)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1], not {ratio}")
    count = int(math.floor(ratio * tokens))
    noise = torch.rand(batch, tokens, generator=generator, device="cpu").to(device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < count


def first_samples_mask(batch: int, tokens: int, probability: float, ratio: float,
                       device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
    """B×N bool mask: the first ``floor(probability·B)`` samples each get ``floor(ratio·N)`` masked tokens at
    uniformly random positions, the rest none (Proteus's and GKD's ``--mask_first_n`` collation; batches are
    already shuffled, so the first samples are a random subset)."""
    masked = int(math.floor(probability * batch))
    mask = torch.zeros(batch, tokens, dtype=torch.bool, device=device)
    if masked:
        mask[:masked] = random_token_mask(masked, tokens, ratio, device, generator)
    return mask


def layer_norm_linear(in_dim: int, out_dim: int) -> nn.Sequential:
    """The LayerNorm -> Linear projection head of Proteus and GKD's MSE ablation."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


def level_channels(backbone: nn.Module, level: int, setting: str) -> int:
    """Channels of ``backbone``'s multi-level feature ``level`` (Python indexing, -1 = deepest); a ``UserError``
    naming ``setting`` when the level does not exist."""
    channels = backbone.level_channels
    if not -len(channels) <= level < len(channels):
        raise UserError(f"{setting}={level} is out of range for a backbone with {len(channels)} feature levels")
    return channels[level]


def labels_to_grid(labels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """B×H×W integer labels -> B×h×w by nearest neighbour: output cell (i, j) takes the label at
    ``(floor(i·H/h), floor(j·W/w))`` (``F.interpolate(mode="nearest")``, the way IFVD and CIRKD bring labels to a
    feature grid). Every value is kept as it is, so 255 (ignore) stays 255 and nothing new appears; a no-op when
    the labels already have ``size``."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")
    return resized[:, 0].to(labels.dtype)
