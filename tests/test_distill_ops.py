"""The shape plumbing shared by feature-distillation methods (kdbench/distill.py): token/map conversion, grid
matching, token masks, projection heads, feature-level lookup."""

import pytest
import torch
from torch import nn

from kdbench.distill import (
    first_samples_mask,
    layer_norm_linear,
    level_channels,
    map_to_tokens,
    random_token_mask,
    resize_to,
    student_patches_on_teacher_grid,
    tokens_to_map,
)
from kdbench.errors import UserError
from kdbench.models.segmentor import LightHead, Segmentor, SegOutput
from kdbench.models.zoo import MODELS


def segmentor(name: str) -> Segmentor:
    bb = MODELS.get(name).build_backbone(16)
    return Segmentor(bb, LightHead(bb.level_channels, 6))


# ---------------------------------------------------------------- tokens <-> maps


def test_tokens_to_map_is_row_major_and_round_trips():
    b, (h, w), c = 2, (3, 4), 5
    tokens = torch.arange(b * h * w * c, dtype=torch.float32).reshape(b, h * w, c)
    fmap = tokens_to_map(tokens, (h, w))
    assert fmap.shape == (b, c, h, w)
    for n in range(b):
        for i in range(h * w):
            y, x = divmod(i, w)  # token i lies at row i // w, column i % w
            for ch in range(c):
                assert fmap[n, ch, y, x] == tokens[n, i, ch]
    assert torch.equal(map_to_tokens(fmap), tokens)
    again = torch.randn(b, c, h, w)
    assert torch.equal(tokens_to_map(map_to_tokens(again), (h, w)), again)


def test_map_to_tokens_reads_rows_first():
    fmap = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # B1, C1, 2×2
    assert map_to_tokens(fmap).flatten().tolist() == [1.0, 2.0, 3.0, 4.0]


def test_tokens_to_map_refuses_a_grid_the_tokens_do_not_fill():
    with pytest.raises(ValueError, match="do not fill a 3×3 grid"):
        tokens_to_map(torch.zeros(1, 8, 2), (3, 3))


# ---------------------------------------------------------------- resampling


def test_resize_to_is_a_no_op_on_equal_sizes():
    fmap = torch.randn(2, 3, 4, 5)
    assert resize_to(fmap, (4, 5)) is fmap
    assert resize_to(fmap, torch.Size([4, 5])) is fmap


def test_resize_to_halving_averages_two_by_two_blocks():
    # bilinear, align_corners=False, factor 1/2: every output sample lies midway between four inputs
    fmap = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) ** 2
    out = resize_to(fmap, (2, 2))
    assert out.shape == (1, 1, 2, 2)
    for y in range(2):
        for x in range(2):
            block = [float(fmap[0, 0, 2 * y + dy, 2 * x + dx]) for dy in (0, 1) for dx in (0, 1)]
            assert float(out[0, 0, y, x]) == pytest.approx(sum(block) / 4)


def test_student_patches_pass_through_on_the_same_grid():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 17, 8, generator=gen)
    student = SegOutput(logits=None, features=[], tokens=tokens, num_prefix=1, grid=(4, 4))
    teacher = SegOutput(logits=None, features=[], tokens=torch.randn(2, 17, 4, generator=gen), num_prefix=1,
                        grid=(4, 4))
    out = student_patches_on_teacher_grid(student, teacher)
    assert torch.equal(out, tokens[:, 1:])  # CLS dropped, patches untouched


def test_student_patches_of_a_finer_grid_are_block_averaged_onto_the_teacher_grid():
    gen = torch.Generator().manual_seed(1)
    fine = torch.randn(1, 3, 4, 4, generator=gen)
    student = SegOutput(logits=None, features=[], tokens=map_to_tokens(fine), num_prefix=0, grid=(4, 4))
    teacher = SegOutput(logits=None, features=[], tokens=torch.zeros(1, 5, 2), num_prefix=1, grid=(2, 2))
    out = student_patches_on_teacher_grid(student, teacher)
    assert out.shape == (1, 4, 3)
    for i in range(4):
        y, x = divmod(i, 2)
        for c in range(3):
            block = [float(fine[0, c, 2 * y + dy, 2 * x + dx]) for dy in (0, 1) for dx in (0, 1)]
            assert float(out[0, i, c]) == pytest.approx(sum(block) / 4, abs=1e-6)


