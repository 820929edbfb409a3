"""Domain galleries: what each domain of a benchmark looks like, as one PNG per benchmark (``kdbench show domains``).

A gallery has one column per domain (the source first, titled ``source: <name>``, then every target, titled
``target: <name>``) and two rows per sample (the image, then its label map in the label set's palette), with a
class legend underneath (label 255 drawn black and named ``ignore``).

**Samples** are the same images every time: the first N of each domain's evaluation list. For synthetic domains
that is the test split a sweep scores (rendered as :class:`kdbench.launch.Workspace` renders it: split name
``SYNTHETIC_SPLITS["test"]``, ``eval.images`` images at ``data.image_size``); for real datasets the images
:meth:`kdbench.data.real.access.RealData.test_items` lists (its evaluation split, less the held-out validation
slice where the two are one split), read by the real-data loaders and resized to a fixed display height
(:data:`DISPLAY_HEIGHT`, aspect kept; labels nearest-neighbour).

**Palettes** (:func:`palette_for`): a real dataset is drawn in its class table's palette
(``kdbench/data/real/tables``: Cityscapes' official 19-class colours, mmseg's ISPRS colours, ...). A synthetic
label set takes the colours of the table that names most of its classes (:data:`PALETTE_TABLES`; names compared
ignoring case and ``_`` versus space): Cityscapes' official 19-class colours for the urban classes, mmseg's ISPRS
colours for the aerial ones; a class that table does not name takes the next unused colour of matplotlib's
qualitative ``tab10`` map.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from kdbench.config import Config
from kdbench.data.real.labels import class_table
from kdbench.data.sources import domain_classes, is_real
from kdbench.errors import UserError
from kdbench.report.plots import PNG_DPI, figure_style, save_figure
from kdbench.suite import Benchmark, Suite

if TYPE_CHECKING:
    from kdbench.data.real.access import RealData

#: inches of one cell's height (a cell is one image or one label map)
CELL_HEIGHT = 1.5
#: the smallest cell width in inches, so that a column title such as ``target: aerial-irrg-b`` fits
MIN_CELL_WIDTH = 1.75
#: pixel height real images are resized to: one image pixel per PNG pixel at the cell's size
DISPLAY_HEIGHT = round(CELL_HEIGHT * PNG_DPI)
#: widest cell aspect (width / height); a wider image is shown scaled down to the cell's width
MAX_ASPECT = 2.2
IGNORE_COLOUR = (0, 0, 0)
#: class tables whose colours a synthetic label set borrows by class name: the one naming most of its classes
PALETTE_TABLES = ("cityscapes19", "isprs6")


@dataclass(frozen=True)
class DomainSamples:
    """The samples drawn of one domain: ``images`` H×W×3 uint8 RGB, ``labels`` H×W uint8 (255 = ignore)."""

    name: str
    role: str
    images: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]

    @property
    def title(self) -> str:
        return f"{self.role}: {self.name}"


@dataclass(frozen=True)
class BenchmarkSamples:
    """Everything one gallery shows: the domains' samples in column order, the label set and its palette."""

    suite: str
    benchmark: Benchmark
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    domains: tuple[DomainSamples, ...]

    @property
    def rows(self) -> int:
        """Samples shown per column: the most any domain has (a domain with fewer leaves its lower cells blank)."""
        return max(len(d.images) for d in self.domains)


@dataclass(frozen=True)
class Cell:
    """What one grid cell shows: sample ``sample`` (0-based) of ``domain``, its ``image`` or its ``label`` map."""

    row: int
    column: int
    domain: str
    sample: int
    kind: str


@dataclass
class Gallery:
    """A drawn gallery: the figure, every filled cell and the axes of every (row, column) of the grid."""

    figure: Figure
    cells: list[Cell]
    axes: dict[tuple[int, int], Axes]

    def shown(self, row: int, column: int) -> np.ndarray:
        """The RGB array drawn in a cell (the label map already in palette colours)."""
        return np.asarray(self.axes[row, column].images[0].get_array())


# --- palettes -------------------------------------------------------------------------------------------------

def _key(name: str) -> str:
    """A class name as tables are matched: lower case, ``_`` as a space."""
    return name.lower().replace("_", " ").strip()


