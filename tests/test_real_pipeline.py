"""The real-data pipelines: GKD/Rein's train recipe, the test resize, resumable streams, per-stage settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.config import Config, TrainConfig, apply_set, validate
from kdbench.data.real.pipeline import (
    MEAN,
    STD,
    SegTrainTransform,
    normalise,
    rescale_size,
    resize_for_test,
    shortest_edge_size,
)
from kdbench.data.real.streams import DrawSampler, EvalImages, ImageItem, RealBatchStream, TrainImages
from kdbench.engine.distributed import DistInfo
from kdbench.engine.evaluator import evaluate_loader, get_protocol, slide_logits
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import stage_config
from kdbench.errors import UserError
from kdbench.method import Stage
from kdbench.testing.toy_models import LeftHalfIsOne


@pytest.mark.parametrize(("size", "scale", "expected"), [
    ((1024, 2048), (1024, 512), (512, 1024)),    # Cityscapes val -> 1024×512 (datasets.md §2)
    ((720, 1280), (1280, 720), (720, 1280)),     # BDD100K: native
    ((1500, 2000), (1024, 512), (512, 683)),     # a half-size Mapillary image -> 683×512 (datasets.md §6)
    ((1080, 1920), (960, 540), (540, 960)),      # ACDC: half resolution
    ((512, 512), (512, 512), (512, 512)),        # ISPRS patches: native
])
def test_test_resize_matches_mmseg_keep_ratio(size, scale, expected):
    assert rescale_size(*size, scale) == expected
    image = np.zeros((*size, 3), np.uint8)
    assert resize_for_test(image, scale).shape[:2] == expected


def test_shortest_edge_resize_caps_the_long_edge():
    assert shortest_edge_size(1052, 1914, 512) == (512, 932)
    assert shortest_edge_size(1052, 1914, 1024) == (1024, 1863)
    assert shortest_edge_size(1000, 4000, 1024) == (512, 2048)  # long edge capped at 2048


def test_normalise_is_imagenet_mean_std_on_0_255():
    image = np.array([[[0, 128, 255]]], np.uint8)
    out = normalise(image)
    expected = (np.array([0, 128, 255], np.float32) - MEAN) / STD
    assert torch.allclose(out[:, 0, 0], torch.from_numpy(expected))


def _stripes(h: int, w: int, classes: int) -> np.ndarray:
    return np.repeat((np.arange(w) * classes // w).astype(np.uint8)[None], h, axis=0)


def test_train_transform_crops_pads_and_keeps_pixels_aligned():
    """Crop size, label pad 255 where the resized image is smaller than the crop, and image/label alignment
    (without the photometric step, an image that is its own label's colour code stays consistent through resize,
    crop and flip)."""
    label = _stripes(40, 80, 4)
    image = np.repeat((label * 60)[..., None], 3, axis=2)
    transform = SegTrainTransform(crop=64, scale_base=32, photometric=False)
    for seed in range(5):
        out, target = transform(image, label, np.random.default_rng(seed))
        assert out.shape == (3, 64, 64) and target.shape == (64, 64)
        valid = target != 255
        shown = (out[0] * STD[0] + MEAN[0]).round()
        agree = (shown[valid] == target[valid].float() * 60).float().mean()
        assert agree > 0.9  # bilinear image vs nearest label differ only along stripe borders
        assert set(target.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_train_transform_redraws_crops_dominated_by_one_class():
    """``cat_max_ratio`` 0.75: a crop in which one class covers ≥ 75% of labelled pixels is redrawn (up to 10
    times), so crops of a mostly-uniform label map with a small second class contain both classes far more often
    than uniform crops would."""
    label = np.zeros((64, 256), np.uint8)
    label[:, 200:] = 1
    image = np.zeros((64, 256, 3), np.uint8)
    with_ratio = SegTrainTransform(crop=64, scale_base=64, photometric=False)
    without = SegTrainTransform(crop=64, scale_base=64, cat_max_ratio=1.0, photometric=False)
    with_ratio.scales = without.scales = [64]
    both = [len(set(t(image, label, np.random.default_rng(s))[1].unique().tolist()) - {255}) == 2
            for t in (with_ratio, without) for s in range(40)]
    assert sum(both[:40]) > sum(both[40:]) + 10


def test_draw_sampler_is_the_same_for_any_start_and_split_across_ranks():
    whole = DrawSampler(10, 4, seed=3, start=0, info=DistInfo())
    keys = [k for _, k in zip(range(24), whole, strict=False)]
    resumed = DrawSampler(10, 4, seed=3, start=2, info=DistInfo())
    assert [k for _, k in zip(range(16), resumed, strict=False)] == keys[8:]
    # each epoch is a permutation
    assert sorted(i for _, i in keys[:10]) == list(range(10))
    ranks = [DrawSampler(10, 4, 3, 0, DistInfo(rank=r, world=2, local_rank=r)) for r in range(2)]
    parts = [[k for _, k in zip(range(6), s, strict=False)] for s in ranks]
    assert parts[0][:2] + parts[1][:2] + parts[0][2:4] + parts[1][2:4] == keys[:8]


def _write_images(tmp_path, count: int) -> list[ImageItem]:
    items = []
    rng = np.random.default_rng(0)
    for i in range(count):
        image, label = tmp_path / f"{i}.png", tmp_path / f"{i}_label.png"
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(image)
        Image.fromarray(_stripes(24, 40, 3)).save(label)
        items.append(ImageItem(image, label))
    return items


def _read_image(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _read_label(path):
    return np.asarray(Image.open(path))


def test_stream_resumes_exactly_and_workers_change_nothing(tmp_path):
    items = _write_images(tmp_path, 5)
    dataset = TrainImages(items, _read_image, _read_label, crop=16, labelled=True, seed=1, scale_base=16)

    def stream(workers: int) -> RealBatchStream:
        return RealBatchStream(dataset, 2, seed=7, device=torch.device("cpu"), workers=workers, info=DistInfo())

    first = stream(0)
    batches = [next(first) for _ in range(4)]
    state = first.state_dict()
    after = [next(first) for _ in range(2)]
    resumed = stream(0)
    resumed.load_state_dict(state)
    for a, b in zip(after, [next(resumed) for _ in range(2)], strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    parallel = stream(2)
    for a, b in zip(batches, [next(parallel) for _ in range(4)], strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert batches[0].labels.dtype == torch.int64


def test_unlabelled_stream_uses_the_stage1_view(tmp_path):
    items = _write_images(tmp_path, 3)
    dataset = TrainImages(items, _read_image, _read_label, crop=32, labelled=False, seed=1)
    batch = next(RealBatchStream(dataset, 2, 0, torch.device("cpu"), 0, DistInfo()))
    assert batch.images.shape == (2, 3, 32, 32) and batch.labels is None


def test_slide_windows_follow_mmseg_and_batching_changes_nothing():
    images = torch.randn(1, 3, 40, 70)
    one = slide_logits(LeftHalfIsOne(), images, crop=32, stride=21, windows_per_pass=1)
    many = slide_logits(LeftHalfIsOne(), images, crop=32, stride=21, windows_per_pass=8)
    assert torch.equal(one, many)
    # mmseg: n = max(L - crop + stride - 1, 0) // stride + 1 windows per axis; every pixel covered
    rows, cols = (40 - 32 + 20) // 21 + 1, (70 - 32 + 20) // 21 + 1
    assert (rows, cols) == (2, 3)


def test_scores_are_computed_at_label_resolution(tmp_path):
    """A 20×40 label scored from a test-resized 40×80 image: logits are resized back to 20×40 before argmax."""
    image, label = tmp_path / "i.png", tmp_path / "l.png"
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(image)
    truth = np.zeros((20, 40), np.uint8)
    truth[:, :20] = 1
    Image.fromarray(truth).save(label)
    dataset = EvalImages([ImageItem(image, label)], _read_image, _read_label, test_scale=(80, 40))
    assert dataset[0][0].shape == (3, 40, 80) and dataset[0][1].shape == (20, 40)
    score = evaluate_loader(LeftHalfIsOne(), torch.utils.data.DataLoader(dataset, batch_size=1), 2,
                            get_protocol("whole"), resolve_runtime("cpu", "off"))
    assert score.miou == pytest.approx(100.0) and score.images == 1


def test_stage_settings_override_the_run_and_count_epochs():
    cfg = TrainConfig(steps=100, batch_size=4, lr=1e-4, schedule="poly", backbone_lr_mult=0.1,
                      stages={"domain-agnostic": {"epochs": 3, "batch_size": 128, "lr": 1.25e-4,
                                                  "schedule": "cosine", "backbone_lr_mult": 1.0}})
    distill = stage_config(Stage("domain-agnostic", data="source-images", lr=5e-4), cfg, lambda kind: 1000)
    assert (distill.steps, distill.batch_size, distill.lr, distill.schedule, distill.backbone_lr_mult) == (
        24, 128, 1.25e-4, "cosine", 1.0)  # ceil(3 × 1000 / 128)
    task = stage_config(Stage("task", train=("head",)), cfg)
    assert (task.steps, task.batch_size, task.lr, task.schedule) == (100, 4, 1e-4, "poly")
    method_lr = stage_config(Stage("other", lr=5e-4, steps=7), cfg)
    assert (method_lr.steps, method_lr.lr) == (7, 5e-4)


def test_stage_settings_are_checked_by_name():
    cfg = Config()
    apply_set(cfg, "train.stages.task.batch_size=8")
    assert cfg.train.stages == {"task": {"batch_size": 8}}
    with pytest.raises(UserError, match="train.stages.task.speed is not a stage setting"):
        apply_set(cfg, "train.stages.task.speed=3")
    with pytest.raises(UserError, match="batch_size must be int"):
        apply_set(cfg, "train.stages.task.batch_size=big")
    apply_set(cfg, "train.stages.task.epochs=2")
    with pytest.raises(UserError, match="sets both steps and epochs"):
        apply_set(cfg, "train.stages.task.steps=2")
        validate(cfg)
    apply_set(cfg, "train.stages.task.epochs=null")
    validate(cfg)
    assert cfg.train.stages == {"task": {"batch_size": 8, "steps": 2}}
    apply_set(cfg, "weights.dinov2-l=/w/dinov2_vitl14_pretrain.pth")
    assert cfg.weights == {"dinov2-l": "/w/dinov2_vitl14_pretrain.pth"}
    with pytest.raises(UserError, match="weights.dinov2-l must be a file path"):
        apply_set(cfg, "weights.dinov2-l.x=1")
