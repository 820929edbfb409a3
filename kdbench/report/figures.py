"""The report's figures as a registry: a plot is one function with one signature, results frame in, figure files
out, registered under a name. ``kdbench report`` draws every registered plot, in ``order``, for each scope it
declares: once per suite and setting (``scope="setting"``: every pair's runs) or once per teacher->student pair
(``scope="pair"``). A new plot is one function in one file, registered with :func:`register_plot` in-process or by
an entry point in the ``kdbench.plots`` group that names its :class:`Plot` (docs/report.md).

The built-in plots wrap :mod:`kdbench.report.plots`: the ID-vs-OOD scatter, the radar and bar charts, and the
training-loss curves; :mod:`kdbench.report.grids` registers the qualitative grids (imported with the package).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdbench.registry import Registry
from kdbench.report import plots
from kdbench.report.frames import method_order, roles

SCOPES = ("setting", "pair")


@dataclass(frozen=True)
class Place:
    """Where a plot's files go: ``stem(suffix)`` is ``<out>/plots/<base>-<suffix>`` (a setting's base puts the
    setting's hash last, as every report has since the first release), ``folder`` a sub-folder of ``plots``."""

    out: Path
    naming: Callable[[str], str]

    def stem(self, suffix: str, folder: str = "") -> Path:
        return self.out / "plots" / folder / self.naming(suffix) if folder else self.out / "plots" / self.naming(suffix)


@dataclass(frozen=True)
class PlotInput:
    """What every plot gets. ``scores``: ``frames.run_scores`` rows of the scope (a setting's runs, or one pair's);
    ``benchmarks`` in suite order with their ``targets``; ``methods``: every method label of the setting, in report
    order, with fixed ``colors``; ``ablations``: labels a summary chart may leave out to stay readable (empty when
    the user chose the methods); ``title``: the scope ("synth5", "synth5 f2l (F2L)"); ``formats``: png and/or svg."""

    scores: pd.DataFrame
    benchmarks: list[str]
    targets: dict[str, list[str]]
    methods: list[str]
    colors: dict[str, str]
    ablations: frozenset[str]
    title: str
    formats: list[str]
    place: Place

    @property
    def shown_methods(self) -> list[str]:
        return [m for m in self.methods if m not in self.ablations]

    @property
    def left_out(self) -> str:
        """The sentence a chart that leaves the ablations out adds to its caption."""
        return f" Ablations ({', '.join(sorted(self.ablations))}) are in the table, not here." if self.ablations else ""


@dataclass(frozen=True)
class Figure:
    """One drawn figure: its files, and how report.md shows it: embedded with ``alt`` and ``caption``, or, where
    ``link`` is set, as a link named ``link`` in one line with the plot's other linked figures. A figure without
    files is a note: its ``caption`` as a line of report.md, once however many scopes return it (a plot saying
    why it drew nothing)."""

    paths: list[Path]
    alt: str = ""
    caption: str = ""
    link: str = ""


@dataclass(frozen=True)
class Plot:
    """A registered plot. ``draw`` turns a :class:`PlotInput` into figures (none when there is nothing to show);
    ``links_intro``: the text before the list of a plot whose figures are links."""

    draw: Callable[[PlotInput], list[Figure]]
    scope: str = "pair"
    order: int = 100
    links_intro: str = ""
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"plot scope {self.scope!r}: must be one of {', '.join(SCOPES)}")


PLOTS: Registry[Plot] = Registry("plot", entry_point_group="kdbench.plots")


def register_plot(name: str, scope: str = "pair", order: int = 100, links_intro: str = "", description: str = ""):
    """Decorator: register ``draw(PlotInput) -> list[Figure]`` as the plot ``name``."""
    def decorate(draw: Callable[[PlotInput], list[Figure]]) -> Callable[[PlotInput], list[Figure]]:
        PLOTS.register(name)(Plot(draw, scope, order, links_intro, description or (draw.__doc__ or "").strip()))
        return draw

    return decorate


def plots_of(scope: str) -> list[tuple[str, Plot]]:
    """The registered plots of ``scope``, in draw order (then by name)."""
    found = [(name, PLOTS.get(name)) for name in PLOTS.names()]
    return sorted(((n, p) for n, p in found if p.scope == scope), key=lambda item: (item[1].order, item[0]))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


@register_plot("id-ood", scope="setting", order=10)
def id_ood(view: PlotInput) -> list[Figure]:
    """In-domain vs mean out-of-domain mIoU, one point per method and pair."""
    written = plots.id_ood_scatter(view.scores, view.benchmarks, view.methods, view.place.stem("id-ood"),
                                   view.formats, f"{view.title}: in-domain vs out-of-domain mIoU", view.colors)
    caption = (f"In-domain vs mean out-of-domain mIoU over {', '.join(view.benchmarks)}, one point per method and "
               "pair, error bars: std over seeds.")
    return [Figure(written, "in-domain vs out-of-domain", caption)] if written else []


@register_plot("radar", order=20)
def radar(view: PlotInput) -> list[Figure]:
    """Radar over every target domain (mean over seeds)."""
    written = plots.radar(view.scores, view.targets, view.shown_methods, view.place.stem("radar"), view.formats,
                          f"{view.title}: radar", view.colors)
    caption = f"{view.title}: Radar over every target domain (mean over seeds).{view.left_out}"
    return [Figure(written, "radar", caption)] if written else []


@register_plot("bars", order=30)
def bars(view: PlotInput) -> list[Figure]:
    """mIoU per target domain and benchmark average."""
    written = plots.target_bars(view.scores, view.targets, view.shown_methods, view.place.stem("bars"),
                                view.formats, f"{view.title}: bars", view.colors)
    caption = (f"{view.title}: mIoU per target domain and benchmark average, error bars: std over seeds."
               f"{view.left_out}")
    return [Figure(written, "bars", caption)] if written else []


@register_plot("loss", order=40, links_intro="Training-loss curves (every logged term, each seed)")
def loss(view: PlotInput) -> list[Figure]:
    """Every logged loss term of each method's runs over its training stages."""
    role = roles(view.scores)
    figures = []
    for method in method_order(view.scores):
        if role[method] == "teacher":
            continue
        written = plots.loss_curves(view.scores[view.scores.method == method], view.benchmarks,
                                    view.place.stem(_slug(method), folder="loss"), view.formats,
                                    f"{view.title}: {method} training loss")
        if written:
            figures.append(Figure(written, link=method))
    return figures
