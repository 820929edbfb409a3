"""Live curves (``train.tensorboard=true``): TensorBoard event files that say what ``metrics.jsonl`` and
``records.jsonl`` say, nothing imported with the setting off, and a clear refusal without the package."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import kdbench.engine.tensorboard as tb
from kdbench.cli import cli
from kdbench.config import TrainConfig
from kdbench.engine.resume import ResumePoint
from kdbench.engine.tensorboard import FOLDER, live_curves
from kdbench.method import Stage

ARGS = ["run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2l", "--methods", "gkd",
        "--device", "cpu", "--set", "train.steps=6", "--set", "train.log_every=1", "--set", "train.threads=1"]
ON = ["--set", "train.tensorboard=true"]


def gkd_run(out: Path) -> Path:
    (path,) = (out / "smoke" / "game2real" / "tiny-f2l" / "gkd").iterdir()
    return path


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    values = acc.Scalars(tag)
    steps = [e.step for e in values]
    assert len(steps) == len(set(steps)), f"{tag}: a step written twice: {steps}"
    return {e.step: e.value for e in values}


def global_steps(rows: list[dict]) -> list[int]:
    """Each metrics row's step counted over the whole run: a stage's steps follow the stages before it."""
    offset, last, stage, placed = 0, -1, None, []
    for row in rows:
        if row["stage"] != stage:
            offset, stage = offset + last + 1 if stage is not None else 0, row["stage"]
        last = row["step"]
        placed.append(offset + row["step"])
    return placed


def test_event_files_hold_the_logged_rows_stages_and_final_miou(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [*ARGS, *ON, "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = gkd_run(out)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = events(run / FOLDER)
    tags = set(acc.Tags()["scalars"])
    terms = {k for row in rows for k in row if k.startswith("loss")}
    assert {"loss", "loss/task", "loss/feat"} <= terms <= tags and "lr" in tags
    for tag in [*sorted(terms), "lr"]:
        logged = {step: row[tag] for step, row in zip(global_steps(rows), rows, strict=True) if tag in row}
        written = scalars(acc, tag)
        assert written.keys() == logged.keys(), tag
        assert all(written[s] == pytest.approx(v, rel=1e-6, abs=1e-9) for s, v in logged.items()), tag

    names = list(dict.fromkeys(row["stage"] for row in rows))
    assert names == ["task-agnostic", "domain-agnostic", "task"]
    firsts = {row["stage"]: step for step, row in zip(global_steps(rows), rows, strict=True) if row["step"] == 0}
    stage = scalars(acc, "stage")
    assert [stage[firsts[name]] for name in names] == [0, 1, 2]
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("stage/text_summary")}
    assert sorted(texts) == [firsts[name] for name in names]
    assert all(f"stage {i + 1} of 3: {name}" in texts[firsts[name]] for i, name in enumerate(names))

    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"test", "val"}
    for record in records:
        miou = scalars(acc, f"miou/{record['split']}/{record['domain']}")
        assert miou == {record["train_steps"]: pytest.approx(record["miou"], abs=1e-4)}
    assert len(list((out / "smoke" / "game2real" / "tiny-f2l" / "teacher").glob(f"*/{FOLDER}/events.*"))) == 1


def test_resumed_run_appends_without_showing_a_step_twice(tmp_path):
    stages = [Stage("a", steps=4), Stage("b", steps=3)]
    method = SimpleNamespace(stages=lambda: stages)
    cfg = TrainConfig(tensorboard=True)
    logged: list[dict] = []

    def attempt(rows: list[tuple[str, int, float]], resume: ResumePoint | None) -> None:
        with live_curves(logged.append, tmp_path, method, cfg, resume=resume) as log:
            for name, step, value in rows:
                log({"stage": name, "step": step, "loss": value})

    attempt([("a", s, 1.0) for s in range(4)] + [("b", 0, 1.0), ("b", 1, 1.0)], None)
    attempt([("b", 1, 2.0), ("b", 2, 2.0)], ResumePoint(stage=1, step=1, state={}))
    assert len(logged) == 8
    assert len(list((tmp_path / FOLDER).glob("events.*"))) == 2
    assert scalars(events(tmp_path / FOLDER), "loss") == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 2.0, 6: 2.0}
    attempt([("a", 0, 3.0)], None)  # started afresh: the earlier attempts' curves go
    assert scalars(events(tmp_path / FOLDER), "loss") == {0: 3.0}


def test_off_writes_no_events_and_imports_no_tensorboard(tmp_path):
    out = tmp_path / "out"
    args = [*ARGS, "--methods", "student-only", "--set", "train.steps=2", "--out", str(out)]
    script = ("import sys\nfrom kdbench.cli import cli\n"
              f"cli.main({args!r}, standalone_mode=False)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard' "
              "or m.startswith('torch.utils.tensorboard')))")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip().splitlines()[-1] == "[]", child.stdout
    assert list(out.rglob("done")) and list(out.rglob("metrics.jsonl"))
    assert not list(out.rglob("events.out.tfevents.*")) and not list(out.rglob(FOLDER))


def test_missing_package_is_refused_in_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(tb, "available", lambda: False)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [*ARGS, *ON, "--out", str(out)])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "train.tensorboard=true" in result.output and "pip install 'kdbench[tb]'" in result.output
    assert not out.exists()
