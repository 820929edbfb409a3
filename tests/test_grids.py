"""Qualitative grids (kdbench.report.grids): on a tiny results tree whose prediction PNGs encode where they belong
(their quadrants hold the target domain, the sample and the column), every cell of the written PNG shows the palette
colours of the file that belongs there; blank cells, the method selection and the report's one note."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import cli
from kdbench.engine.predictions import indexed_png, prediction_file, rgb_png
from kdbench.report.figures import Place, PlotInput
from kdbench.report.frames import method_order, read_results, roles, run_scores
from kdbench.report.gallery import domain_palette
from kdbench.report.grids import NO_PREDICTIONS, compose, grids, write_grid
from kdbench.report.plots import method_colors

SOURCE, TARGETS = "game", ("city", "dashcam")
#: (height, width) of each domain's saved maps: dashcam's are wide, as real datasets' are
SHAPES = {"game": (8, 8), "city": (8, 8), "dashcam": (8, 16)}
SAMPLES = 4
#: the class a run's maps hold in their lower half: which column they belong in
CODES = {"teacher": 1, "student-only": 2, "kd": 3, "gkd": 4}
GROUND_TRUTH = 5
WRONG = 5  # every pixel of the maps of a run the grid must not show (kd seed 1)


def encoded(domain: str, sample: int, code: int) -> np.ndarray:
    """Top-left quadrant: the domain's index; top-right: the sample; lower half: ``code``."""
    h, w = SHAPES[domain]
    array = np.full((h, w), code, dtype=np.uint8)
    array[:h // 2, :w // 2] = TARGETS.index(domain) if domain in TARGETS else 0
    array[:h // 2, w // 2:] = sample
    return array


def image_colours(domain: str, sample: int) -> dict[str, tuple[int, int, int]]:
    return {"tl": (200, 10 + 40 * (TARGETS.index(domain) if domain in TARGETS else 2), 0),
            "tr": (0, 200, 10 + 50 * sample), "bottom": (30, 60, 90)}


def encoded_image(domain: str, sample: int) -> np.ndarray:
    h, w = SHAPES[domain]
    colours = image_colours(domain, sample)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:h // 2, :w // 2], image[:h // 2, w // 2:], image[h // 2:] = colours["tl"], colours["tr"], colours["bottom"]
    return image


def write_run(root: Path, method: str, seed: int, predictions: bool = True, fill: int | None = None) -> Path:
    run = root / "mini" / "game2real" / "f2l" / method / f"seed{seed}-x"
    run.mkdir(parents=True)
    identity = {"suite": "mini", "benchmark": "game2real", "method": method, "seed": seed, "hparams": {},
                "data": {"image_size": 8}, "eval": {"images": 4}}
    if method != "teacher":
        identity["train"] = {"steps": 3}
    (run / "config.yaml").write_text(json.dumps({"identity": identity}))
    common = {"suite": "mini", "benchmark": "game2real", "pair": "f2l", "pair_kind": "F2L", "teacher": "t",
              "student": "s", "method": method, "seed": seed, "protocol": "whole", "protocol_caption": "whole",
              "teacher_digest": "abc", "device": "cpu", "precision": "fp32", "versions": {"kdbench": "0"}}
    rows = [{**common, "domain": d, "role": "source" if d == SOURCE else "target", "miou": 50.0}
            for d in (SOURCE, *TARGETS)]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "done").write_text("")
    if predictions:
        for domain in (SOURCE, *TARGETS):
            palette = domain_palette(domain)
            for i in range(SAMPLES):
                array = encoded(domain, i, CODES[method]) if fill is None else np.full(SHAPES[domain], fill, np.uint8)
                path = prediction_file(run, domain, i)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(indexed_png(array, palette))
                if method == "teacher":
                    prediction_file(run, domain, i, "image").write_bytes(rgb_png(encoded_image(domain, i)))
                    prediction_file(run, domain, i, "label").write_bytes(
                        indexed_png(encoded(domain, i, GROUND_TRUTH), palette))
    return run


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "results"
    for method in CODES:
        write_run(root, method, 0)
    write_run(root, "kd", 1, fill=WRONG)
    write_run(root, "cwd", 0, predictions=False)  # recorded before runs saved predictions
    return root


def view_of(root: Path, out: Path, methods: list[str] | None = None) -> PlotInput:
    scores = run_scores(read_results(root).records)
    if methods is not None:
        scores = scores[scores.method.isin(methods)]
    order = method_order(scores)
    return PlotInput(scores, ["game2real"], {"game2real": list(TARGETS)}, order, method_colors(order, roles(scores)),
                     frozenset(), "mini f2l (F2L)", ["png"], Place(out, lambda suffix: f"mini-f2l-{suffix}"))


def quadrant_points(box: tuple[int, int, int, int], shape: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Pixel (x, y) of the middle of each encoded region of a cell drawn in ``box``, for a map of ``shape``."""
    left, top, right, bottom = box
    h, w = shape
    shown_w = right - left
    shown_h = shown_w * h / w  # the cell keeps the map's aspect: it fills the box's width
    y0 = top + ((bottom - top) - shown_h) / 2
    return {"tl": (round(left + shown_w / 4), round(y0 + shown_h / 4)),
            "tr": (round(left + 3 * shown_w / 4), round(y0 + shown_h / 4)),
            "bottom": (round(left + shown_w / 2), round(y0 + 3 * shown_h / 4))}


def test_every_cell_shows_the_file_that_belongs_there(tree, tmp_path):
    view = view_of(tree, tmp_path / "rep")
    grid = compose(view, "game2real")
    titles = [c.title for c in grid.columns]
    assert titles == ["image", "ground truth", "teacher", "student-only", "cwd", "gkd", "kd"]
    assert [(s.domain, s.index) for s in grid.rows] == [(d, i) for d in TARGETS for i in range(SAMPLES)]
    png = write_grid(grid, tmp_path / "grid", ["png"])[0]
    pixels = np.asarray(Image.open(png).convert("RGB"))
    boxes = grid.pixel_boxes()
    palette = domain_palette(SOURCE)
    for r, sample in enumerate(grid.rows):
        shape = SHAPES[sample.domain]
        for c, column in enumerate(grid.columns):
            points = quadrant_points(boxes[r, c], shape)
            if column.title == "image":
                expected = image_colours(sample.domain, sample.index)
            elif column.title == "cwd":
                expected = dict.fromkeys(points, (255, 255, 255))  # blank, with its note in the middle only
                points = {k: (x, y) for k, (x, y) in points.items() if k != "bottom"}
            else:
                code = GROUND_TRUTH if column.title == "ground truth" else CODES[column.title]
                expected = {"tl": palette[TARGETS.index(sample.domain)], "tr": palette[sample.index],
                            "bottom": palette[code]}
            for key, (x, y) in points.items():
                assert tuple(pixels[y, x]) == tuple(expected[key]), (sample.label, column.title, key)
    assert not any(grid.filled[r, titles.index("cwd")] for r in range(len(grid.rows)))


def test_the_method_selection_chooses_the_columns(tree, tmp_path):
    grid = compose(view_of(tree, tmp_path / "rep", ["teacher", "student-only", "kd"]), "game2real")
    assert [c.title for c in grid.columns] == ["image", "ground truth", "teacher", "student-only", "kd"]


def test_the_registered_plot_captions_its_grid_and_its_blank_cells(tree, tmp_path):
    figures = grids(view_of(tree, tmp_path / "rep"))
    assert len(figures) == 1 and figures[0].paths == [tmp_path / "rep" / "plots" / "grids" / "mini-f2l-game2real.png"]
    assert "lowest seed (seed 0)" in figures[0].caption and "Blank: cwd" in figures[0].caption
    with Image.open(figures[0].paths[0]) as image:
        assert image.width < 2200 and image.height < 2600


def test_runs_without_predictions_draw_no_grid_and_the_report_says_so_once(tmp_path, monkeypatch):
    root = tmp_path / "results"
    for method in CODES:
        write_run(root, method, 0, predictions=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "results", "--out", "rep", "--format", "md,png"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "rep" / "plots" / "grids").exists()
    assert (tmp_path / "rep" / "report.md").read_text().count(NO_PREDICTIONS) == 1


def test_the_report_embeds_the_grid(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "results", "--out", "rep", "--format", "md,png"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "![game2real predictions](plots/grids/mini-f2l-game2real.png)" in text
    assert NO_PREDICTIONS not in text
