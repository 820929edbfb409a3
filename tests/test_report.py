"""`kdbench report` on a committed, deliberately messy results tree (tests/fixtures/report/results, written by
make_fixture.py): golden tables, hand-computed cells, messy-input handling, filters, formats and plots.

Set KDBENCH_UPDATE_GOLDEN=1 to rewrite the expected files after a deliberate change (and read the diff).
"""

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import cli

FIXTURE = Path(__file__).parent / "fixtures" / "report"
MAIN, LONG = "mini-f2l-647ad1", "mini-f2l-31bc8b"  # the two settings' table names (train.steps 300 and 600)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def report(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, ["report", "results", *args])
    assert result.exit_code == code, result.output
    return result


def markdown_row(text: str, method: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {method} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_golden_tables_and_report(workdir):
    report("--out", "rep", "--format", "md,csv,tex")
    expected = FIXTURE / "expected"
    produced = {p.name: p for p in [workdir / "rep" / "report.md", *(workdir / "rep" / "tables").iterdir()]}
    if os.environ.get("KDBENCH_UPDATE_GOLDEN"):
        shutil.rmtree(expected, ignore_errors=True)
        expected.mkdir()
        for name, path in produced.items():
            shutil.copy(path, expected / name)
    assert sorted(produced) == sorted(p.name for p in expected.iterdir())
    for name, path in produced.items():
        assert path.read_text() == (expected / name).read_text(), f"{name} differs from tests/fixtures/report/expected"


def test_cells_match_hand_computation(workdir):
    report("--out", "rep", "--format", "md")
    text = (workdir / "rep" / "report.md").read_text()
    columns = ["city", "dashcam", "game2real avg", "game2real ID", "aerial-irrg", "aerial-irrg-b", "rgb2irrg avg",
               "rgb2irrg ID", "mean ID", "mean OOD", "Δ student-only", "Δ best baseline", "seeds", "train s",
               "train steps", "Params (M)", "+params (M)", "GFLOPs", "img/s"]
    student = dict(zip(columns, markdown_row(text, "student-only"), strict=True))
    # game2real avg per seed: (30+20)/2 = 25, (32+22)/2 = 27 -> 26.0 ± 1.4 (sample std sqrt(2))
    assert student["game2real avg"] == "26.0 ± 1.4"
    # mean OOD per seed: (25+15)/2 = 20, (27+17)/2 = 22 -> 21.0 ± 1.4
    assert student["mean OOD"] == "21.0 ± 1.4" and student["seeds"] == "2" and student["train steps"] == "300"
    # the fixture's records predate the cost fields: not measured, "–"
    assert [student[c] for c in ("Params (M)", "+params (M)", "GFLOPs", "img/s")] == ["–"] * 4
    gkd = dict(zip(columns, markdown_row(text, "gkd"), strict=True))
    # gkd has no seed 1 on rgb2irrg: only seed 0 is complete -> (42.5+25)/2 = 33.75, marked n=1
    assert gkd["mean OOD"] == "33.8 <sup>n=1</sup>" and gkd["aerial-irrg"] == "**30.0 <sup>n=1</sup>**"
    assert gkd["Δ student-only"] == "+12.8"  # 33.75 - 21.0
    # best baseline for gkd leaves out its own ablation gkd-no-cls: kd (temperature=1.0) at 25.375 -> +8.375
    assert gkd["Δ best baseline"] == "+8.4"
    no_cls = dict(zip(columns, markdown_row(text, "gkd-no-cls"), strict=True))
    assert no_cls["mean OOD"] == "**34.2 ± 0.2**"  # (43.25+25)/2 = 34.125, (43.75+25)/2 = 34.375: best, bold
    teacher = dict(zip(columns, markdown_row(text, "teacher"), strict=True))
    assert teacher["game2real ID"] == "80.0" and "**" not in "".join(teacher.values())  # never marked best


def test_messy_inputs_are_reported_not_averaged(workdir):
    report("--out", "rep", "--format", "md")
    text = (workdir / "rep" / "report.md").read_text()
    assert "## Suite mini (train.steps=300)" in text and "## Suite mini (train.steps=600)" in text
    # kd at 600 steps (city 37) is its own table: the 300-step kd rows keep their two seeds (35, 36) only
    assert "| kd (temperature=1.0) | 35.5 ± 0.7 |" in text and "| kd | **37.0** |" in text
    assert "kd (temperature=4.0) on game2real: seed 1" in text and "gkd on rgb2irrg: seed 1" in text
    assert "`results/mini/rgb2irrg/f2l/cwd/seed0-main`: TrainingError: loss became nan at step 12 (cwd)" in text
    assert "results/mini/rgb2irrg/f2l/kd/seed1-main/records.jsonl:2: unreadable record line skipped" in text


def test_plots_exist_open_and_are_embedded(workdir):
    report("--format", "md,png,svg")
    plots = workdir / "results" / "plots"
    pngs, svgs = sorted(plots.rglob("*.png")), sorted(plots.rglob("*.svg"))
    assert {p.stem for p in pngs} == {p.stem for p in svgs}
    names = {p.stem for p in pngs}
    assert {"mini-id-ood-647ad1", f"{MAIN}-radar", f"{MAIN}-bars", f"{MAIN}-gkd"} <= names
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert min(image.size) > 300, png
    for svg in svgs:
        ET.parse(svg)
    text = (workdir / "results" / "report.md").read_text()
    assert "![radar](plots/mini-f2l-647ad1-radar.png)" in text
    assert "[gkd](plots/loss/mini-f2l-647ad1-gkd.png)" in text
    assert "Ablations (gkd-no-cls) are in the table, not here." in text  # radar and bars stay readable
    radar = (workdir / "results" / "plots" / f"{MAIN}-radar.svg").read_text()
    assert "gkd-no-cls" not in radar and "student-only" in radar
    assert not (workdir / "results" / "tables").exists()  # not asked for


def test_an_ablation_without_its_method_is_drawn(workdir):
    """Charts leave an ablation out beside its method; a run of the ablation alone (a control) is drawn."""
    for method in (workdir / "results").glob("mini/*/f2l/gkd"):
        shutil.rmtree(method)
    report("--out", "rep", "--format", "md,svg")
    text = (workdir / "rep" / "report.md").read_text()
    assert "are in the table, not here" not in text
    assert "gkd-no-cls" in (workdir / "rep" / "plots" / f"{MAIN}-radar.svg").read_text()


def test_filters_narrow_the_tables(workdir):
    report("--out", "rep", "--format", "md", "--methods", "gkd", "--benchmarks", "game2real")
    text = (workdir / "rep" / "report.md").read_text()
    rows = [ln.split("|")[1].strip() for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert set(rows) - {"method"} == {"teacher", "student-only", "gkd"}
    assert "aerial-irrg" not in text


@pytest.mark.parametrize("args, message", [
    (["--methods", "nope"], "--methods: nope not in these results"),
    (["--pairs", "f2f"], "--pairs: f2f not in these results"),
    (["--format", "md,pdf"], "--format: unknown pdf"),
    (["--format", ""], "--format: choose at least one"),
])
def test_bad_options_get_one_line_and_write_nothing(workdir, args, message):
    result = report("--out", "rep", *args, code=1)
    assert message in result.output and "Traceback" not in result.output
    assert not (workdir / "rep").exists()


def test_missing_and_empty_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = CliRunner().invoke(cli, ["report", "results"])
    assert missing.exit_code == 1 and "results directory results does not exist" in missing.output
    (tmp_path / "results").mkdir()
    empty = CliRunner().invoke(cli, ["report", "results"])
    assert empty.exit_code == 1 and "no finished runs under results" in empty.output


def test_per_run_checkpoint_setting_splits_no_row(workdir):
    """GKD's stage-2 runs read one stage-1 file per seed (``stage1_from``): one row, not one per file."""
    import json

    for records in (workdir / "results" / "mini").glob("*/f2l/gkd/*/records.jsonl"):
        rows = [json.loads(line) for line in records.read_text().splitlines()]
        seed = rows[0]["seed"]
        path = f"runs/{rows[0]['benchmark']}/seed{seed}/stage-domain-agnostic.pt"
        records.write_text("".join(json.dumps({**r, "hparams": {**r["hparams"], "stage1_from": path}}) + "\n"
                                   for r in rows))
    report("--out", "rep", "--format", "md")
    text = (workdir / "rep" / "report.md").read_text()
    assert "| gkd | **46.0 ± 1.4** |" in text and "stage1_from=" not in text
