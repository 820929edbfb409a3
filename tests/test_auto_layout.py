"""``launcher.kind=auto``: the measured fastest layout for the machine, chosen before the sweep and said in one
line; the worker processes' result lines appear in the sweep's own output."""

import os

from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.launchers import auto_layout


def test_auto_layout_rules():
    assert auto_layout(pending=12, gpus=0, cores=2) == auto_layout(12, 0, 2)
    cpu = auto_layout(pending=12, gpus=0, cores=2)
    assert (cpu.kind, cpu.workers, cpu.threads) == ("local", 2, 1)
    many = auto_layout(pending=3, gpus=0, cores=16)
    assert (many.kind, many.workers, many.threads) == ("local", 3, 5)  # no more workers than runs; cores shared
    assert auto_layout(pending=1, gpus=0, cores=2).kind == "inline"
    assert auto_layout(pending=9, gpus=0, cores=1).kind == "inline"
    assert auto_layout(pending=9, gpus=1, cores=16).kind == "inline"
    gpus = auto_layout(pending=9, gpus=4, cores=16)
    assert (gpus.kind, gpus.workers, gpus.threads) == ("local", 4, 0)


def test_auto_on_cpu_runs_local_workers_and_shows_their_progress(tmp_path):
    args = ["run", "--suite", "smoke", "--benchmarks", "game2real", "--methods", "kd", "--launcher", "auto",
            "--device", "cpu", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    cores = len(os.sched_getaffinity(0))
    if cores >= 2:
        assert f"launcher auto -> local, {min(cores, 4)} workers × " in result.output
        assert "w0 [1/" in result.output and "w1 [1/" in result.output
        assert "kd seed 0: in-domain" in result.output and "submitit INFO" not in result.output
    else:
        assert "launcher auto -> inline" in result.output
    assert "4 run(s) done" in result.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "launcher auto -> inline (nothing to do)" in again.output
    assert "4 skipped" in again.output


def test_smoke_suite_defaults_to_inline(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2f",
                                      "--methods", "kd", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "launcher auto" not in result.output and "w0 " not in result.output