def palette_for(classes: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """An RGB colour per class of a synthetic label set: the colours of the class table of :data:`PALETTE_TABLES`
    that names the most of its classes (the first such table on a tie), by class name; a class that table does not
    name takes the next ``tab10`` colour not yet taken (see the module docstring)."""
    tables = [class_table(name) for name in PALETTE_TABLES]
    known = [{_key(c): colour for c, colour in zip(t.classes, t.palette, strict=True)} for t in tables]
    best = max(known, key=lambda table: sum(_key(c) in table for c in classes))
    colours: list[tuple[int, int, int] | None] = [best.get(_key(c)) for c in classes]
    spare = (tuple(int(round(255 * v)) for v in rgb) for rgb in colormaps["tab10"].colors)
    for i, colour in enumerate(colours):
        if colour is None:
            colours[i] = next(c for c in spare if c not in colours and c != IGNORE_COLOUR)
    return tuple(colours)  # type: ignore[arg-type]


def domain_palette(name: str) -> tuple[tuple[int, int, int], ...]:
    """The palette a domain's label maps are drawn in: a real dataset's class-table palette, else
    :func:`palette_for` its classes."""
    return _real_palette(name) if is_real(name) else palette_for(domain_classes(name))


def colourise(label: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """H×W class ids -> H×W×3 uint8 RGB in ``palette``; 255 and any id outside the palette in black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = IGNORE_COLOUR
    lut[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[np.asarray(label, dtype=np.uint8)]


# --- samples --------------------------------------------------------------------------------------------------

def _synthetic(cfg: Config, name: str, count: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The first ``count`` images and labels of a synthetic domain's test split, as a sweep renders it."""
    from kdbench.data.domains import get_domain
    from kdbench.data.synthetic import make_split
    from kdbench.launch import SYNTHETIC_SPLITS

    if cfg.eval.images <= 0:
        raise UserError("eval.images must be positive for synthetic domains (0 means 'all' on real datasets only)")
    split = make_split(get_domain(name), SYNTHETIC_SPLITS["test"], cfg.eval.images, cfg.data.image_size)
    images = split.images[:count].permute(0, 2, 3, 1).numpy()
    return tuple(np.ascontiguousarray(i) for i in images), tuple(split.labels[:count].numpy())


def fit_display(image: np.ndarray, label: np.ndarray, height: int = DISPLAY_HEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """A real image (area resampling) and its label (nearest) resized to ``height`` pixels, aspect kept."""
    h, w = image.shape[:2]
    size = (max(1, round(w * height / h)), height)
    shown = cv2.resize(image, size, interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)
    return shown, cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)


def _real(data: RealData, name: str, count: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The first ``count`` images of a real dataset's evaluation list, read and resized for display."""
    from kdbench.data.real.files import read_image, read_label

    spec = data.spec(name)
    pairs = [fit_display(read_image(item.image), read_label(spec, item.label))
             for item in data.test_items(name)[:count]]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def _real_data(cfg: Config) -> RealData:
    """The real datasets under ``data.root``, read on this process's CPU."""
    import torch

    from kdbench.data.real.access import RealData
    from kdbench.engine.distributed import DistInfo

    return RealData(cfg, torch.device("cpu"), DistInfo())


def benchmark_samples(cfg: Config, suite: Suite, benchmark: str, count: int,
                      data: RealData | None = None) -> BenchmarkSamples:
    """The first ``count`` samples of every domain of one benchmark (fewer where a domain has fewer);
    ``data``: the open real datasets, for real domains (opened here when needed and not given)."""
    bench = suite.benchmarks[benchmark]
    domains = []
    for name in bench.domains:
        if is_real(name):
            data = data if data is not None else _real_data(cfg)
            images, labels = _real(data, name, count)
        else:
            images, labels = _synthetic(cfg, name, count)
        domains.append(DomainSamples(name, "source" if name == bench.source else "target", images, labels))
    return BenchmarkSamples(suite.name, bench, domain_classes(bench.source), domain_palette(bench.source),
                            tuple(domains))


def _real_palette(name: str) -> tuple[tuple[int, int, int], ...]:
    """A real dataset's class-table palette."""
    from kdbench.data.real.catalog import get_dataset

    return get_dataset(name).palette


# --- the figure -----------------------------------------------------------------------------------------------

def _aspect(samples: BenchmarkSamples) -> float:
    """The cell aspect (width / height): the widest sample's, at most :data:`MAX_ASPECT`."""
    widest = max(i.shape[1] / i.shape[0] for d in samples.domains for i in d.images)
    return min(widest, MAX_ASPECT)


def legend(fig: Figure, classes: Sequence[str], palette: Sequence[tuple[int, int, int]], width: float,
           bottom: float) -> None:
    """Class swatches in palette colours plus ``ignore`` in black, in as many columns as ``width`` inches hold,
    centred under figure height fraction ``bottom``."""
    names = [*(c.replace("_", " ") for c in classes), "ignore"]
    colours = [*palette, IGNORE_COLOUR]
    handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="0.35", linewidth=0.6, label=n)
               for n, c in zip(names, colours, strict=True)]
    entry = 0.35 + 0.06 * max(len(n) for n in names)  # inches: swatch, gaps and the longest label at 8 pt
    rows = math.ceil(len(names) / max(1, min(len(names), int(width / entry))))
    ncol = math.ceil(len(names) / rows)  # rows as even as they go: no orphan entry on a row of its own
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, bottom), ncol=ncol, frameon=False,
               handlelength=1.2, handleheight=1.2, columnspacing=1.2, title="classes", title_fontsize=9)


