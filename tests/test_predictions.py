"""The predictions a run leaves for the qualitative grids (kdbench.engine.predictions, evaluate's ``keep``), and its
cost fields (kdbench.engine.cost), from a real smoke run through the CLI down to the saving helpers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import cli
from kdbench.data.domains import get_domain
from kdbench.data.synthetic import Split, make_split
from kdbench.engine.evaluator import evaluate, evaluate_loader, get_protocol, predict_logits
from kdbench.engine.predictions import MAX_SIDE, SAMPLES, prediction_file, read_map, read_rgb, save_predictions
from kdbench.engine.runtime import resolve_runtime
from kdbench.launch import SYNTHETIC_SPLITS
from kdbench.models.backbones import ViTBackbone
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.testing.toy_models import LeftHalfIsOne

DOMAINS = ("game", "city", "dashcam", "street")
CLASSES = 6
IMAGE_SIZE, EVAL_IMAGES, BATCH, STEPS = 16, 16, 8, 4  # the smoke suite's quick preset, train.steps=4


def vit_light_flops(size: int, patch: int, width: int, depth: int, classes: int, head_width: int = 64) -> int:
    """Multiply-adds x2 of one image through a ViT (patch embedding; per block qkv, QKᵀ, AV, projection and the 4x
    MLP over the patches and the CLS token) and the light head: a 1×1 lateral conv per read-out block (min(depth,
    4) of them, all at the patch grid), the 3×3 fuse conv and the 1×1 classifier."""
    pixels = (size // patch) ** 2
    tokens = pixels + 1
    embed = 2 * pixels * width * 3 * patch * patch
    block = 2 * tokens * width * 3 * width + 2 * 2 * tokens * tokens * width + 2 * tokens * width * width \
        + 2 * 2 * tokens * width * 4 * width
    head = min(depth, 4) * 2 * width * head_width * pixels + 2 * head_width * head_width * 9 * pixels \
        + 2 * head_width * classes * pixels
    return embed + depth * block + head


def read_records(root: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in sorted(root.rglob("records.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            found.setdefault(record["method"], []).append(record)
    return found


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "out"
    result = CliRunner().invoke(cli, ["run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2l",
                                      "--methods", "kd", "--device", "cpu", "--set", f"train.steps={STEPS}",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def run_dir(root: Path, method: str) -> Path:
    return next((root / "smoke" / "game2real" / "tiny-f2l" / method).iterdir())


def test_every_run_saves_four_indexed_predictions_per_domain(smoke):
    split = {d: make_split(get_domain(d), SYNTHETIC_SPLITS["test"], EVAL_IMAGES, IMAGE_SIZE) for d in DOMAINS}
    for method in ("teacher", "kd"):
        run = run_dir(smoke, method)
        for domain in DOMAINS:
            files = sorted(p.name for p in (run / "predictions" / domain).iterdir())
            extra = [f"{i}-{k}.png" for i in range(SAMPLES) for k in ("image", "label")] if method == "teacher" else []
            assert files == sorted([f"{i}.png" for i in range(SAMPLES)] + extra)
            for i in range(SAMPLES):
                with Image.open(prediction_file(run, domain, i)) as image:
                    assert image.mode == "P"
                prediction = read_map(prediction_file(run, domain, i))
                assert prediction.shape == split[domain].labels[i].shape
                assert set(np.unique(prediction)) <= set(range(CLASSES)) | {255}
    teacher = run_dir(smoke, "teacher")
    for domain in DOMAINS:
        for i in range(SAMPLES):
            np.testing.assert_array_equal(read_map(prediction_file(teacher, domain, i, "label")),
                                          split[domain].labels[i].numpy())
            np.testing.assert_array_equal(read_rgb(prediction_file(teacher, domain, i, "image")),
                                          split[domain].images[i].permute(1, 2, 0).numpy())


def test_the_predictions_are_the_scored_ones(smoke):
    """The kd run's saved maps differ from the teacher's: each run saves its own model's predictions."""
    differ = [not np.array_equal(read_map(prediction_file(run_dir(smoke, "kd"), d, i)),
                                 read_map(prediction_file(run_dir(smoke, "teacher"), d, i)))
              for d in DOMAINS for i in range(SAMPLES)]
    assert any(differ)


