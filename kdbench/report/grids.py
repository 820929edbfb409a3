"""Qualitative grids: per benchmark and teacher->student pair, what the methods predict on the same target images.

One row per saved target sample (every target domain of the benchmark, the first
:data:`kdbench.engine.predictions.SAMPLES` images of its test split, as each run saved them); columns: the input
image, the ground truth (both saved by the teacher's run), the teacher, student-only, then every other method the
report shows (its method selection; ablations left out unless named in ``--methods``, as the radar). Label maps
are drawn in the benchmark's palette (``kdbench.report.gallery``: ignore in black), with the class legend
underneath.

**Which run fills a method's cells**: among its runs on the benchmark in the report's scope (under a selection
rule, the chosen trial's), the one of the lowest seed. A run recorded before runs saved predictions leaves its
cells blank with a note; a benchmark none of whose runs saved any is not drawn (the report says so once, through a
figure without files: :data:`NO_PREDICTIONS`).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from PIL import Image as PILImage

from kdbench.data.sources import domain_classes
from kdbench.engine.predictions import SAMPLES, prediction_file, read_map, read_rgb
from kdbench.report.figures import Figure, PlotInput, register_plot
from kdbench.report.frames import roles
from kdbench.report.gallery import colourise, domain_palette, draw_cell, legend
from kdbench.report.plots import PNG_DPI, figure_style, save_figure

#: the widest the grid of cells may be, in inches, before its cells shrink (report.md shows it page-wide)
MAX_WIDTH = 12.0
#: a cell's width in inches: as wide as MAX_WIDTH allows, within these bounds
CELL_WIDTH = (0.8, 1.1)
#: the widest cell aspect (width / height) a row keeps; a wider image is shown in a cell this wide
MAX_ASPECT = 2.2
FONT = 9
#: the space between two target domains' rows, in cell heights
DOMAIN_GAP = 0.2
NOTE = "no\npredictions"
#: the report's sentence where a grid is not drawn
NO_PREDICTIONS = ("Qualitative grids are drawn only where runs saved predictions; runs recorded before they did "
                  "(no `predictions/` folder in the run directory) leave no grid.")


@dataclass(frozen=True)
class Sample:
    """One grid row: sample ``index`` (0-based) of target ``domain``."""

    domain: str
    index: int

    @property
    def label(self) -> str:
        return f"{self.domain} #{self.index + 1}"


@dataclass(frozen=True)
class Column:
    """One grid column: ``kind`` "image", "label" (both from the teacher's run) or "prediction" of ``method``,
    read from ``run`` (None: the method has no run here)."""

    title: str
    kind: str
    method: str
    run: Path | None


@dataclass
class Grid:
    """A composed grid: the figure, each (row, column)'s axes, and whether a cell holds a picture (False: blank
    with a note)."""

    figure: MplFigure
    rows: list[Sample]
    columns: list[Column]
    axes: dict[tuple[int, int], Axes]
    filled: dict[tuple[int, int], bool]

    def pixel_boxes(self) -> dict[tuple[int, int], tuple[int, int, int, int]]:
        """Each cell's (left, top, right, bottom) in pixels of the PNG :func:`write_grid` saves (tight bounding
        box, as ``kdbench.report.plots.save_figure`` writes it)."""
        fig = self.figure
        renderer = FigureCanvasAgg(fig).get_renderer()
        tight = fig.get_tightbbox(renderer).padded(_PAD_INCHES)
        width, height = fig.get_size_inches()
        boxes = {}
        for key, ax in self.axes.items():
            box = ax.get_position()
            boxes[key] = (round((box.x0 * width - tight.x0) * PNG_DPI), round((tight.y1 - box.y1 * height) * PNG_DPI),
                          round((box.x1 * width - tight.x0) * PNG_DPI), round((tight.y1 - box.y0 * height) * PNG_DPI))
        return boxes


_PAD_INCHES = 0.1  # matplotlib's savefig.pad_inches, which save_figure leaves at its default


def shown_runs(scores: pd.DataFrame, benchmark: str) -> dict[str, pd.Series]:
    """Each method label's run on ``benchmark`` whose predictions the grid shows: its lowest seed (then lowest
    trial)."""
    runs = scores[scores.benchmark == benchmark].sort_values(["seed", "trial"], kind="stable")
    return {method: group.iloc[0] for method, group in runs.groupby("method", sort=False)}


def grid_columns(view: PlotInput, benchmark: str) -> list[Column]:
    """The image and ground-truth columns (the teacher's run), then a column per shown method with a run here."""
    runs = shown_runs(view.scores, benchmark)
    role = roles(view.scores)
    teacher = next((Path(r.run_path) for m, r in runs.items() if role.get(m) == "teacher"), None)
    columns = [Column("image", "image", "", teacher), Column("ground truth", "label", "", teacher)]
    for method in view.shown_methods:
        if method in runs:
            columns.append(Column(method, "prediction", method, Path(runs[method].run_path)))
    return columns


def cell_file(column: Column, sample: Sample) -> Path | None:
    """The saved file a cell shows, None where there is none."""
    if column.run is None:
        return None
    path = prediction_file(column.run, sample.domain, sample.index, "" if column.kind == "prediction" else column.kind)
    return path if path.is_file() else None


def grid_rows(columns: list[Column], targets: list[str]) -> list[Sample]:
    """Every target sample some cell of ``columns`` has a file for, in target then sample order."""
    samples = [Sample(d, i) for d in targets for i in range(SAMPLES)]
    return [s for s in samples if any(cell_file(c, s) is not None for c in columns if c.kind == "prediction")]


def _shape(path: Path) -> tuple[int, int]:
    """(height, width) of a saved PNG, read from its header."""
    with PILImage.open(path) as image:
        return image.height, image.width


def _picture(path: Path, kind: str, palette) -> np.ndarray:
    return read_rgb(path) if kind == "image" else colourise(read_map(path), palette)


def _blank(ax: Axes, shape: tuple[int, int], note: str, size: float) -> None:
    draw_cell(ax, np.full((*shape, 3), 255, dtype=np.uint8))
    for spine in ax.spines.values():
        spine.set_edgecolor("0.75")
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=size, color="0.45",
            linespacing=1.1)


