"""What a newcomer meets first, through the CLI: the default output root apart from the shipped reference runs,
"did you mean" for near-miss names, pairs that belong to another suite, ``run --dry-run`` and ``list pairs``."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import Config
from kdbench.errors import did_you_mean

SMOKE = ["--suite", "smoke", "--benchmarks", "rgb2irrg", "--pairs", "tiny-f2f"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_the_default_output_root_is_not_the_shipped_results_folder():
    assert Config().out == "runs"
    shipped = Path(__file__).resolve().parents[1] / "results"
    assert not (shipped / "synth5").exists(), "a user's runs (suite folders) must never sit beside the shipped runs"


@pytest.mark.parametrize(("args", "suggestion"), [
    (["run", "--methods", "gkd_mse"], "did you mean 'gkd-mse'?"),
    (["run", "--methods", "CWD"], "did you mean 'cwd'?"),
    (["run", "--suite", "synth"], "did you mean 'synth5'?"),
    (["run", "--set", "train.step=3"], "did you mean 'steps'?"),
    (["run", "--methods", "kd", "--set", "method.kd.temprature=2"], "did you mean 'temperature'?"),
    (["report", "tests/fixtures/report/results", "--select", "source_val"], "did you mean 'source-val'?"),
])
def test_a_near_miss_name_gets_a_suggestion_in_one_line(args, suggestion):
    assert suggestion in one_line_error(invoke(*args))


def test_no_suggestion_for_a_name_unlike_any():
    line = one_line_error(invoke("run", "--methods", "zzzz"))
    assert "did you mean" not in line and "known methods: afdcd" in line
    assert did_you_mean("kd", ["kd", "cwd"]) == ""


def test_a_pair_of_another_suite_is_named_as_such_before_any_weights_are_asked_for(tmp_path):
    line = one_line_error(invoke("run", "--pairs", "f2l-dinov2-b-deit-s", "--out", str(tmp_path)))
    assert "'f2l-dinov2-b-deit-s' is a pair of suite dg5, not of synth5 (its pairs: f2f, f2l)" in line
    assert "weight" not in line and not list(tmp_path.iterdir())


def test_list_pairs_says_which_suite_each_pair_belongs_to():
    lines = {line.split()[0]: line for line in invoke("list", "pairs").output.splitlines()}
    assert lines["f2l"].endswith("[synth5]") and lines["f2l-dinov2-b-deit-s"].endswith("[dg5]")
    assert lines["tiny-f2f"].endswith("[smoke]") and "listed by none" in lines["tiny-f2l-cnn"]


def test_dry_run_prints_the_plan_and_writes_nothing_then_sees_finished_runs(tmp_path):
    out = tmp_path / "out"
    plan = invoke("run", *SMOKE, "--methods", "kd", "--trials", "2", "--out", str(out), "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert not out.exists(), "a dry run writes nothing"
    assert "# resolved config" in plan.output and "suite: smoke" in plan.output
    runs = [line for line in plan.output.splitlines() if line.startswith(("to run", "done"))]
    assert len(runs) == 3  # the teacher row, kd trial 0 and kd trial 1
    assert any("kd trial 1 seed 0 {" in line for line in runs)
    assert "# 0 done, 3 to run, 0 failed" in plan.output
    assert invoke("run", *SMOKE, "--methods", "kd", "--out", str(out)).exit_code == 0
    again = invoke("run", *SMOKE, "--methods", "kd", "--trials", "2", "--out", str(out), "--dry-run")
    assert "# 2 done, 1 to run, 0 failed" in again.output
    done_dirs = [line.split()[-1] for line in again.output.splitlines() if line.startswith("done")]
    assert all((Path(d) / "done").is_file() for d in done_dirs)


def test_heartbeat_lines_name_the_run_step_rate_and_eta(monkeypatch):
    from kdbench.engine.progress import progress_steps, run_label

    monkeypatch.setenv("KDBENCH_HEARTBEAT_S", "10")
    ticks = iter(float(t) for t in range(0, 1000, 4))  # every step takes 4 s of the fake clock
    lines: list[str] = []
    with run_label("game2real/f2l/kd seed 0"):
        steps = list(progress_steps(0, 10, "train", write=lines.append, clock=lambda: next(ticks), terminal=False))
    assert steps == list(range(10))
    assert lines[0] == "game2real/f2l/kd seed 0 train: step 3/10 (30%), 0.25 steps/s, ETA 28s"
    assert len(lines) == 3, lines  # steps 3, 6 and 9; none after the last step
    monkeypatch.setenv("KDBENCH_HEARTBEAT_S", "0")
    silent: list[str] = []
    assert list(progress_steps(2, 5, "train", write=silent.append, terminal=False)) == [2, 3, 4] and not silent


def test_a_sweep_in_a_log_shows_heartbeats_of_pretraining_and_runs(tmp_path, monkeypatch):
    import subprocess
    import sys

    env = {**__import__("os").environ, "KDBENCH_HEARTBEAT_S": "0.000001", "HF_HUB_OFFLINE": "1",
           "KDBENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "kdbench", "run", *SMOKE, "--methods", "kd", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pretrain tiny-vit-b (randomised): step 1/" in done.stdout
    assert "rgb2irrg/tiny-f2f/kd seed 0 train: step 1/4 (25%)" in done.stdout
