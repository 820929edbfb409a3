"""Sweeps through submitit: local workers give the records an inline sweep gives, a re-launch skips finished runs,
each local worker gets its own GPUs, and SLURM parameters come from the config."""

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import Config
from kdbench.errors import UserError
from kdbench.launchers import executor_parameters, groups_of, local_gpus, visible_gpus, worker_gpus

# --device cpu: local workers on CPU (one GPU would make one worker) with scores equal to the inline run's, bit for
# bit, which holds for CPU fp32 kernels (docs/performance.md, "On a GPU")
ARGS = ["run", "--suite", "smoke", "--device", "cpu", "--benchmarks", "game2real", "--pairs", "tiny-f2f",
        "--methods", "student-only,kd", "--seeds", "0,1", "--set", "train.threads=1"]


def scores(root: Path) -> list[tuple]:
    rows = [json.loads(line) for p in root.rglob("records.jsonl") for line in p.read_text().splitlines()]
    return sorted((r["method"], r["seed"], r["domain"], r["split"], r["miou"]) for r in rows)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_local_workers_match_inline_and_relaunch_skips(tmp_path):
    inline = invoke(*ARGS, "--out", str(tmp_path / "inline"))
    assert inline.exit_code == 0, inline.output
    local = invoke(*ARGS, "--out", str(tmp_path / "local"), "--launcher", "local", "--set", "launcher.workers=2")
    assert local.exit_code == 0, local.output
    assert "5 run(s) in 2 local job(s)" in local.output and "5 run(s) done, 0 skipped, 0 failed" in local.output
    assert scores(tmp_path / "local") == scores(tmp_path / "inline") and len(scores(tmp_path / "inline")) == 2 * 20
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
    assert groups_of(list(range(5)), cfg, 1) == [[0, 1, 2, 3, 4]]


def test_local_workers_get_disjoint_gpus(monkeypatch):
    cfg = Config()
    assert visible_gpus(0, None) == [] and worker_gpus(2, cfg, []) == [[], []]
    assert visible_gpus(4, None) == [0, 1, 2, 3] and worker_gpus(2, cfg, [0, 1, 2, 3]) == [[0], [1]]
    cfg.launcher.gpus_per_job = 2
    assert worker_gpus(3, cfg, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    cfg.launcher.gpus_per_job = 1
    assert visible_gpus(2, "2,5") == [2, 5] and worker_gpus(2, cfg, visible_gpus(2, "2,5")) == [[2], [5]]
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES=GPU-1f2e"):
        visible_gpus(1, "GPU-1f2e")
    cfg.launcher.gpus_per_job = 3
    with pytest.raises(UserError, match=r"launcher.gpus_per_job=3, but only 2 GPU\(s\) are visible"):
        worker_gpus(2, cfg, [0, 1])
    cfg.device = "cpu"
    assert worker_gpus(2, cfg, [0, 1, 2, 3]) == [[], []]
    cfg.device, cfg.launcher.gpus_per_job, cfg.launcher.workers = "auto", 1, 3
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    lines: list[str] = []
    assert local_gpus(3, cfg, lines.append) == [[2], [5]]
    assert lines == ["kdbench: 2 local worker(s), worker 0: GPU 2; worker 1: GPU 5 (launcher.workers=3, "
                     "1 GPU(s) per run, 2 GPU(s) visible)"]


def test_each_local_worker_sees_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    out = tmp_path / "out"
    result = invoke("run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2f", "--methods",
                    "student-only", "--seeds", "0", "--set", "train.threads=1", "--out", str(out),
                    "--launcher", "local", "--set", "launcher.workers=2")
    assert result.exit_code == 0, result.output
    assert "2 local worker(s), worker 0: GPU 0; worker 1: GPU 1" in result.output
    assert "2 run(s) done, 0 skipped, 0 failed" in result.output
    logs = "".join(p.read_text() for p in (out / ".submitit").rglob("*_log.out"))
    assert sorted(line for line in logs.splitlines() if line.startswith("kdbench: worker on")) == [
        "kdbench: worker on cpu (CUDA_VISIBLE_DEVICES=0)", "kdbench: worker on cpu (CUDA_VISIBLE_DEVICES=1)"]


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a real SLURM cluster is here")
def test_slurm_without_a_cluster_is_a_one_line_error(tmp_path):
    result = invoke(*ARGS, "--out", str(tmp_path / "out"), "--launcher", "slurm")
    assert result.exit_code == 1 and "launcher.kind=slurm: submitting the runs failed" in result.output
    assert "Traceback" not in result.output


def test_a_run_on_two_processes_inside_a_local_job(tmp_path):
    """``--launcher local --nproc 2``: the job's two tasks are one run's DDP processes (gloo here), which follow the
    one-process trajectory at the same global batch; rank 0 alone writes and prints."""
    args = ["run", "--suite", "smoke", "--device", "cpu", "--benchmarks", "game2real", "--pairs", "tiny-f2f",
            "--methods", "kd", "--seeds", "0", "--set", "train.steps=6", "--set", "train.batch_size=8",
            "--set", "train.log_every=1", "--set", "train.threads=1"]
    one = invoke(*args, "--out", str(tmp_path / "one"))
    assert one.exit_code == 0, one.output
    two = invoke(*args, "--out", str(tmp_path / "two"), "--launcher", "local", "--nproc", "2",
                 "--set", "launcher.workers=1")
    assert two.exit_code == 0, two.output
    logs = "".join(p.read_text() for p in (tmp_path / "two" / ".submitit").rglob("*_log.out"))
    assert logs.count("kdbench: worker on cpu, 2 processes") == 1 and logs.count("kd seed 0: in-domain") == 1
    metrics = [[json.loads(line) for line in p.read_text().splitlines()]
               for p in (*sorted((tmp_path / "one").rglob("kd/*/metrics.jsonl")),
                         *sorted((tmp_path / "two").rglob("kd/*/metrics.jsonl")))]
    assert len(metrics) == 2 and len(metrics[0]) == len(metrics[1]) == 6
    for a, b in zip(*metrics, strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=2e-5), (a["step"], a["loss"], b["loss"])
    odd = invoke(*args, "--out", str(tmp_path / "odd"), "--launcher", "local", "--nproc", "3")
    assert odd.exit_code == 1 and "must be divisible by the number of processes (3)" in odd.output


def test_slurm_job_of_a_ddp_run_asks_for_its_tasks_and_gpus():
    cfg = Config()
    cfg.launcher.kind, cfg.launcher.processes, cfg.launcher.cpus_per_job = "slurm", 4, 32
    params = executor_parameters(cfg)
    assert (params["tasks_per_node"], params["gpus_per_node"], params["cpus_per_task"]) == (4, 4, 8)
    cfg.launcher.kind = "local"
    with pytest.raises(UserError, match=r"--nproc 4 \(one GPU per process\), but only 2 GPU\(s\) are visible"):
        worker_gpus(1, cfg, [0, 1])
    assert worker_gpus(2, cfg, list(range(8))) == [[0, 1, 2, 3], [4, 5, 6, 7]]
