"""Bad input gets one clear line (``Error: ...``), a non-zero exit, no traceback, and nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from kdbench.cli import cli


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch ~/.cache or the network; give the config-file cases their files."""
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- train\n- eval\n")
    (tmp_path / "afile").write_text("a plain file, so nothing can be created under it\n")


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def written_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_clean_error(result: Result, *needles: str) -> str:
    """One ``Error:`` line on stderr naming every needle, a SystemExit with a non-zero code, no traceback."""
    output = result.output
    assert result.exit_code != 0, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    line = lines[0]
    assert line.startswith("Error:"), line
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not named in {line!r}"
    return line


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not list(tmp_path.rglob("records.jsonl"))
    assert not list(tmp_path.rglob("done"))
    assert written_files(out) == [], f"files written under {out}: {written_files(out)}"
    assert not (tmp_path / "cache").exists(), "the model cache was written to before the input was checked"


RUN_CASES = [
    # id, extra arguments (``{tmp}`` is tmp_path), what the error line must name
    ("unknown-method", ["--methods", "nope"], ["nope", "student-only", "kd"]),
    ("unknown-method-among-valid", ["--methods", "kd,nope"], ["nope", "student-only"]),
    ("unknown-suite", ["--suite", "nope"], ["nope", "smoke", "synth5"]),
    ("unknown-pair", ["--pairs", "nope"], ["nope", "tiny-f2f"]),
    ("unknown-benchmark", ["--benchmarks", "nope"], ["nope", "game2real"]),
    ("malformed-yaml", ["--config", "{tmp}/bad.yaml"], ["bad.yaml"]),
    ("yaml-not-a-mapping", ["--config", "{tmp}/list.yaml"], ["list.yaml", "mapping"]),
    ("missing-config", ["--config", "{tmp}/missing.yaml"], ["missing.yaml"]),
    ("set-unknown-key", ["--set", "train.nope=1"], ["nope", "steps"]),
    ("set-int-wrong-type", ["--set", "train.steps=abc"], ["steps", "abc"]),
    ("set-float-given-bool", ["--set", "train.lr=true"], ["lr", "true"]),
    ("set-without-equals", ["--set", "train.steps"], ["train.steps", "key=value"]),
    ("unknown-method-hparam", ["--set", "method.kd.nope=1"], ["nope", "kd", "temperature"]),
    ("wrong-typed-method-hparam", ["--set", "method.kd.temperature=hot"], ["temperature", "hot"]),
    ("unknown-method-in-hparams", ["--set", "method.nope.weight=1"], ["nope", "student-only"]),
    ("seeds-not-integers", ["--seeds", "a,b"], ["--seeds", "a,b"]),
]


@pytest.mark.parametrize(("extra", "needles"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_run_bad_input(tmp_path: Path, extra: list[str], needles: list[str]) -> None:
    out = tmp_path / "out"
    args = ["run", "--suite", "smoke", "--out", str(out), *(a.format(tmp=tmp_path) for a in extra)]
    result = invoke(args)
    assert_clean_error(result, *needles)
    assert result.stdout.strip() == "", "nothing should be announced before the input is checked"
    assert_nothing_written(tmp_path, out)


def test_run_unwritable_output_directory(tmp_path: Path) -> None:
    out = tmp_path / "afile" / "out"  # under a plain file: unwritable even for root, unlike chmod
    result = invoke(["run", "--suite", "smoke", "--out", str(out)])
    assert_clean_error(result, str(out))
    assert (tmp_path / "afile").is_file()
    assert_nothing_written(tmp_path, out)


def test_run_cuda_without_gpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present, so --device cuda is valid here")
    out = tmp_path / "out"
    result = invoke(["run", "--suite", "smoke", "--out", str(out), "--device", "cuda"])
    assert_clean_error(result, "cuda")
    assert_nothing_written(tmp_path, out)


def test_report_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-results"
    result = invoke(["report", str(missing)])
    assert_clean_error(result, str(missing))
    assert not missing.exists()


def test_report_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(["report", str(empty)])
    assert_clean_error(result, str(empty))
    assert list(empty.iterdir()) == [], "no report or tables for an empty results directory"


def test_unknown_method_through_a_real_process(tmp_path: Path) -> None:
    """The same contract end to end: ``python -m kdbench`` prints one line on stderr and exits non-zero."""
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KDBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "kdbench", "run", "--suite", "smoke", "--methods", "nope", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = nonempty_lines(proc.stderr)
    assert len(lines) == 1, f"expected one error line, got: {proc.stderr!r}"
    assert lines[0].startswith("Error:")
    assert "nope" in lines[0] and "student-only" in lines[0]
    assert proc.stdout.strip() == ""
    assert_nothing_written(tmp_path, out)