def _wrap(title: str, width: float) -> str:
    """A column title wrapped to a cell ``width`` inches wide at :data:`FONT` points."""
    return "\n".join(textwrap.wrap(title, max(6, int(width / (0.58 * FONT / 72))), break_on_hyphens=True))


def _cell_specs(fig: MplFigure, rows: list[Sample], heights: list[float], columns: int) -> dict[tuple[int, int], Any]:
    """The grid position of every (row, column): rows of one domain together, :data:`DOMAIN_GAP` cells between
    domains, cells as tall as ``heights``."""
    domains = list(dict.fromkeys(s.domain for s in rows))
    groups = [[r for r, s in enumerate(rows) if s.domain == d] for d in domains]
    outer = fig.add_gridspec(len(groups), 1, left=0, right=1, bottom=0, top=1,
                             hspace=DOMAIN_GAP * len(groups) / len(rows),
                             height_ratios=[sum(heights[r] for r in g) for g in groups])
    cells = {}
    for g, group in enumerate(groups):
        inner = outer[g].subgridspec(len(group), columns, wspace=0.04, hspace=0.04,
                                     height_ratios=[heights[r] for r in group])
        cells.update({(r, c): inner[i, c] for i, r in enumerate(group) for c in range(columns)})
    return cells


def compose(view: PlotInput, benchmark: str) -> Grid | None:
    """The grid of one benchmark of the view's pair (see the module docstring); None where no run saved a
    prediction of any target sample."""
    columns = grid_columns(view, benchmark)
    rows = grid_rows(columns, view.targets.get(benchmark, []))
    if not rows:
        return None
    source = view.scores[view.scores.benchmark == benchmark].source.iloc[0]
    palette = domain_palette(source)
    files = {(r, c): cell_file(col, row) for r, row in enumerate(rows) for c, col in enumerate(columns)}
    shapes: dict[str, tuple[int, int]] = {}
    for (r, _), path in files.items():
        if path is not None:
            shapes.setdefault(rows[r].domain, _shape(path))
    cell_width = min(max(MAX_WIDTH / len(columns), CELL_WIDTH[0]), CELL_WIDTH[1])
    heights = [cell_width / min(shapes[s.domain][1] / shapes[s.domain][0], MAX_ASPECT) for s in rows]
    width, height = cell_width * len(columns), sum(heights)
    note_size = min(FONT, 7.5 * cell_width / CELL_WIDTH[0])
    with figure_style():
        fig = MplFigure(figsize=(width, height), dpi=PNG_DPI)
        cells = _cell_specs(fig, rows, heights, len(columns))
        axes, filled = {}, {}
        for r, sample in enumerate(rows):
            for c, column in enumerate(columns):
                ax = axes[r, c] = fig.add_subplot(cells[r, c])
                path = files[r, c]
                filled[r, c] = path is not None
                if path is not None:
                    draw_cell(ax, _picture(path, column.kind, palette))
                else:
                    _blank(ax, shapes[sample.domain], NOTE if column.kind == "prediction" else "not saved",
                           note_size)
                if c == 0:
                    ax.set_ylabel(sample.label, fontsize=FONT, rotation=0, ha="right", va="center", labelpad=4)
        lines = 1
        for c, column in enumerate(columns):
            title = _wrap(column.title, cell_width)
            lines = max(lines, title.count("\n") + 1)
            axes[0, c].set_title(title, fontsize=FONT, pad=3)
        top = 1 + (0.12 + lines * FONT * 1.25 / 72) / height
        fig.text(0.5, top, f"{view.title}, {benchmark}: target predictions", ha="center", va="bottom",
                 fontsize=FONT + 2)
        legend(fig, domain_classes(source), palette, width, -0.06 / height)
    return Grid(fig, rows, columns, axes, filled)


