"""`--set pretrain.teacher_weights=FILE` uses a local weight file as the teacher backbone instead of pretraining."""

import json

import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from kdbench.cli import cli
from kdbench.models.zoo import MODELS


def invoke(tmp_path, weights):
    return CliRunner().invoke(cli, ["run", "--suite", "smoke", "--benchmarks", "rgb2irrg", "--pairs", "tiny-f2f",
                                    "--methods", "student-only", "--out", str(tmp_path / "out"),
                                    "--set", f"pretrain.teacher_weights={weights}"])


def test_teacher_backbone_from_safetensors_file(tmp_path):
    torch.manual_seed(123)
    backbone = MODELS.get("tiny-vit-b").build_backbone(16)
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))
    result = invoke(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert "pretraining tiny-vit-b" not in result.output  # the file replaced the teacher's pretraining
    files = (tmp_path / "out").rglob("records.jsonl")
    records = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    assert {r["method"] for r in records} == {"teacher", "student-only"}


def test_mismatched_or_missing_teacher_file_is_one_line_error(tmp_path):
    wrong = MODELS.get("tiny-vit-s").build_backbone(16)  # 16-d, the teacher is 32-d
    path = tmp_path / "wrong.pt"
    torch.save(wrong.state_dict(), path)
    result = invoke(tmp_path, path)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert str(path) in result.output and "shape mismatch at" in result.output
    missing = invoke(tmp_path, tmp_path / "nope.pt")
    assert missing.exit_code != 0 and "does not exist" in missing.output
    assert not (tmp_path / "out").exists()  # checked before anything was written


def test_state_digest_tells_weights_apart_and_ignores_object_identity():
    from kdbench.models.checkpoints import state_digest
    from kdbench.models.zoo import MODELS

    torch.manual_seed(0)
    a = MODELS.get("tiny-vit-s").build_backbone(16)
    b = MODELS.get("tiny-vit-s").build_backbone(16)
    b.load_state_dict(a.state_dict())
    assert state_digest(a) == state_digest(b) and len(state_digest(a)) == 16
    with torch.no_grad():
        b.mask_token.add_(1e-6)
    assert state_digest(a) != state_digest(b)