def _title(fig: Figure, samples: BenchmarkSamples, width: float, top: float) -> None:
    """The suite and benchmark name, and the benchmark's description wrapped to the figure's width."""
    bench = samples.benchmark
    if bench.description:
        fig.text(0.5, top, textwrap.fill(bench.description, max(30, int(width * 14))), ha="center", va="bottom",
                 fontsize=8.5, linespacing=1.3)
        top += (0.08 + 0.155 * len(textwrap.wrap(bench.description, max(30, int(width * 14))))) / fig.get_figheight()
    fig.text(0.5, top, f"{samples.suite} / {bench.name}", ha="center", va="bottom", fontsize=11)


def draw_cell(ax: Axes, array: np.ndarray) -> None:
    """One image in a cell, pixel for pixel (nearest), without ticks."""
    ax.imshow(array, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)


def _cell(ax: Axes, samples: BenchmarkSamples, domain: DomainSamples, row: int, column: int) -> Cell | None:
    """Draw grid row ``row`` of a domain's column (even rows images, odd rows label maps); ``None`` if blank."""
    sample, kind = divmod(row, 2)
    if column == 0:  # row labels on the first column, blank or not
        ax.set_ylabel(f"#{sample + 1} {('image', 'labels')[kind]}", fontsize=8)
    if sample >= len(domain.images):  # a domain with fewer images than others: a blank cell of the same shape
        like = next(d.images[0] for d in (domain, *samples.domains) if d.images)
        draw_cell(ax, np.full_like(like, 255))
        for spine in ax.spines.values():  # kept (not hidden) so the row label sits as in the other rows
            spine.set_edgecolor("white")
        return None
    if kind == 0:
        draw_cell(ax, domain.images[sample])
    else:
        draw_cell(ax, colourise(domain.labels[sample], samples.palette))
    return Cell(row, column, domain.name, sample, ("image", "label")[kind])


def gallery_figure(samples: BenchmarkSamples) -> Gallery:
    """Draw one benchmark's gallery (see the module docstring); :attr:`Gallery.cells` says which sample of which
    domain each cell shows. Grid row ``2k`` holds sample ``k``'s images, row ``2k + 1`` its label maps; each
    (image, labels) pair sits closer together than one pair to the next."""
    columns, pairs = len(samples.domains), samples.rows
    cell_width = max(MIN_CELL_WIDTH, CELL_HEIGHT * _aspect(samples))
    width, height = columns * cell_width, 2 * pairs * CELL_HEIGHT
    with figure_style():
        fig = Figure(figsize=(width, height))
        outer = fig.add_gridspec(pairs, columns, left=0, right=1, bottom=0, top=1, wspace=0.06, hspace=0.08)
        axes: dict[tuple[int, int], Axes] = {}
        cells: list[Cell] = []
        for column, domain in enumerate(samples.domains):
            for pair in range(pairs):
                inner = outer[pair, column].subgridspec(2, 1, hspace=0.03)
                for kind in range(2):
                    row = 2 * pair + kind
                    ax = axes[row, column] = fig.add_subplot(inner[kind])
                    cell = _cell(ax, samples, domain, row, column)
                    if cell is not None:
                        cells.append(cell)
            axes[0, column].set_title(domain.title, fontsize=9, pad=4)
        _title(fig, samples, width, 1 + 0.4 / height)
        legend(fig, samples.classes, samples.palette, width, -0.08 / height)
    return Gallery(fig, cells, axes)


def gallery_name(samples: BenchmarkSamples) -> str:
    """The file stem of a benchmark's gallery: ``domains-<suite>-<benchmark>``."""
    return f"domains-{samples.suite}-{samples.benchmark.name}"


def write_gallery(samples: BenchmarkSamples, out: Path) -> Path:
    """Draw and write one gallery PNG into ``out``; its path."""
    gallery = gallery_figure(samples)
    return save_figure(gallery.figure, Path(out) / gallery_name(samples), ["png"])[0]


def parse_samples(value: str | int) -> int:
    """``--samples``: a positive integer, else a UserError."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--samples must be a positive integer, got {value!r}") from None
    if count < 1:
        raise UserError(f"--samples must be at least 1, got {count}")
    return count


def collect(cfg: Config, suite: Suite, benchmarks: Sequence[str], count: int) -> list[BenchmarkSamples]:
    """Every selected benchmark's samples, all read before anything is drawn (a missing dataset writes nothing)."""
    needs_real = any(is_real(d) for b in benchmarks for d in suite.benchmarks[b].domains)
    data = _real_data(cfg) if needs_real else None
    return [benchmark_samples(cfg, suite, b, count, data) for b in benchmarks]


__all__ = ["BenchmarkSamples", "Cell", "DomainSamples", "Gallery", "benchmark_samples", "collect", "colourise",
           "domain_palette", "draw_cell", "fit_display", "gallery_figure", "legend", "palette_for", "parse_samples",
           "write_gallery"]
