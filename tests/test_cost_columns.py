"""The paper table's cost columns (Params, +params, GFLOPs, img/s): `kdbench report` on a tiny results tree with
known cost fields writes them to Markdown, CSV and LaTeX, found by key; runs recorded before the fields show "–";
and the cost helpers of kdbench.engine.cost."""

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.engine.cost import eval_input_size, forward_gflops, images_per_second
from kdbench.engine.evaluator import get_protocol
from kdbench.engine.trainer import StageResult
from kdbench.report.frames import read_results, run_scores
from kdbench.report.render import significant
from kdbench.report.tables import EXTRA_PARAMS, GFLOPS, IMAGES_PER_S, PARAMS, paper_table, summary_view

COSTS = {  # method -> per seed: student_params, extra_params, gflops, train_images_per_s
    "teacher": [(86_600_000, None, 350.25, None)],
    "student-only": [(22_050_000, 0, 46.2, 100.0), (22_050_000, 0, 46.2, 120.0)],
    "kd": [(22_050_000, 1_234_567, 46.2, 50.0), (22_050_000, 1_234_567, 46.2, 70.0)],
    "cwd": [None, None],  # recorded before the cost fields existed
}
HEADER = "| Params (M) | +params (M) | GFLOPs | img/s |"


def write_tree(root: Path) -> None:
    for method, seeds in COSTS.items():
        for seed, cost in enumerate(seeds):
            run = root / "mini" / "game2real" / "f2l" / method / f"seed{seed}-x"
            run.mkdir(parents=True)
            identity = {"suite": "mini", "benchmark": "game2real", "method": method, "seed": seed, "hparams": {},
                        "data": {"image_size": 8}}
            if method != "teacher":
                identity["train"] = {"steps": 3}
            (run / "config.yaml").write_text(json.dumps({"identity": identity}))
            common = {"suite": "mini", "benchmark": "game2real", "pair": "f2l", "pair_kind": "F2L", "teacher": "t",
                      "student": "s", "method": method, "seed": seed, "protocol": "whole",
                      "protocol_caption": "whole", "device": "cpu", "precision": "fp32",
                      "versions": {"kdbench": "0"}}
            if cost is not None:
                common.update(zip(("student_params", "extra_params", "gflops", "train_images_per_s"), cost,
                                  strict=True))
            rows = [{**common, "domain": d, "role": r, "miou": 40.0 + seed}
                    for d, r in (("game", "source"), ("city", "target"))]
            (run / "records.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
            (run / "done").write_text("")


@pytest.fixture
def report(tmp_path, monkeypatch):
    write_tree(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "results", "--out", "rep", "--format", "md,csv,tex"])
    assert result.exit_code == 0, result.output
    return tmp_path / "rep", result.output


def cost_cells(markdown: str, method: str) -> list[str]:
    header = next(line for line in markdown.splitlines() if line.startswith("| method |"))
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {method} |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(names, [c.strip() for c in line.strip("|").split("|")], strict=True))
    return [cells[n] for n in ("Params (M)", "+params (M)", "GFLOPs", "img/s")]


def test_markdown_shows_seed_means_and_dashes_where_not_recorded(report):
    out, terminal = report
    text = (out / "report.md").read_text()
    assert HEADER in text
    assert cost_cells(text, "teacher") == ["86.6", "–", "350", "–"]  # the teacher's own model, never trained here
    assert cost_cells(text, "student-only") == ["22.1", "0", "46.2", "110"]  # img/s: (100 + 120) / 2
    assert cost_cells(text, "kd") == ["22.1", "1.23", "46.2", "60.0"]
    assert cost_cells(text, "cwd") == ["–", "–", "–", "–"]
    assert "Params (M)" not in terminal, "the terminal's summary stays narrow"


def test_csv_holds_the_unrounded_means(report):
    out, _ = report
    rows = list(csv.DictReader(io.StringIO(next((out / "tables").glob("*.csv")).read_text())))
    means = {(r["method"], r["column"]): r["mean"] for r in rows}
    assert means["kd", "Params (M)"] == "22.0500" and means["kd", "+params (M)"] == "1.2346"
    assert means["teacher", "GFLOPs"] == "350.2500" and means["student-only", "img/s"] == "110.0000"
    assert means["teacher", "+params (M)"] == "" and means["cwd", "img/s"] == ""


def test_latex_has_the_columns(report):
    out, _ = report
    tex = next((out / "tables").glob("*.tex")).read_text()
    assert "Params (M) & +params (M) & GFLOPs & img/s" in tex
    assert "86.6 & -- & 350 & --" in tex and "22.1 & 1.23 & 46.2 & 60.0" in tex


def test_cost_columns_are_found_by_key(tmp_path):
    write_tree(tmp_path)
    scores = run_scores(read_results(tmp_path).records)
    table = paper_table(scores, ["game2real"], {"game2real": ["city"]})
    kd = next(r for r in table.rows if r.method == "kd")
    assert kd.cells[table.index(PARAMS)].mean == pytest.approx(22.05)
    assert kd.cells[table.index(EXTRA_PARAMS)].mean == pytest.approx(1.234567)
    assert kd.cells[table.index(GFLOPS)].mean == pytest.approx(46.2)
    assert kd.cells[table.index(IMAGES_PER_S)].mean == pytest.approx(60.0)
    assert kd.cells[table.index(IMAGES_PER_S)].n == 2
    with pytest.raises(StopIteration):
        summary_view(table).index(PARAMS)


def test_significant_digits():
    assert [significant(v) for v in (86.57, 0.02134, 1234.5, 5.126, 0.0, 350.25)] == [
        "86.6", "0.0213", "1234", "5.13", "0", "350"]


def test_eval_input_size_per_protocol():
    assert eval_input_size(get_protocol("whole"), 32, real=False) == 32
    assert eval_input_size(get_protocol("slide-24"), 32, real=False) == 24
    assert eval_input_size(get_protocol("slide-24"), 16, real=False) == 16  # the window is the whole image
    assert eval_input_size(get_protocol("gkd-512"), 256, real=True) == 512  # test-resized images exceed the window


def test_images_per_second_weighs_each_stage_by_its_batch():
    stages = [StageResult("a", 10, 2.0, {}), StageResult("b", 5, 3.0, {})]
    assert images_per_second(stages, {"a": 8, "b": 64}) == pytest.approx((10 * 8 + 5 * 64) / 5.0)
    assert images_per_second([], {}) is None


def test_forward_gflops_counts_fp32_under_any_autocast_and_keeps_the_mode():
    """One 1×1 convolution 3 -> 4 channels on an 8×8 image: 2 · 3 · 4 · 64 FLOPs, computed in fp32 whatever the
    autocast around it, in eval mode; the module goes back to training mode."""
    conv = torch.nn.Conv2d(3, 4, 1, bias=False)
    model = torch.nn.Sequential(conv)
    seen = []
    conv.register_forward_hook(lambda module, args, out: seen.append((out.dtype, module.training)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gflops = forward_gflops(model, 8)
    assert gflops * 1e9 == 2 * 3 * 4 * 64 and model.training and conv.training
    assert seen == [(torch.float32, False)]
