"""Trainer and evaluator behaviour: freezing, teacher untouched, stage checkpoints, slide inference."""

import copy

import pytest
import torch

from kdbench.config import TrainConfig
from kdbench.data.domains import get_domain
from kdbench.data.loaders import StageData
from kdbench.data.synthetic import make_split
from kdbench.engine.evaluator import Protocol, evaluate, slide_logits
from kdbench.engine.optim import lr_factor
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import TrainingError, train_method
from kdbench.method import Method, RunContext, Stage
from kdbench.models.backbones import ViTBackbone
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench_methods.kd import LogitKD

CONTEXT = RunContext("F2F", 16, 6, torch.device("cpu"))


def tiny(width=16, classes=6):
    bb = ViTBackbone(img_size=16, patch_size=4, embed_dim=width, depth=2, num_heads=2)
    return Segmentor(bb, LightHead(bb.level_channels, classes))


@pytest.fixture(scope="module")
def data():
    split = make_split(get_domain("game"), "train", 16, 16)
    return StageData(split, "urban", 16, torch.device("cpu"))


def test_teacher_is_never_updated_and_student_is(data):
    torch.manual_seed(0)
    teacher, student = tiny(32), tiny(16)
    before_t, before_s = copy.deepcopy(teacher.state_dict()), copy.deepcopy(student.state_dict())
    method = LogitKD(teacher, student, CONTEXT)
    cfg = TrainConfig(steps=3, batch_size=4, log_every=1)
    logs = []
    train_method(method, lambda st: data.batches(st.data, 4, 0), cfg, resolve_runtime("cpu", "off"), logs.append)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_t.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in before_s.items())
    assert [row["step"] for row in logs] == [0, 1, 2] and {"loss/task", "loss/kd"} <= set(logs[0])
    assert "teacher" not in dict(method.named_children())


class FrozenBackboneTwoStage(Method):
    """Test method: a head-only stage after a full stage."""

    def stages(self):
        return [Stage("full", steps=2, uses_teacher=False), Stage("head", train=("head",), steps=2, uses_teacher=False)]

    def loss(self, stage, batch, student_out, teacher_out):
        return {"task": self.task_loss(student_out, batch)}


def test_frozen_backbone_stays_bit_identical(data):
    torch.manual_seed(0)
    method = FrozenBackboneTwoStage(tiny(32), tiny(16), CONTEXT)
    snapshots = {}

    def on_end(stage):
        snapshots[stage.name] = copy.deepcopy(method.student.state_dict())

    train_method(method, lambda st: data.batches(st.data, 4, 0), TrainConfig(batch_size=4),
                 resolve_runtime("cpu", "off"), on_stage_end=on_end)
    full, head = snapshots["full"], snapshots["head"]
    backbone_keys = [k for k in full if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(full[k], head[k]) for k in backbone_keys)
    assert any(not torch.equal(full[k], head[k]) for k in full if k.startswith("head.") and "weight" in k)


class Exploding(Method):
    """Test method whose loss is not finite."""

    def loss(self, stage, batch, student_out, teacher_out):
        return {"task": self.task_loss(student_out, batch) * float("inf")}


def test_non_finite_loss_stops_the_run_with_a_reason(data):
    method = Exploding(tiny(32), tiny(16), CONTEXT)
    with pytest.raises(TrainingError, match="non-finite loss at step 0"):
        train_method(method, lambda st: data.batches(st.data, 4, 0), TrainConfig(steps=2, batch_size=4),
                     resolve_runtime("cpu", "off"))


def test_vit_only_method_refuses_cnn_student():
    class VitOnly(Method):
        """Test."""
        student_kinds = frozenset({"vit"})

    from kdbench.errors import UserError
    from kdbench.models.backbones import CNNBackbone
    cnn = CNNBackbone("resnet10t")
    with pytest.raises(UserError, match="does not support cnn students"):
        VitOnly(tiny(32), Segmentor(cnn, LightHead(cnn.level_channels, 6)), CONTEXT)


def test_slide_inference_with_window_covering_image_equals_whole():
    torch.manual_seed(0)
    model = tiny(16).eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(slide_logits(model, images, 16, 8), model(images).logits, atol=1e-6)


def test_slide_inference_averages_overlapping_windows():
    class Ones(torch.nn.Module):
        def forward(self, images):
            from kdbench.models.segmentor import SegOutput
            b, _, h, w = images.shape
            return SegOutput(logits=torch.ones(b, 2, h, w) * w, features=[], tokens=None)

    out = slide_logits(Ones(), torch.zeros(1, 3, 8, 20), crop=8, stride=6)
    assert torch.allclose(out, torch.full_like(out, 8.0))  # every window is 8 wide, so every average is 8


def test_evaluate_whole_and_slide_protocols_agree_when_window_is_image(data):
    torch.manual_seed(0)
    model = tiny(16)
    split = make_split(get_domain("city"), "val", 8, 16)
    rt = resolve_runtime("cpu", "off")
    whole = evaluate(model, split, Protocol("whole", "whole"), 4, rt)
    slide = evaluate(model, split, Protocol("s", "slide", crop=16, stride=8), 4, rt)
    assert whole.miou == pytest.approx(slide.miou) and whole.images == 8


def test_lr_schedules():
    assert lr_factor(0, 100, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 0.1, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 0.0, "cosine") < 0.001
    assert lr_factor(50, 100, 0.0, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(70, 100, 0.0, "constant") == 1.0
