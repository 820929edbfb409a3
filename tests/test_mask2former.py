"""The Mask2Former decode head (kdbench/models/mask2former.py) against its definition in gkd.md §4: shapes for ViT
and CNN readouts, the paper configuration's counts, the loss against the formulas of mmdet's Mask2FormerHead, the
ignore label, the semantic logits, and a real (tiny, seeded) learning run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdbench.errors import UserError
from kdbench.models.backbones import ViTBackbone
from kdbench.models.mask2former import (
    Mask2FormerHead,
    Mask2FormerOutput,
    readout_levels,
    semantic_targets,
)


def _maps(channels: list[int], sizes: list[int], batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=g) for c, s in zip(channels, sizes, strict=True)]


def test_vit_like_levels_give_stride_4_outputs():
    torch.manual_seed(0)
    head = Mask2FormerHead.tiny([24] * 4, num_classes=5, level_strides=[16] * 4)
    out = head(_maps([24] * 4, [4] * 4))  # a 64×64 input at patch 16
    assert out.logits.shape == (2, 5, 16, 16)
    assert len(out.class_logits) == len(out.mask_logits) == 3 + 1
    assert all(c.shape == (2, 8, 6) for c in out.class_logits)
    assert all(m.shape == (2, 8, 16, 16) for m in out.mask_logits)


def test_cnn_like_levels_pass_unchanged():
    torch.manual_seed(0)
    channels = [8, 16, 24, 40]
    head = Mask2FormerHead.tiny(channels, num_classes=3, level_strides=[4, 8, 16, 32])
    out = head(_maps(channels, [16, 8, 4, 2]))  # a 64×64 input
    assert out.logits.shape == (2, 3, 16, 16)
    assert out.mask_logits[-1].shape == (2, 8, 16, 16)
    assert out.class_logits[-1].shape == (2, 8, 4)


def test_vit_readout_is_reins_bilinear_resampling():
    """Rein ``DinoVisionTransformer.forward``: bilinear ×4, ×2, ×1, ×0.5 (align_corners=False) of the 4 maps."""
    maps = _maps([3] * 4, [6] * 4, batch=1)
    got = readout_levels(maps, [16] * 4)
    want = [F.interpolate(maps[0], scale_factor=4, mode="bilinear", align_corners=False),
            F.interpolate(maps[1], scale_factor=2, mode="bilinear", align_corners=False),
            maps[2],
            F.interpolate(maps[3], scale_factor=0.5, mode="bilinear", align_corners=False)]
    assert [g.shape[-1] for g in got] == [24, 12, 6, 3]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert readout_levels(maps, None)[0].shape[-1] == 24  # one grid, no strides given: patch 16 assumed
    cnn = _maps([3] * 4, [16, 8, 4, 2], batch=1)
    assert all(a is b for a, b in zip(readout_levels(cnn, [4, 8, 16, 32]), cnn, strict=True))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_configuration_counts_and_parameters(capsys):
    """gkd.md §4: 100 queries, 9 decoder layers (+ the query-only prediction = 10 supervised), 6 deformable layers,
    3 levels, 8 heads, 4 points, FFN 2048 / 1024. With the Rein/DINOv2 ViT (LayerScale and a mask token) the paper's
    Params column is 106.8M (ViT-B) and 41.9M (ViT-S), gkd.md §6."""
    torch.manual_seed(0)
    for width, heads, paper_total in ((768, 12, 106.8e6), (384, 6, 41.9e6)):
        head = Mask2FormerHead([width] * 4, num_classes=19, level_strides=[16] * 4)
        assert len(head.transformer.decoder.layers) == 9
        assert len(head.pixel_decoder.encoder.layers) == 6
        assert head.transformer.queries_features.num_embeddings == 100
        attn = head.pixel_decoder.encoder.layers[0].self_attn
        assert (attn.n_heads, attn.n_levels, attn.n_points) == (8, 3, 4)
        assert head.transformer.decoder.layers[0].fc1.out_features == 2048
        assert head.pixel_decoder.encoder.layers[0].fc1.out_features == 1024
        with torch.device("meta"):
            vit = ViTBackbone(img_size=512, patch_size=16, embed_dim=width, depth=12, num_heads=heads)
        layer_scale = 12 * 2 * width  # DINOv2 blocks' ls1/ls2, absent from the timm ViT
        total = _count(vit) + layer_scale + _count(head)
        with capsys.disabled():
            print(f"\nMask2Former head on {width}-d input, 19 classes: {_count(head) / 1e6:.3f}M parameters; "
                  f"with ViT: {total / 1e6:.3f}M (paper {paper_total / 1e6:.1f}M)")
        assert abs(total - paper_total) < 0.05e6
    out = head(_maps([384] * 4, [2] * 4, batch=1))
    assert len(out.class_logits) == 10 and out.class_logits[-1].shape == (1, 100, 20)


def _dense_centres(height: int, width: int):
    """All mask-pixel centres in [0, 1]² (x, y), in place of the random importance sampling."""
    ys, xs = torch.meshgrid((torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width,
                            indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], -1)[None]

    def sample(logits, *args, **kwargs):
        return centres.expand(logits.shape[0], -1, -1)
    return sample


def _bce(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def test_loss_matches_the_formulas_on_a_known_matching(monkeypatch):
    """Two images, K=3, Q=4, two supervised predictions. Query ``designated[k]`` is built to win class k, so the
    Hungarian matching is unambiguous; the loss is evaluated at every mask pixel. Expected, from mmdet's
    Mask2FormerHead: cls = 2·Σ_layers weighted-mean CE (no-object weight 0.1); mask = 5·Σ_layers Σ_matched
    mean-BCE / #masks; dice = 5·Σ_layers Σ_matched (1 - (2Σσt + 1)/(Σσ + Σt + 1)) / #masks."""
    num_classes, queries, size, up = 3, 4, 8, 4
    designated = {0: 3, 1: 0, 2: 1}  # class -> query; query 2 is meant to say "no object"
    coarse = torch.full((2, size, size), 255, dtype=torch.long)
    coarse[0, :, :3], coarse[0, :, 3:6] = 0, 2  # image 0: classes 0 and 2, two ignore columns
    coarse[1, 2:, :] = 1  # image 1: class 1 and two ignore rows
    labels = coarse.repeat_interleave(up, 1).repeat_interleave(up, 2)  # 32×32: constant on 4×4 blocks
    g = torch.Generator().manual_seed(0)
    class_logits, mask_logits = [], []
    for _ in range(2):
        cls = 0.5 * torch.randn(2, queries, num_classes + 1, generator=g)
        masks = 0.5 * torch.randn(2, queries, size, size, generator=g) - 3.0
        cls[:, 2, num_classes] += 6.0
        for k, q in designated.items():
            cls[:, q, k] += 6.0
            masks[:, q] += 6.0 * (coarse == k).float()
        class_logits.append(cls)
        mask_logits.append(masks)
    out = Mask2FormerOutput(logits=torch.zeros(2, num_classes, size, size), class_logits=class_logits,
                            mask_logits=mask_logits)
    head = Mask2FormerHead.tiny([32] * 4, num_classes)
    monkeypatch.setattr(head.criterion, "sample_points_using_uncertainty", _dense_centres(size, size))
    got = head.loss(out, labels)

    present = {0: [0, 2], 1: [1]}
    num_masks = 3
    want = {"cls": 0.0, "mask": 0.0, "dice": 0.0}
    for cls, masks in zip(class_logits, mask_logits, strict=True):
        cls, masks, lab = cls.double().numpy(), masks.double().numpy(), coarse.numpy()
        weighted_ce, weight_sum = 0.0, 0.0
        for b in range(2):
            target = {designated[k]: k for k in present[b]}
            for q in range(queries):
                y = target.get(q, num_classes)
                w = 1.0 if y < num_classes else 0.1
                log_softmax = cls[b, q] - np.log(np.exp(cls[b, q]).sum())
                weighted_ce += -w * log_softmax[y]
                weight_sum += w
            for k in present[b]:
                x, t = masks[b, designated[k]].ravel(), (lab[b] == k).astype(float).ravel()
                sig = 1 / (1 + np.exp(-x))
                want["mask"] += 5.0 * _bce(x, t).mean() / num_masks
                want["dice"] += 5.0 * (1 - (2 * (sig * t).sum() + 1) / (sig.sum() + t.sum() + 1)) / num_masks
        want["cls"] += 2.0 * weighted_ce / weight_sum
    for name in ("cls", "mask", "dice"):
        assert got[name].item() == pytest.approx(want[name], rel=1e-5), name


