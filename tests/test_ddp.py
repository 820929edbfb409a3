"""One run on two processes (DDP, gloo on CPU, started by `kdbench run --nproc 2`) against the same run on one
process at the same global batch: the same loss trajectory and the same scores, within float tolerance, with
BatchNorm synchronised across processes; only rank 0 writes."""

import json
import math
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from kdbench.cli import cli

COMMON = ["--suite", "smoke", "--device", "cpu", "--benchmarks", "game2real", "--set", "train.steps=8",
          "--set", "train.batch_size=8", "--set", "train.log_every=1", "--set", "train.threads=1"]


def two_processes(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdbench", "run", "--nproc", "2", *args], capture_output=True,
                          text=True, timeout=600)


def run_files(out: Path, pair: str, method: str, name: str) -> list[Path]:
    return sorted((out / "smoke" / "game2real" / pair / method).glob(f"*/{name}"))


def losses(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_follow_the_one_process_trajectory(tmp_path):
    args = [*COMMON, "--pairs", "tiny-f2f", "--methods", "kd"]  # the student's head has BatchNorm
    one = CliRunner().invoke(cli, ["run", *args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    two = two_processes(*args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert "× 2 processes" in two.stdout and two.stdout.count("kd seed 0: in-domain") == 1  # rank 0 alone prints
    (single,), (double,) = run_files(tmp_path / "one", "tiny-f2f", "kd", "metrics.jsonl"), run_files(
        tmp_path / "two", "tiny-f2f", "kd", "metrics.jsonl")
    a, b = losses(single), losses(double)
    assert len(a) == len(b) == 8  # one line per step: rank 1 logged nothing
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "loss/task", "loss/kd"):
            assert math.isclose(x[key], y[key], rel_tol=2e-5), (x["step"], key, x[key], y[key])
    scores = [{r["domain"]: r["miou"] for r in map(json.loads, p.read_text().splitlines())}
              for p in (*run_files(tmp_path / "one", "tiny-f2f", "kd", "records.jsonl"),
                        *run_files(tmp_path / "two", "tiny-f2f", "kd", "records.jsonl"))]
    assert len(scores) == 2 and all(abs(scores[0][d] - scores[1][d]) < 0.5 for d in scores[0])


def test_multi_stage_method_and_bad_batch(tmp_path):
    out = tmp_path / "gkd"
    done = two_processes(*COMMON, "--pairs", "tiny-f2l", "--methods", "gkd", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    names = {p.name for p in run_files(out, "tiny-f2l", "gkd", "*")}
    assert {"stage-task-agnostic.pt", "stage-domain-agnostic.pt", "stage-task.pt", "done"} <= names
    assert len(losses(run_files(out, "tiny-f2l", "gkd", "metrics.jsonl")[0])) == 3 * 8
    odd = two_processes(*COMMON, "--pairs", "tiny-f2l", "--methods", "kd", "--set", "train.batch_size=7",
                        "--out", str(tmp_path / "odd"))
    assert odd.returncode == 1 and "train.batch_size=7 must be divisible by the number of processes (2)" in odd.stderr
    assert "Traceback" not in odd.stderr and not (tmp_path / "odd").exists()


def test_more_processes_than_gpus_is_refused_before_any_starts(tmp_path, monkeypatch):
    """On a one-GPU machine ``--nproc 2`` would start rank 1 on a GPU that does not exist."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = CliRunner().invoke(cli, ["run", "--suite", "smoke", "--nproc", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == (
        "Error: --nproc 2 trains on one GPU per process, but 1 GPU(s) are visible here; use --nproc 1 or fewer, "
        "or --device cpu (gloo processes)")
    assert not (tmp_path / "out").exists()
