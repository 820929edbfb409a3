"""`kdbench run` and `kdbench report` used as a researcher would, on the smoke suite."""

import json
from pathlib import Path

from click.testing import CliRunner

from kdbench.cli import cli

RECORD_FIELDS = {
    "suite", "benchmark", "pair", "pair_kind", "teacher", "student", "method", "hparams", "seed", "domain", "role",
    "miou", "per_class_iou", "images", "protocol", "train_steps", "wall_s", "peak_memory_mb", "device",
    "precision", "versions", "git_commit", "checkpoint", "prepare_s", "teacher_digest", "student_init_digest",
    "trial", "split", "eval_s",
}


def records(root: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(root.rglob("records.jsonl")) for line in p.read_text().splitlines()]


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_smoke_run_records_report_and_skip(tmp_path):
    out = tmp_path / "out"
    first = run("run", "--suite", "smoke", "--out", str(out), "--benchmarks", "game2real,rgb2irrg")
    assert "report:" in first.output and "results:" in first.output
    recs = records(out)
    # 2 benchmarks × 2 pairs × (teacher + student-only + kd), one record per domain (4 and 3 domains) and split
    assert len(recs) == 2 * (2 * 3 * 4 + 2 * 3 * 3)
    assert sorted(r["split"] for r in recs) == ["test"] * (len(recs) // 2) + ["val"] * (len(recs) // 2)
    assert all(set(r) >= RECORD_FIELDS for r in recs)
    assert all(r["eval_s"] > 0 for r in recs)
    kd = [r for r in recs if r["method"] == "kd" and r["benchmark"] == "game2real" and r["pair"] == "tiny-f2l"]
    assert {r["domain"]: r["role"] for r in kd} == {"game": "source", "city": "target", "dashcam": "target",
                                                     "street": "target"}
    assert kd[0]["hparams"] == {"temperature": 1.0, "weight": 1.0} and kd[0]["pair_kind"] == "F2L"
    assert all(0 <= r["miou"] <= 100 for r in recs)
    per_pair = {(r["benchmark"], r["pair"]): r["teacher_digest"] for r in recs}
    assert all(r["teacher_digest"] == per_pair[r["benchmark"], r["pair"]] for r in recs)
    assert {r["student_init_digest"] for r in recs if r["method"] == "teacher"} == {None}
    assert len({r["student_init_digest"] for r in recs if r["method"] != "teacher"}) == 2  # one per student model
    assert len(list(out.rglob("done"))) == 12 and len(list(out.rglob("metrics.jsonl"))) == 8
    report = (out / "report.md").read_text()
    assert "| teacher |" in report and "| student-only |" in report and "| kd |" in report

    again = run("run", "--suite", "smoke", "--out", str(out), "--benchmarks", "game2real,rgb2irrg")
    assert again.output.count("already done, skipped") == 12
    assert records(out) == recs


def test_changed_hyperparameter_is_a_new_run_and_recorded(tmp_path):
    out = tmp_path / "out"
    base = ["run", "--suite", "smoke", "--out", str(out), "--benchmarks", "clear2adverse", "--pairs", "tiny-f2f",
            "--methods", "kd"]
    run(*base)
    second = run(*base, "--set", "method.kd.temperature=4")
    assert "kd seed 0: in-domain" in second.output
    temps = sorted({r["hparams"]["temperature"] for r in records(out) if r["method"] == "kd"})
    assert temps == [1.0, 4.0]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    args = ["run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2l", "--methods",
            "student-only", "--set", "train.steps=6"]
    run(*args, "--out", str(tmp_path / "a"), "--seeds", "0,1")
    run(*args, "--out", str(tmp_path / "b"), "--seeds", "0")

    def scores(root, seed):
        return {r["domain"]: r["miou"] for r in records(root) if r["method"] == "student-only" and r["seed"] == seed}

    assert scores(tmp_path / "a", 0) == scores(tmp_path / "b", 0)
    assert scores(tmp_path / "a", 0) != scores(tmp_path / "a", 1)


def test_cnn_student_runs_kd(tmp_path):
    out = tmp_path / "out"
    run("run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2l-cnn", "--methods", "kd",
        "--out", str(out))
    recs = [r for r in records(out) if r["method"] == "kd"]
    assert recs and recs[0]["student"] == "tiny-resnet"


def test_report_command_and_list(tmp_path):
    out = tmp_path / "out"
    run("run", "--suite", "smoke", "--benchmarks", "rgb2irrg", "--pairs", "tiny-f2f", "--seeds", "0,1",
        "--out", str(out))
    result = run("report", str(out), "--out", str(tmp_path / "rep"))
    assert ("| method | mean ID | mean OOD | Δ student-only | Δ best baseline | seeds | train s | train steps |"
            in result.output)
    assert "aerial-irrg" not in result.output.split("per-target tables in")[0], "per-target columns stay in report.md"
    assert "±" in result.output
    assert ("| method | aerial-irrg | aerial-irrg-b | rgb2irrg avg | rgb2irrg ID (aerial-rgb) | mean ID | mean OOD |"
            in (tmp_path / "rep" / "report.md").read_text())
    assert (tmp_path / "rep" / "report.md").is_file()
    assert {p.suffix for p in (tmp_path / "rep" / "tables").iterdir()} == {".csv", ".tex"}
    assert list((tmp_path / "rep" / "plots").glob("*.svg")) and list((tmp_path / "rep" / "plots").glob("*.png"))
    for what, expected in [("methods", "student-only"), ("suites", "synth5"), ("pairs", "F2L"),
                           ("benchmarks", "smoke/game2real"), ("domains", "aerial-irrg")]:
        assert expected in run("list", what).output


def test_train_steps_column_counts_every_stage(tmp_path):
    """The report's *train steps* is a run's budget: GKD's proxy, source-distillation and task stages summed."""
    out = tmp_path / "out"
    run("run", "--suite", "smoke", "--benchmarks", "game2real", "--pairs", "tiny-f2l", "--methods", "kd,gkd",
        "--set", "train.steps=5", "--set", "method.gkd.proxy_steps=3", "--set", "method.gkd.distill_steps=7",
        "--out", str(out))
    stages = {r["method"]: [s["steps"] for s in r["stages"]] for r in records(out) if r["method"] in ("kd", "gkd")}
    assert stages == {"kd": [5], "gkd": [3, 7, 5]}
    result = run("report", str(out), "--out", str(tmp_path / "rep"), "--format", "md,csv")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[7].strip(" |")
            for line in result.output.splitlines() if line.startswith(("| kd ", "| gkd ", "| teacher "))}
    assert rows == {"kd": "5", "gkd": "15", "teacher": "–"}


def test_report_refuses_a_table_that_mixes_teacher_weights(tmp_path):
    out = tmp_path / "out"
    run("run", "--suite", "smoke", "--out", str(out), "--benchmarks", "rgb2irrg", "--pairs", "tiny-f2f",
        "--methods", "kd")
    kd_records = next(p for p in out.rglob("records.jsonl") if "/kd/" in str(p))
    lines = [json.loads(line) for line in kd_records.read_text().splitlines()]
    kd_records.write_text("".join(json.dumps({**r, "teacher_digest": "0" * 16}) + "\n" for r in lines))
    (out / "report.md").unlink()
    refused = CliRunner().invoke(cli, ["report", str(out)])
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "smoke rgb2irrg tiny-f2f mixes runs made with 2 different teacher weights (000000000000, " in refused.output
    assert not (out / "report.md").exists(), "nothing written for a refused report"