def test_ignore_pixels_are_in_no_target_mask():
    labels = torch.tensor([[[0, 0, 255, 1], [255, 255, 255, 1]]])
    classes, masks = semantic_targets(labels, num_classes=4)
    assert classes[0].tolist() == [0, 1]
    assert masks[0].tolist() == [[[1, 1, 0, 0], [0, 0, 0, 0]], [[0, 0, 0, 1], [0, 0, 0, 1]]]
    with pytest.raises(UserError, match="outside 0..3"):
        semantic_targets(torch.tensor([[[0, 7]]]), num_classes=4)


def test_ignore_pixels_never_pull_a_mask_up(monkeypatch):
    """A query predicting "on" exactly over the labelled region pays no more when the rest of the image is ignore
    than when it is labelled with another class: ignore is a negative, never a positive, for the mask terms."""
    size = 8
    coarse = torch.full((1, size, size), 255, dtype=torch.long)
    coarse[0, :4] = 0
    masks = torch.where(coarse == 0, 8.0, -8.0)[:, None].repeat(1, 2, 1, 1)
    cls = torch.tensor([[[8.0, -8.0, -8.0], [-8.0, -8.0, 8.0]]])
    out = Mask2FormerOutput(torch.zeros(1, 2, size, size), [cls], [masks])
    head = Mask2FormerHead.tiny([32] * 4, num_classes=2)
    monkeypatch.setattr(head.criterion, "sample_points_using_uncertainty", _dense_centres(size, size))
    with_ignore = head.loss(out, coarse)
    # every "on" pixel is labelled 0, so a mask term below 1e-2 means ignore pixels were scored as negatives
    assert with_ignore["mask"].item() < 1e-2 and with_ignore["dice"].item() < 1e-2
    flipped = head.loss(Mask2FormerOutput(out.logits, [cls], [-masks]), coarse)
    assert flipped["mask"].item() > 10 * with_ignore["mask"].item() + 1.0


