"""Speed options change how a run computes, not what: channels-last CNN weights and torch.compile give the same
records (within float rounding) and are not part of a run's identity."""

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import TrainConfig
from kdbench.engine.runtime import apply_speed_options
from kdbench.method import METHODS, RunContext
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import MODELS


def seg(name: str) -> Segmentor:
    backbone = MODELS.get(name).build_backbone(16)
    return Segmentor(backbone, LightHead(backbone.level_channels, 6))


def test_channels_last_reaches_cnn_weights_only():
    method = METHODS.get("kd")(seg("tiny-vit-b"), seg("tiny-resnet"), RunContext("F2L", 16, 6, torch.device("cpu")))
    apply_speed_options(method, TrainConfig(channels_last=True))
    convs = [m.weight for m in method.student.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    vit_patch = method.teacher.backbone.vit.patch_embed.proj.weight
    assert vit_patch.is_contiguous() and not vit_patch.is_contiguous(memory_format=torch.channels_last)


def scores(root: Path) -> dict:
    rows = [json.loads(line) for p in root.rglob("records.jsonl") if "/kd/" in str(p)
            for line in p.read_text().splitlines()]
    return {r["domain"]: r["miou"] for r in rows}


def test_compiled_run_matches_eager_and_shares_its_identity(tmp_path):
    args = ["run", "--suite", "smoke", "--benchmarks", "rgb2irrg", "--pairs", "tiny-f2l-cnn", "--methods", "kd",
            "--set", "train.steps=4", "--set", "train.channels_last=true"]
    eager = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "eager")])
    assert eager.exit_code == 0, eager.output
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "compiled"), "--set", "train.compile=true"])
    assert compiled.exit_code == 0, compiled.output
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really compiled the models
    a, b = scores(tmp_path / "eager"), scores(tmp_path / "compiled")
    assert a.keys() == b.keys() and all(abs(a[d] - b[d]) < 0.5 for d in a), (a, b)
    again = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "eager"), "--set", "train.compile=true",
                                     "--set", "train.channels_last=false"])
    assert again.exit_code == 0 and "kd seed 0: already done, skipped" in again.output
