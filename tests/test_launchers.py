"""Sweeps through submitit: local workers give the records an inline sweep gives, a re-launch skips finished runs,
and SLURM parameters come from the config."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import Config
from kdbench.launchers import executor_parameters, groups_of

ARGS = ["run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2f", "--methods",
        "student-only,kd", "--seeds", "0,1", "--set", "train.threads=1"]


def scores(root: Path) -> list[tuple]:
    rows = [json.loads(line) for p in root.rglob("records.jsonl") for line in p.read_text().splitlines()]
    return sorted((r["method"], r["seed"], r["domain"], r["miou"]) for r in rows)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_local_workers_match_inline_and_relaunch_skips(tmp_path):
    inline = invoke(*ARGS, "--out", str(tmp_path / "inline"))
    assert inline.exit_code == 0, inline.output
    local = invoke(*ARGS, "--out", str(tmp_path / "local"), "--launcher", "local", "--set", "launcher.workers=2")
    assert local.exit_code == 0, local.output
    assert "5 run(s) in 2 local job(s)" in local.output and "5 run(s) done, 0 skipped, 0 failed" in local.output
    assert scores(tmp_path / "local") == scores(tmp_path / "inline") and len(scores(tmp_path / "inline")) == 20
    assert (tmp_path / "local" / "report.md").is_file()
    again = invoke(*ARGS, "--out", str(tmp_path / "local"), "--launcher", "local")
    assert again.exit_code == 0 and "0 run(s) done, 5 skipped, 0 failed" in again.output


def test_slurm_parameters_and_groups():
    cfg = Config()
    cfg.launcher.kind, cfg.launcher.partition, cfg.launcher.timeout_min = "slurm", "gpu-a100", 600
    cfg.launcher.gpus_per_job, cfg.launcher.array_parallelism = 2, 16
    params = executor_parameters(cfg)
    assert params["slurm_partition"] == "gpu-a100" and params["timeout_min"] == 600
    assert params["gpus_per_node"] == 2 and params["slurm_array_parallelism"] == 16
    assert groups_of(list(range(5)), cfg) == [[0], [1], [2], [3], [4]]
    cfg.launcher.kind, cfg.launcher.workers = "local", 2
    assert groups_of(list(range(5)), cfg) == [[0, 2, 4], [1, 3]] and "slurm_partition" not in executor_parameters(cfg)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a real SLURM cluster is here")
def test_slurm_without_a_cluster_is_a_one_line_error(tmp_path):
    result = invoke(*ARGS, "--out", str(tmp_path / "out"), "--launcher", "slurm")
    assert result.exit_code == 1 and "launcher.kind=slurm: submitting the runs failed" in result.output
    assert "Traceback" not in result.output


def test_nproc_needs_the_inline_launcher(tmp_path):
    result = invoke(*ARGS, "--out", str(tmp_path / "out"), "--launcher", "local", "--nproc", "2")
    assert result.exit_code == 1 and "--nproc 2 works with the inline launcher only, not local" in result.output