def test_all_ignore_images_train_without_crashing():
    torch.manual_seed(0)
    head = Mask2FormerHead.tiny([16] * 4, num_classes=2, level_strides=[4] * 4)
    feats = _maps([16] * 4, [8] * 4)
    labels = torch.randint(0, 2, (2, 32, 32))
    labels[1] = 255
    terms = head.loss(head(feats), labels)
    sum(terms.values()).backward()
    assert all(torch.isfinite(v) for v in terms.values())
    head.zero_grad()
    terms = head.loss(head(feats), torch.full((2, 32, 32), 255))
    assert terms["mask"].item() == 0.0 and terms["dice"].item() == 0.0 and terms["cls"].item() > 0
    sum(terms.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in head.parameters())


def test_logits_are_the_normalised_mask_classification_product():
    torch.manual_seed(0)
    head = Mask2FormerHead.tiny([16] * 4, num_classes=3, level_strides=[16] * 4)
    out = head(_maps([16] * 4, [2] * 4))
    probs = out.logits.softmax(1)
    torch.testing.assert_close(probs.sum(1), torch.ones_like(probs[:, 0]))
    cls = out.class_logits[-1].detach().double().numpy()
    masks = out.mask_logits[-1].detach().double().numpy()
    cls_p = np.exp(cls) / np.exp(cls).sum(-1, keepdims=True)
    product = np.einsum("bqk,bqhw->bkhw", cls_p[..., :-1], 1 / (1 + np.exp(-masks)))
    want = product / product.sum(1, keepdims=True)
    np.testing.assert_allclose(probs.detach().double().numpy(), want, rtol=1e-5, atol=1e-7)


def test_logits_stay_finite_for_extreme_scores():
    from kdbench.models.mask2former import semantic_log_probs
    cls = torch.tensor([[[300.0, -300.0, 0.0], [-300.0, 300.0, 0.0]]])
    masks = torch.full((1, 2, 2, 2), -500.0)
    masks[0, 1, 0, 0] = -400.0  # query 1 (class 1) is the least unlikely at pixel (0, 0)
    log_probs = semantic_log_probs(cls, masks)
    assert torch.isfinite(log_probs).all()
    assert log_probs.argmax(1)[0, 0, 0].item() == 1


def test_tiny_head_learns_a_two_class_problem():
    """Disc vs background; features are a fixed random projection of the stride-4 class fractions plus noise."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(4, 16, 2, generator=g)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")

    def make(n):
        labels = torch.zeros(n, 64, 64, dtype=torch.long)
        for i in range(n):
            cy, cx = torch.randint(16, 48, (2,), generator=g).tolist()
            radius = torch.randint(8, 20, (1,), generator=g).item()
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2] = 1
        fractions = F.avg_pool2d(F.one_hot(labels, 2).permute(0, 3, 1, 2).float(), 4)
        feats = [torch.einsum("ck,bkhw->bchw", proj[i], fractions) + 0.3 * torch.randn(n, 16, 16, 16, generator=g)
                 for i in range(4)]
        return feats, labels

    def miou(head, feats, labels):
        with torch.no_grad():
            logits = F.interpolate(head(feats).logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1)
        return np.mean([((pred == c) & (labels == c)).sum().item() / ((pred == c) | (labels == c)).sum().item()
                        for c in range(2)])

    train_feats, train_labels = make(16)
    test_feats, test_labels = make(8)
    head = Mask2FormerHead.tiny([16] * 4, num_classes=2, level_strides=[4] * 4)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.05)
    losses = []
    for _ in range(40):
        idx = torch.randperm(16, generator=g)[:4]
        loss = sum(head.loss(head([f[idx] for f in train_feats]), train_labels[idx]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert miou(head, test_feats, test_labels) > 0.75  # chance (one class everywhere) is below 0.4


def test_unsupported_levels_raise_user_errors():
    with pytest.raises(UserError, match="4 backbone levels"):
        Mask2FormerHead.tiny([16] * 3, num_classes=2)
    with pytest.raises(UserError, match="strides 4/8/16/32"):
        Mask2FormerHead.tiny([16] * 4, num_classes=2, level_strides=[2, 4, 8, 16])
    with pytest.raises(UserError, match="multiple of 32"):
        Mask2FormerHead([16] * 4, num_classes=2, hidden_dim=48)
