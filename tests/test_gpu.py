"""The CUDA paths, on a machine with a GPU (skipped elsewhere): a run as a user makes it, on the GPU at its default
precision, and the FLOP count of a step under CUDA autocast (which failed on an H200 with torch 2.11)."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.testing.workloads import step_workload

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_smoke_run_trains_and_scores_on_the_gpu_in_bf16(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2l",
                                      "--methods", "kd,gkd", "--seeds", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for p in out.rglob("records.jsonl") for line in p.read_text().splitlines()]
    assert {r["method"] for r in records} == {"teacher", "kd", "gkd"}
    name = torch.cuda.get_device_name(0)
    for r in records:
        assert r["device"] == name and r["peak_memory_kind"] == "cuda-allocated" and r["peak_memory_mb"] > 0
        assert r["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        assert math.isfinite(r["miou"]) and 0 <= r["miou"] <= 100 and r["eval_s"] > 0


def test_a_step_under_cuda_autocast_is_counted():
    fp32 = step_workload("gkd", "tiny-real-f2l", "domain-agnostic", 32, 2, "cuda", "off").flops()
    assert step_workload("gkd", "tiny-real-f2l", "domain-agnostic", 32, 2, "cuda", "bf16").flops() == fp32 > 0
