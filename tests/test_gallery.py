"""`kdbench show domains`: domain galleries through the CLI, the composition of one gallery (right image in the right
cell), palettes, bad inputs, and dg5 on a tiny fixture tree of the real datasets."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import cli
from kdbench.data.real.labels import class_table, encoding
from kdbench.data.scenes import AERIAL_CLASSES, URBAN_CLASSES
from kdbench.engine.runtime import resolve_runtime
from kdbench.launch import Workspace
from kdbench.report.gallery import (
    CELL_HEIGHT,
    DISPLAY_HEIGHT,
    MIN_CELL_WIDTH,
    benchmark_samples,
    collect,
    colourise,
    fit_display,
    gallery_figure,
    palette_for,
)
from kdbench.report.plots import PNG_DPI
from kdbench.resolve import resolve_config
from kdbench.testing.fixtures import make_all


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def smoke():
    return resolve_config(None, {"suite": "smoke"})


# --- through the CLI -------------------------------------------------------------------------------------------

def test_smoke_writes_one_decodable_png_per_benchmark_sized_by_its_domains(tmp_path, smoke):
    _, suite = smoke
    result = invoke("show", "domains", "--suite", "smoke", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == sorted(f"domains-smoke-{b}.png" for b in suite.benchmarks)
    for name, bench in suite.benchmarks.items():
        with Image.open(tmp_path / "out" / f"domains-smoke-{name}.png") as png:
            png.load()
            width, height = png.size
        columns, rows = 1 + len(bench.targets), 2 * 4  # smoke images are square: the narrowest cells
        grid_w, grid_h = columns * MIN_CELL_WIDTH * PNG_DPI, rows * CELL_HEIGHT * PNG_DPI
        assert grid_w < width < grid_w + 0.6 * PNG_DPI, (name, width)  # row labels and padding only
        assert grid_h < height < grid_h + 2.5 * PNG_DPI, (name, height)  # titles above, legend below
        assert f"domains-smoke-{name}.png" in result.output


def test_samples_sets_the_rows(tmp_path):
    for n in (1, 2):
        result = invoke("show", "domains", "--suite", "smoke", "--benchmarks", "rgb2irrg", "--samples", str(n),
                        "--out", str(tmp_path / str(n)))
        assert result.exit_code == 0, result.output
    heights = [Image.open(tmp_path / str(n) / "domains-smoke-rgb2irrg.png").size[1] for n in (1, 2)]
    assert heights[1] - heights[0] == pytest.approx(2 * CELL_HEIGHT * PNG_DPI, abs=0.3 * PNG_DPI)


@pytest.mark.parametrize(("args", "expected"), [
    (("--suite", "synth6"), "did you mean 'synth5'?"),
    (("--suite", "smoke", "--benchmarks", "game2reel"), "did you mean 'game2real'?"),
    (("--suite", "smoke", "--benchmarks", "nothing-like-it"), "known benchmarks: game2real"),
    (("--suite", "smoke", "--samples", "0"), "--samples must be at least 1"),
    (("--suite", "smoke", "--samples", "many"), "--samples must be a positive integer"),
])
def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, args, expected):
    out = tmp_path / "out"
    line = one_line_error(invoke("show", "domains", *args, "--out", str(out)))
    assert expected in line
    assert not out.exists()


# --- the composition -------------------------------------------------------------------------------------------

def test_every_cell_shows_the_right_sample_of_the_right_domain(smoke):
    cfg, suite = smoke
    samples = benchmark_samples(cfg, suite, "clear2adverse", 3)
    gallery = gallery_figure(samples)
    bench = suite.benchmarks["clear2adverse"]
    assert [gallery.axes[0, c].get_title() for c in range(3)] == ["source: city", "target: night", "target: fog"]
    # what a sweep scores: the workspace's test split of each domain
    workspace = Workspace(cfg, suite, resolve_runtime("cpu", "off"), echo=lambda _: None)
    assert len(gallery.cells) == 3 * 2 * 3
    for cell in gallery.cells:
        assert cell.domain == bench.domains[cell.column] and cell.sample == cell.row // 2
        split = workspace.split(cell.domain, "test")
        if cell.kind == "image":
            expected = split.images[cell.sample].permute(1, 2, 0).numpy()
        else:
            expected = colourise(split.labels[cell.sample].numpy(), samples.palette)
        np.testing.assert_array_equal(gallery.shown(cell.row, cell.column), expected)
    # the golden check would catch a swap: neighbouring domains and samples differ
    assert not np.array_equal(gallery.shown(0, 0), gallery.shown(0, 1))
    assert not np.array_equal(gallery.shown(0, 0), gallery.shown(2, 0))
    legend = [t.get_text() for t in gallery.figure.legends[0].get_texts()]
    assert legend == [*URBAN_CLASSES, "ignore"]


def test_palettes_come_from_the_project_tables():
    tables = {n: dict(zip(class_table(n).classes, class_table(n).palette, strict=True))
              for n in ("cityscapes19", "isprs6")}
    assert palette_for(URBAN_CLASSES) == tuple(tables["cityscapes19"][c] for c in URBAN_CLASSES)
    assert palette_for(AERIAL_CLASSES) == tuple(tables["isprs6"][c.replace(" ", "_")] for c in AERIAL_CLASSES)
    mixed = palette_for(("road", "unicorn", "sky", "dragon"))
    assert mixed[0] == tables["cityscapes19"]["road"] and len(set(mixed)) == 4 and (0, 0, 0) not in mixed
    shown = colourise(np.array([[0, 1], [255, 7]], dtype=np.uint8), [(10, 20, 30), (40, 50, 60)])
    assert shown.tolist() == [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [0, 0, 0]]]


# --- dg5 on fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data")
    fixtures = make_all(root, None, off_table=False)  # prepared datasets in their converted layout under the root
    return root, fixtures


def test_dg5_galleries_from_a_fixture_tree(tmp_path, real_root, monkeypatch):
    root, fixtures = real_root
    monkeypatch.setenv("KDBENCH_DATA_CACHE", str(tmp_path / "no-cache"))
    result = invoke("show", "domains", "--suite", "dg5", "--data-root", str(root), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["domains-dg5-citys2acdc.png", "domains-dg5-gtav.png", "domains-dg5-potsdam.png"]
    for name in names:
        Image.open(tmp_path / "out" / name).load()

    cfg, suite = resolve_config(None, {"suite": "dg5", "data": {"root": str(root)}})
    samples = collect(cfg, suite, ["gtav"], 4)[0]
    # GTA5 is scored on its training split less the held-out validation slice: 1 of the 2 fixture frames
    assert [len(d.images) for d in samples.domains] == [1, 2, 2, 2]
    assert samples.palette == class_table("cityscapes19").palette
    gallery = gallery_figure(samples)
    first = fixtures["cityscapes"].split("val")[0]  # the first of cityscapes' evaluation list (sorted)
    image, label = fit_display(first.pixels, encoding("cityscapes-labelids").to_train_ids(first.raw))
    assert image.shape[0] == DISPLAY_HEIGHT
    np.testing.assert_array_equal(gallery.shown(0, 1), image)
    np.testing.assert_array_equal(gallery.shown(1, 1), colourise(label, samples.palette))
    assert {(c.row, c.column) for c in gallery.cells if c.column == 0} == {(0, 0), (1, 0)}


def test_dg5_without_a_data_root_or_a_dataset_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA_CACHE", str(tmp_path / "no-cache"))
    out = tmp_path / "out"
    assert "give --data-root DIR" in one_line_error(invoke("show", "domains", "--suite", "dg5", "--out", str(out)))
    (tmp_path / "empty").mkdir()
    line = one_line_error(invoke("show", "domains", "--suite", "dg5", "--benchmarks", "gtav", "--data-root",
                                 str(tmp_path / "empty"), "--out", str(out)))
    assert "dataset gta5" in line
    assert not out.exists()