def write_grid(grid: Grid, stem: Path, formats: list[str]) -> list[Path]:
    """Save a grid once per format next to ``stem`` (PNG at the report's resolution)."""
    return save_figure(grid.figure, stem, formats)


def caption(view: PlotInput, benchmark: str, grid: Grid) -> str:
    """What a grid shows, which run fills each method's cells, and which cells are blank."""
    runs = shown_runs(view.scores, benchmark)
    shown = [c.method for c in grid.columns if c.kind == "prediction"]
    seeds = sorted({int(runs[m].seed) for m in shown if roles(view.scores).get(m) != "teacher"})
    trials = [f"{m}: trial {int(runs[m].trial)}" for m in shown if int(runs[m].trial)]
    targets = list(dict.fromkeys(s.domain for s in grid.rows))
    per_domain = max(sum(1 for s in grid.rows if s.domain == d) for d in targets)
    text = (f"{view.title}, {benchmark}: predictions on the first {per_domain} test images of each target domain "
            f"({', '.join(targets)}). Columns: the input image and its ground truth (saved by the teacher's run), "
            f"then each method's prediction, ignore in black as in the ground truth. A method's cells show its run "
            f"of the lowest seed (seed {', '.join(map(str, seeds or [0]))})"
            f"{'; ' + ', '.join(trials) if trials else ''}; under a selection rule, of the trial it chose.")
    blank = [c.method for c_index, c in enumerate(grid.columns) if c.kind == "prediction"
             and not any(grid.filled[r, c_index] for r in range(len(grid.rows)))]
    if blank:
        text += f" Blank: {', '.join(blank)}, recorded before runs saved predictions."
    if not any(grid.filled[r, 0] for r in range(len(grid.rows))):
        text += " The teacher's run saved no images, so the image and ground-truth cells are blank."
    return text + view.left_out


@register_plot("grids", scope="pair", order=50)
def grids(view: PlotInput) -> list[Figure]:
    """Per benchmark: every method's predictions on the first test images of each target domain."""
    figures = []
    ran = [b for b in view.benchmarks if b in set(view.scores.benchmark)]
    for benchmark in ran:
        grid = compose(view, benchmark)
        if grid is None:
            continue
        paths = write_grid(grid, view.place.stem(benchmark, folder="grids"), view.formats)
        figures.append(Figure(paths, f"{benchmark} predictions", caption(view, benchmark, grid)))
    if len(figures) < len(ran):
        figures.append(Figure([], caption=NO_PREDICTIONS))
    return figures


__all__ = ["NO_PREDICTIONS", "Grid", "Sample", "caption", "compose", "grid_columns", "grids", "shown_runs",
           "write_grid"]
