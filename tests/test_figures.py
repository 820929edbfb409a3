"""The plot registry (kdbench.report.figures): the built-in plots are registered entries, and a plot registered
in-process is drawn by `kdbench report` for its scope, its files listed and embedded, with no report code changed."""

import csv
import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.report.figures import PLOTS, Figure, Plot, PlotInput, plots_of, register_plot
from kdbench.report.plots import figure_style, save_figure

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "results"


def test_builtins_are_registered_in_draw_order():
    assert [n for n, _ in plots_of("setting")][:1] == ["id-ood"]
    assert [n for n, _ in plots_of("pair")][:3] == ["radar", "bars", "loss"]
    with pytest.raises(ValueError, match="scope 'run'"):
        Plot(lambda view: [], scope="run")


@pytest.fixture
def seeds_plot():
    calls: list[PlotInput] = []

    def draw(view: PlotInput) -> list[Figure]:
        calls.append(view)
        with figure_style():  # as docs/report.md's "Adding a plot" shows a plugin drawing
            fig, ax = plt.subplots()
            ax.bar(view.shown_methods, [1.0] * len(view.shown_methods))
            paths = save_figure(fig, view.place.stem("seeds"), view.formats)
        assert not plt.fignum_exists(fig.number), "save_figure closes the figure"
        return [Figure(paths, alt="seeds", caption=f"{view.title}: a plugin's plot.")]

    register_plot("test-seeds", scope="pair", order=25)(draw)
    yield calls
    PLOTS._items.pop("test-seeds")


def test_a_registered_plot_is_drawn_per_pair_and_embedded(tmp_path, monkeypatch, seeds_plot):
    shutil.copytree(FIXTURE, tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "results", "--out", "rep", "--format", "md,png"])
    assert result.exit_code == 0, result.output
    assert {view.title for view in seeds_plot} == {"mini f2l (F2L)"}
    assert all("teacher" in view.methods and set(view.scores.pair) == {"f2l"} for view in seeds_plot)
    text = (tmp_path / "rep" / "report.md").read_text()
    for view in seeds_plot:
        png = view.place.stem("seeds").with_suffix(".png")
        assert png.is_file()
        link = f"![seeds]({png.resolve().relative_to((tmp_path / 'rep').resolve()).as_posix()})"
        assert link in text
        at, radar, bars = text.index(link), "Radar over every target domain", "mIoU per target domain and benchmark"
        assert text.rfind(radar, 0, at) > text.rfind(bars, 0, at) and text.find(bars, at) > at, \
            "order 25 draws it between its pair's radar (20) and bars (30)"
    assert "*mini f2l (F2L): a plugin's plot.*" in text


def _with_classes(results: Path) -> None:
    """Give every fixture record two classes: ``a`` = its mIoU, ``b`` = its mIoU - 10 (sources: + 20)."""
    for path in results.rglob("records.jsonl"):
        lines = []
        for text in path.read_text().splitlines():
            try:
                row = json.loads(text)
            except ValueError:
                lines.append(text)
                continue
            bonus = 20.0 if row["role"] == "source" else 0.0
            row["per_class_iou"] = {"a": row["miou"] + bonus, "b": row["miou"] - 10.0 + bonus}
            lines.append(json.dumps(row))
        path.write_text("\n".join(lines) + "\n")


def test_per_class_tables_hold_seed_means_and_name_the_losses(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE, tmp_path / "results")
    _with_classes(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "results", "--out", "rep", "--format", "md,csv"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Per-class IoU on every target domain: [Markdown](per-class/mini-f2l-647ad1.md)" in report
    text = (tmp_path / "rep" / "per-class" / "mini-f2l-647ad1.md").read_text()
    section = text[text.index("→ city"):].split("####")[0]
    # student-only on city: seeds 30 and 32 (test_report's hand computation) -> a = 31.0, b = 21.0
    assert "| student-only | 31.0 | 21.0 |" in section
    assert "Largest losses from source to target" in section
    rows = list(csv.DictReader((tmp_path / "rep" / "per-class" / "mini-f2l-647ad1.csv").open()))
    cell = next(r for r in rows if r["method"] == "student-only" and r["domain"] == "city" and r["class"] == "a")
    assert (float(cell["mean"]), cell["n"]) == (31.0, "2")