def test_cnn_map_is_resampled_to_the_teacher_grid():
    torch.manual_seed(2)
    cnn, vit = segmentor("tiny-resnet"), segmentor("tiny-vit-b")
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        s_out, t_out = cnn.eval()(images, with_logits=False), vit.eval()(images, with_logits=False)
    assert s_out.grid == (1, 1) and t_out.grid == (4, 4)  # stride 32 on a 16-pixel image: one cell
    out = student_patches_on_teacher_grid(s_out, t_out)
    assert out.shape == (2, 16, 512)
    # a single cell resampled bilinearly is the same vector at every teacher position
    assert torch.allclose(out, s_out.tokens[:, :1].expand(-1, 16, -1), atol=1e-6)


# ---------------------------------------------------------------- token masks


@pytest.mark.parametrize(("ratio", "tokens", "count"), [(0.5, 16, 8), (0.33, 10, 3), (0.37, 10, 3), (0.75, 7, 5),
                                                       (0.5, 49, 24)])
def test_random_token_mask_masks_exactly_floor_ratio_n_per_row(ratio, tokens, count):
    mask = random_token_mask(6, tokens, ratio, generator=torch.Generator().manual_seed(3))
    assert mask.shape == (6, tokens) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [count] * 6


def test_random_token_mask_rows_differ_and_the_generator_decides():
    mask = random_token_mask(8, 16, 0.5, generator=torch.Generator().manual_seed(4))
    assert len({tuple(row.tolist()) for row in mask}) > 1
    same = random_token_mask(8, 16, 0.5, generator=torch.Generator().manual_seed(4))
    other = random_token_mask(8, 16, 0.5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(mask, same) and not torch.equal(mask, other)


def test_random_token_mask_positions_are_spread_over_all_tokens():
    mask = random_token_mask(400, 8, 0.5, generator=torch.Generator().manual_seed(6))
    share = mask.float().mean(dim=0)  # every position masked about half the time
    assert float(share.min()) > 0.4 and float(share.max()) < 0.6


def test_random_token_mask_ratio_zero_and_one():
    assert not random_token_mask(3, 5, 0.0).any()
    assert random_token_mask(3, 5, 1.0).all()


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_random_token_mask_refuses_ratio_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match="mask ratio"):
        random_token_mask(2, 4, ratio)


@pytest.mark.parametrize(("batch", "masked"), [(2, 1), (3, 1), (4, 2), (5, 2), (1, 0)])
def test_first_samples_mask_masks_floor_p_b_leading_samples(batch, masked):
    mask = first_samples_mask(batch, 16, 0.5, 0.5, generator=torch.Generator().manual_seed(7))
    assert mask.shape == (batch, 16)
    assert mask.sum(dim=1).tolist() == [8] * masked + [0] * (batch - masked)


def test_first_samples_mask_probability_bounds():
    assert not first_samples_mask(4, 16, 0.0, 0.5).any()
    assert first_samples_mask(4, 16, 1.0, 0.25).sum(dim=1).tolist() == [4, 4, 4, 4]


# ---------------------------------------------------------------- heads and levels


def test_layer_norm_linear_is_layer_norm_then_linear():
    head = layer_norm_linear(6, 10)
    assert isinstance(head[0], nn.LayerNorm) and head[0].normalized_shape == (6,)
    assert isinstance(head[1], nn.Linear) and (head[1].in_features, head[1].out_features) == (6, 10)
    assert head[1].bias is not None and len(head) == 2
    assert head(torch.randn(2, 3, 6)).shape == (2, 3, 10)


def test_level_channels_indexes_like_python_and_refuses_out_of_range():
    cnn = MODELS.get("tiny-resnet").build_backbone(16)
    assert level_channels(cnn, -1, "x.level") == 512 and level_channels(cnn, 0, "x.level") == 64
    assert level_channels(cnn, -4, "x.level") == 64
    for bad in (4, -5):
        with pytest.raises(UserError, match=f"method.cwd.level={bad} is out of range .* 4 feature levels"):
            level_channels(cnn, bad, "method.cwd.level")