def test_records_hold_the_costs(smoke):
    records = read_records(smoke)
    kd, teacher = records["kd"][0], records["teacher"][0]
    # the smoke pair tiny-f2l: teacher tiny-vit-b (32-d), student tiny-deit-s (16-d), both 2 blocks at patch 4
    assert kd["gflops"] * 1e9 == pytest.approx(vit_light_flops(IMAGE_SIZE, 4, 16, 2, CLASSES), rel=1e-9)
    assert teacher["gflops"] * 1e9 == pytest.approx(vit_light_flops(IMAGE_SIZE, 4, 32, 2, CLASSES), rel=1e-9)
    assert kd["flops_input"] == teacher["flops_input"] == IMAGE_SIZE
    assert kd["extra_params"] == 0 and teacher["extra_params"] is None and kd["student_params"] > 0
    seconds = sum(s["wall_s"] for s in kd["stages"])  # both rounded to 0.01 in the record
    rate = kd["train_images_per_s"]
    assert STEPS * BATCH / (seconds + 0.005) - 0.005 <= rate <= STEPS * BATCH / max(seconds - 0.005, 1e-9) + 0.005
    assert teacher["train_images_per_s"] is None
    assert all(r["gflops"] == kd["gflops"] for r in records["kd"])


def tiny_model(width: int = 16) -> Segmentor:
    torch.manual_seed(0)
    backbone = ViTBackbone(img_size=16, patch_size=4, embed_dim=width, depth=2, num_heads=2)
    return Segmentor(backbone, LightHead(backbone.level_channels, CLASSES)).eval()


def test_evaluate_keeps_the_first_predictions_across_batches_with_ignore_marked():
    split = make_split(get_domain("city"), "val", 7, 16)
    labels = split.labels.clone()
    labels[:, :3] = 255
    split = Split(split.images, labels, split.classes)
    model = tiny_model()
    score = evaluate(model, split, get_protocol("whole"), 3, resolve_runtime("cpu", "off"), keep=5)
    assert len(score.predictions) == 5
    with torch.no_grad():
        direct = predict_logits(model, split.images[:5].float().div(255).sub(0.5).div(0.25),
                                get_protocol("whole")).argmax(1)
    expected = torch.where(labels[:5] == 255, 255, direct).to(torch.uint8).numpy()
    np.testing.assert_array_equal(np.stack(score.predictions), expected)
    assert evaluate(model, split, get_protocol("whole"), 3, resolve_runtime("cpu", "off")).predictions == ()


def test_real_predictions_are_kept_at_label_resolution():
    """A 40×80 (test-resized) input scored against a 20×40 label: the kept map is the label's size."""
    label = torch.zeros(1, 20, 40, dtype=torch.uint8)
    label[:, 0] = 255
    loader = [(torch.zeros(1, 3, 40, 80), label)] * 3
    score = evaluate_loader(LeftHalfIsOne(), loader, 2, get_protocol("whole"), resolve_runtime("cpu", "off"), keep=2)
    assert len(score.predictions) == 2 and score.predictions[0].shape == (20, 40)
    expected = np.zeros((20, 40), np.uint8)
    expected[:, :20] = 1
    expected[0] = 255
    np.testing.assert_array_equal(score.predictions[1], expected)


def test_large_maps_are_shrunk_by_nearest_to_the_longest_side(tmp_path):
    """A real-sized 1024×2048 map is saved at 256×512 with its classes intact; the teacher's image and label at
    the same size."""
    prediction = np.zeros((1024, 2048), np.uint8)
    prediction[:, 1024:] = 2
    prediction[:512] = 255
    image = np.full((1024, 2048, 3), 90, np.uint8)

    def samples(domain, count):
        return [image] * count, [prediction] * count

    save_predictions(tmp_path, {"cityscapes": [prediction]}, samples)
    saved = read_map(prediction_file(tmp_path, "cityscapes", 0))
    assert saved.shape == (MAX_SIDE // 2, MAX_SIDE)
    assert (saved[:128] == 255).all() and (saved[128:, :256] == 0).all() and (saved[128:, 256:] == 2).all()
    assert read_rgb(prediction_file(tmp_path, "cityscapes", 0, "image")).shape == (256, 512, 3)
    np.testing.assert_array_equal(read_map(prediction_file(tmp_path, "cityscapes", 0, "label")), saved)
    assert sorted(p.name for p in (tmp_path / "predictions" / "cityscapes").iterdir()) == [
        "0-image.png", "0-label.png", "0.png"]
