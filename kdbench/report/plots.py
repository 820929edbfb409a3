"""Figures of a kdbench report, drawn from the per-run score frame (one row per training run).

* :func:`id_ood_scatter`: in-domain against mean out-of-domain mIoU, one point per method and student pair (mean
  over seeds, error bars one sample standard deviation), showing whether a method's in-domain gains carry over to
  the unseen target domains.
* :func:`target_bars`: grouped bars of one pair's mIoU on every target domain of every benchmark, plus each
  benchmark's out-of-domain average.
* :func:`radar`: one pair's out-of-domain mIoU as a radar chart with one axis per benchmark and target domain
  ("source→target"), one closed polygon per method, following the radar chart of the GKD paper (Lv et al.,
  CVPR 2026) for its benchmark axes.
* :func:`loss_curves`: one method's logged loss terms over its training stages, read from each run's
  ``metrics.jsonl``.

Colours are fixed per method label by :func:`method_colors` over the full method list (the teacher's row black,
the baseline's grey: rows found by their reference role, ``kdbench.record``), so a method keeps its colour in every
figure. Every function writes ``stem`` with one suffix per requested
format (``png`` at 150 dpi, ``svg`` with text kept as text and no date, so reruns give identical files) and returns
the written paths; a figure with nothing to show writes no file and returns ``[]``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from kdbench.record import reference_of  # noqa: E402

FORMATS = ("png", "svg")
TEACHER_COLOR, BASELINE_COLOR = "#000000", "#808080"
PAIR_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "p", "h", "<", ">", "d")
PNG_DPI = 150
_RC = {"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
       "svg.hashsalt": "kdbench", "svg.fonttype": "none"}
_GREYS = {"#7f7f7f", "#c7c7c7"}


def _lab(hex_color: str) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB hex colour, for colour distances."""
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _distinct_palette(count: int) -> list[str]:
    """``count`` colours: tab10's nine (greys left out) first, then, one at a time, the colour of a pool of
    matplotlib's qualitative maps farthest (CIE76 ΔE) from every colour already taken and from the teacher's black
    and the baseline's grey, so no two methods get look-alike colours (tab20's light/dark pairs did)."""
    base = [c for c in (to_hex(rgb) for rgb in colormaps["tab10"].colors) if c not in _GREYS]
    pool = list(dict.fromkeys(to_hex(rgb) for name in ("Dark2", "Set1", "tab20", "tab20b", "Set2", "Accent")
                              for rgb in colormaps[name].colors))
    # greys, near-greys and colours too pale to see on white left out
    pool = [c for c in pool if c not in base and np.hypot(*_lab(c)[1:]) > 15 and _lab(c)[0] < 85]
    chosen = base[:count]
    taken = [_lab(c) for c in [TEACHER_COLOR, BASELINE_COLOR, *chosen]]
    while len(chosen) < count and pool:
        gaps = [min(float(np.linalg.norm(_lab(c) - t)) for t in taken) for c in pool]
        best = pool.pop(int(np.argmax(gaps)))
        chosen.append(best)
        taken.append(_lab(best))
    return chosen


def role_of(method: str, roles: Mapping[str, str] | None = None) -> str:
    """A method label's reference role: from ``roles`` (a report's ``frames.roles``) where it is known, else from
    the registered method the label names (``kdbench.record.reference_of``; a label is "name" or "name (values)")."""
    if roles is not None and method in roles:
        return roles[method]
    return reference_of(method.split(" (", 1)[0])


def _frame_roles(scores: pd.DataFrame) -> dict[str, str] | None:
    return dict(zip(scores["method"], scores["reference"], strict=True)) if "reference" in scores else None


def method_colors(methods: Sequence[str], roles: Mapping[str, str] | None = None) -> dict[str, str]:
    """A hex colour per method label: the teacher's row black, the baseline's grey (by :func:`role_of`), the others
    in list order from :func:`_distinct_palette` (tab10 for up to nine, then the most distinct colours left;
    repeated past the pool). Pass the full method list of a report so that every figure gives a method the same
    colour whichever subset it plots."""
    fixed = {"teacher": TEACHER_COLOR, "baseline": BASELINE_COLOR}
    methods = list(dict.fromkeys(methods))
    role = {m: role_of(m, roles) for m in methods}
    others = [m for m in methods if role[m] not in fixed]
    palette = _distinct_palette(len(others))
    colors = {m: palette[i % len(palette)] for i, m in enumerate(others)}
    return {m: fixed.get(role[m]) or colors[m] for m in methods}


def _check_formats(formats: Sequence[str]) -> list[str]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {bad}; choose from {list(FORMATS)}")
    return list(dict.fromkeys(formats))


@contextmanager
def figure_style() -> Iterator[None]:
    """The house rcParams for every figure of the report, gallery and grids."""
    with matplotlib.rc_context(_RC):
        yield


def save_figure(fig: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` once per format next to ``stem`` and close it."""
    paths = []
    try:
        stem = Path(stem)
        if formats:
            stem.parent.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            path = stem.with_suffix("." + fmt)
            if fmt == "png":
                fig.savefig(path, format="png", dpi=PNG_DPI, bbox_inches="tight")
            else:
                fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def _present(scores: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    found = set(scores["method"]) if "method" in scores else set()
    return [m for m in dict.fromkeys(methods) if m in found]


def _mean_std(values: pd.Series | Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (std NaN below two values; both NaN for none)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def _legend_handle(color: str, label: str, marker: str = "s", markersize: float = 7) -> Line2D:
    return Line2D([], [], color=color, marker=marker, linestyle="none", markersize=markersize, label=label)


def id_ood_scatter(scores: pd.DataFrame, benchmarks: Sequence[str], methods: Sequence[str], stem: Path,
                   formats: Sequence[str], title: str, colors: Mapping[str, str] | None = None) -> list[Path]:
    """In-domain against mean out-of-domain mIoU, one point per (method, pair).

    Per seed, both scores are averaged over ``benchmarks`` (only seeds with every benchmark count); the point is the
    mean over those seeds with one-standard-deviation error bars (none for one seed). Colour marks the method, the
    marker the pair; the teacher is a black star. ``colors`` defaults to :func:`method_colors` of ``methods``.
    """
    formats = _check_formats(formats)
    benchmarks = list(dict.fromkeys(benchmarks))
    colors = dict(colors) if colors is not None else method_colors(methods, _frame_roles(scores))
    roles = _frame_roles(scores)
    teachers = {m for m in methods if role_of(m, roles) == "teacher"}
    runs = scores[scores["benchmark"].isin(benchmarks)] if len(scores) else scores
    present = _present(runs, methods)
    pairs = sorted(runs.loc[runs["method"].isin(present), "pair"].dropna().unique()) if present else []
    markers = {p: PAIR_MARKERS[i % len(PAIR_MARKERS)] for i, p in enumerate(pairs)}
    points = []
    for method in present:
        for pair in pairs:
            group = runs[(runs["method"] == method) & (runs["pair"] == pair)]
            per_seed = []
            for _, seed_runs in group.groupby("seed", sort=True):
                by_bench = seed_runs.groupby("benchmark")[["in-domain", "out-of-domain"]].mean()
                by_bench = by_bench.reindex(benchmarks)
                if by_bench.notna().all().all():
                    per_seed.append(by_bench.mean())
            if per_seed:
                seeds = pd.DataFrame(per_seed)
                x, xerr = _mean_std(seeds["in-domain"])
                y, yerr = _mean_std(seeds["out-of-domain"])
                points.append((method, pair, x, y, xerr, yerr))
    if not points:
        return []
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        for method, pair, x, y, xerr, yerr in points:
            teacher = method in teachers
            ax.errorbar(x, y, xerr=None if math.isnan(xerr) else xerr, yerr=None if math.isnan(yerr) else yerr,
                        marker="*" if teacher else markers[pair], markersize=13 if teacher else 7,
                        color=colors.get(method, TEACHER_COLOR), ecolor=colors.get(method, TEACHER_COLOR),
                        elinewidth=0.8, capsize=2, linestyle="none", markeredgecolor="white" if not teacher else None,
                        markeredgewidth=0.5, alpha=0.9, zorder=3 if teacher else 2)
        ax.set_xlabel("in-domain mIoU (%)")
        ax.set_ylabel("mean out-of-domain mIoU (%)")
        ax.set_title(title)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.margins(0.08)
        if len(pairs) > 1:
            ax.autoscale_view()
            _label_teachers(ax, [(pair, x, y) for method, pair, x, y, _, _ in points if method in teachers])
        plotted = list(dict.fromkeys(p[0] for p in points))
        method_handles = [_legend_handle(colors.get(m, TEACHER_COLOR), m, marker="*" if m in teachers else "o",
                                         markersize=11 if m in teachers else 7) for m in plotted]
        pair_handles = [_legend_handle("#555555", p, marker=markers[p])
                        for p in pairs if any(pt[1] == p and pt[0] not in teachers for pt in points)]
        first = ax.legend(handles=method_handles, title="method", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                          borderaxespad=0.0, frameon=False)
        if pair_handles:
            ax.add_artist(first)
            box = first.get_window_extent(fig.canvas.get_renderer()).transformed(ax.transAxes.inverted())
            ax.legend(handles=pair_handles, title="pair", loc="upper left", bbox_to_anchor=(1.02, box.y0 - 0.04),
                      borderaxespad=0.0, frameon=False)
        left_out = [m for m in present if m not in plotted]
        if left_out:
            fig.text(0.01, 0.005, f"not shown (no seed with every benchmark: {', '.join(benchmarks)}): "
                     f"{', '.join(left_out)}", fontsize=7, ha="left", va="bottom", wrap=True)
        return save_figure(fig, stem, formats)


def _label_teachers(ax: Any, spots: list[tuple[str, float, float]], gap_pt: float = 10.0) -> None:
    """Name each teacher star by its pair, right of the star; labels closer than ``gap_pt`` points in height are
    pushed apart vertically (a leader line joins a moved label to its star), so no two overlap."""
    merged: dict[tuple[float, float], list[str]] = {}
    for pair, x, y in spots:
        merged.setdefault((round(x, 2), round(y, 2)), []).append(pair)
    to_points = 72.0 / ax.figure.dpi
    placed = sorted(((ax.transData.transform((x, y))[1] * to_points, x, y, ", ".join(names))
                     for (x, y), names in merged.items()))
    last = -math.inf
    for height, x, y, text in placed:
        target = max(height - 3.0, last + gap_pt)
        last = target
        moved = target - (height - 3.0) > 0.5
        ax.annotate(text, (x, y), xytext=(9, target - height), textcoords="offset points", fontsize=8,
                    va="center", arrowprops={"arrowstyle": "-", "color": "#777777", "linewidth": 0.5}
                    if moved else None)


def _target_groups(targets: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str]]:
    """(benchmark, score column, tick label) per bar group: each target, then the benchmark's average."""
    groups = []
    for bench, domains in targets.items():
        groups += [(bench, t, f"{bench}\n{t}") for t in domains]
        groups.append((bench, "out-of-domain", f"{bench}\navg"))
    return groups


def _cell(scores: pd.DataFrame, method: str, bench: str, column: str) -> tuple[float, float]:
    if column not in scores:
        return math.nan, math.nan
    rows = scores[(scores["method"] == method) & (scores["benchmark"] == bench)]
    return _mean_std(rows[column])


def target_bars(scores: pd.DataFrame, targets: Mapping[str, Sequence[str]], methods: Sequence[str], stem: Path,
                formats: Sequence[str], title: str, colors: Mapping[str, str] | None = None) -> list[Path]:
    """Grouped bars for ONE pair: a group per (benchmark, target domain) and an "avg" group per benchmark (its
    out-of-domain mean), a bar per method in ``methods`` order (mean over seeds, error bar one standard deviation).
    A method without a score for a group has no bar there; with no bar at all, no file is written."""
    formats = _check_formats(formats)
    colors = dict(colors) if colors is not None else method_colors(methods, _frame_roles(scores))
    groups = _target_groups(targets)
    present = _present(scores, methods)
    cells = {(m, i): _cell(scores, m, bench, col) for m in present for i, (bench, col, _) in enumerate(groups)}
    drawn = [m for m in present if any(not math.isnan(cells[m, i][0]) for i in range(len(groups)))]
    if not drawn:
        return []
    n = len(drawn)
    width = 0.8 / n
    longest = max(len(line) for _, _, label in groups for line in label.split("\n"))
    inches = max(0.8, 0.3 + 0.17 * n, 0.085 * longest)  # room for the bars and for the tick label under them
    with figure_style():
        fig, ax = plt.subplots(figsize=(min(40.0, max(6.0, 1.0 + len(groups) * inches)), 4.2))
        top = 0.0
        for k, method in enumerate(drawn):
            xs, hs, es = [], [], []
            for i in range(len(groups)):
                mean, std = cells[method, i]
                if not math.isnan(mean):
                    xs.append(i - 0.4 + width * (k + 0.5))
                    hs.append(mean)
                    es.append(std)
                    top = max(top, mean + (0.0 if math.isnan(std) else std))
            color = colors.get(method, TEACHER_COLOR)
            ax.bar(xs, hs, width=width * 0.95, color=color, label=method, zorder=2)
            with_err = [(x, h, e) for x, h, e in zip(xs, hs, es, strict=True) if not math.isnan(e)]
            if with_err:
                ex, eh, ee = zip(*with_err, strict=True)
                ax.errorbar(ex, eh, yerr=ee, fmt="none", color="#333333", elinewidth=0.7, capsize=1.5, zorder=3)
        bounds = [i for i in range(1, len(groups)) if groups[i][0] != groups[i - 1][0]]
        for b in bounds:
            ax.axvline(b - 0.5, color="#999999", linewidth=0.6, zorder=1)
        for i, (_, col, _) in enumerate(groups):
            if col == "out-of-domain":
                ax.axvspan(i - 0.5, i + 0.5, color="#eeeeee", zorder=0)
        ax.set_xticks(range(len(groups)), [g[2] for g in groups])
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_ylim(0, top * 1.08 if top > 0 else 1)
        ax.set_ylabel("mIoU (%)")
        ax.set_title(title)
        ax.grid(True, axis="y", linewidth=0.4, alpha=0.5, zorder=0)
        ax.legend(title="method", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
        return save_figure(fig, stem, formats)


def radar(scores: pd.DataFrame, targets: Mapping[str, Sequence[str]], methods: Sequence[str], stem: Path,
          formats: Sequence[str], title: str, colors: Mapping[str, str] | None = None) -> list[Path]:
    """Radar chart for ONE pair, as in the GKD paper: an axis per (benchmark, target domain) labelled
    "source→target", a closed polygon per method through its mean mIoU over seeds (teacher dashed black,
    the baseline grey), all axes on one radial range from a little below the smallest to a little above the largest
    value drawn. A method lacking any axis is left out (named under the chart). Fewer than three axes, or no
    complete method: no file, ``[]``."""
    formats = _check_formats(formats)
    colors = dict(colors) if colors is not None else method_colors(methods, _frame_roles(scores))
    spokes = [(bench, t) for bench, domains in targets.items() for t in domains]
    if len(spokes) < 3:
        return []
    labels = []
    for bench, t in spokes:
        sources = scores.loc[scores["benchmark"] == bench, "source"].dropna() if "source" in scores else []
        labels.append(f"{sources.iloc[0] if len(sources) else bench}→{t}")
    polygons, incomplete = {}, []
    for method in _present(scores, methods):
        values = [_cell(scores, method, bench, t)[0] for bench, t in spokes]
        if any(math.isnan(v) for v in values):
            incomplete.append(method)
        else:
            polygons[method] = values
    if not polygons:
        return []
    vmin = min(min(v) for v in polygons.values())
    vmax = max(max(v) for v in polygons.values())
    pad = max(1.0, 0.1 * (vmax - vmin))
    lo, hi = max(0.0, vmin - pad), vmax + pad
    angles = [2 * math.pi * i / len(spokes) for i in range(len(spokes))]
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.4, 6.0), subplot_kw={"projection": "polar"})
        ax.set_theta_offset(math.pi / 2)
        ax.set_theta_direction(-1)
        for method, values in polygons.items():
            teacher = role_of(method, _frame_roles(scores)) == "teacher"
            style = {"linestyle": "--", "linewidth": 1.6} if teacher else {"linewidth": 1.4}
            color = colors.get(method, TEACHER_COLOR)
            ax.plot([*angles, angles[0]], [*values, values[0]], color=color, marker="o", markersize=3,
                    label=method, **style)
            if not teacher:
                ax.fill([*angles, angles[0]], [*values, values[0]], color=color, alpha=0.04)
        ax.set_xticks(angles, labels)
        ax.tick_params(axis="x", pad=8)
        ax.set_ylim(lo, hi)
        ax.set_yticks(np.linspace(lo, hi, 5)[1:])
        ax.yaxis.set_major_formatter("{x:.1f}")
        ax.set_rlabel_position(180 / len(spokes))
        ax.set_title(title, pad=24)
        ax.legend(title="method", loc="upper left", bbox_to_anchor=(1.12, 1.0), borderaxespad=0.0, frameon=False)
        caption = f"radial axis: out-of-domain mIoU (%), {lo:.1f} to {hi:.1f}"
        if incomplete:
            caption += "\nnot drawn (missing a target): " + ", ".join(incomplete)
        fig.text(0.5, 0.0, caption, ha="center", va="top", fontsize=8)
        return save_figure(fig, stem, formats)


@dataclass
class LossLog:
    """One run's training log laid out on a cumulative step axis: ``steps`` are the x values, ``terms`` map each
    ``loss*`` key to its values aligned with ``steps`` (NaN where a row lacks it), ``stages`` give each stage's
    name (``None`` when the log names none) and first cumulative step, in logged order."""

    steps: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    stages: list[tuple[str | None, float]] = field(default_factory=list)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``; lines that are not a JSON object with a numeric ``step`` are skipped with a
    warning naming the file and line."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or not _is_number(row.get("step")):
                warnings.warn(f"{path}:{number}: unreadable metrics line skipped", stacklevel=2)
                continue
            rows.append(row)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def loss_log(rows: Sequence[Mapping[str, Any]]) -> LossLog:
    """Lay out ``rows`` (as from :func:`read_metrics`) on one step axis: a stage starts where the ``stage`` name
    changes or the step goes back; each stage is shifted by the previous stage's shift plus its last step plus the
    log interval (the most common step difference)."""
    segments: list[tuple[str | None, list[Mapping[str, Any]]]] = []
    for row in rows:
        stage = row.get("stage")
        if not segments or stage != segments[-1][0] or row["step"] < segments[-1][1][-1]["step"]:
            segments.append((stage, []))
        segments[-1][1].append(row)
    diffs = Counter(b["step"] - a["step"] for _, seg in segments for a, b in pairwise(seg) if b["step"] > a["step"])
    interval = diffs.most_common(1)[0][0] if diffs else 1
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items() if k.startswith("loss") and _is_number(v)))
    log = LossLog(terms={k: [] for k in keys})
    offset = 0.0
    for i, (stage, seg) in enumerate(segments):
        if i:
            offset += segments[i - 1][1][-1]["step"] + interval
        log.stages.append((stage, offset + seg[0]["step"]))
        for row in seg:
            log.steps.append(offset + row["step"])
            for k in keys:
                v = row.get(k)
                log.terms[k].append(float(v) if _is_number(v) else math.nan)
    return log


def _run_logs(runs: pd.DataFrame) -> list[tuple[Any, LossLog]]:
    logs = []
    if "seed" in runs:
        runs = runs.sort_values("seed", kind="stable")
    for _, run in runs.iterrows():
        path = run.get("run_path")
        if not isinstance(path, str | Path) or not str(path):
            continue
        metrics = Path(path) / "metrics.jsonl"
        if not metrics.is_file():
            continue
        log = loss_log(read_metrics(metrics))
        if log.steps and log.terms:
            logs.append((run.get("seed"), log))
    return logs


def _term_order(terms: Sequence[str]) -> list[str]:
    return (["loss"] if "loss" in terms else []) + sorted(t for t in dict.fromkeys(terms) if t != "loss")


def loss_curves(scores: pd.DataFrame, benchmarks: Sequence[str], stem: Path, formats: Sequence[str],
                title: str) -> list[Path]:
    """Training loss terms of ONE (pair, method): a subplot per benchmark (shared y, log scale when every value is
    positive), x the step counted across the stages, a line per ``loss*`` key and seed (one colour per key in every
    subplot, the total ``loss`` black and thicker), dashed lines at stage boundaries with the stage names on top.
    Runs without a ``run_path`` or ``metrics.jsonl`` are skipped; with nothing left, no file is written."""
    formats = _check_formats(formats)
    ran = set(scores["benchmark"]) if len(scores) else set()
    benchmarks = [b for b in dict.fromkeys(benchmarks) if b in ran]  # no panel for a benchmark never run
    panels = {b: _run_logs(scores[scores["benchmark"] == b]) for b in benchmarks}
    if not any(panels.values()):
        return []
    terms = _term_order([k for logs in panels.values() for _, log in logs for k in log.terms])
    palette = [c for c in (to_hex(rgb) for rgb in colormaps["tab10"].colors) if c not in _GREYS]
    term_colors = {t: palette[i % len(palette)] for i, t in enumerate(t for t in terms if t != "loss")}
    term_colors["loss"] = TEACHER_COLOR
    values = np.array([v for logs in panels.values() for _, log in logs for vs in log.terms.values() for v in vs])
    values = values[np.isfinite(values)]
    ncols = min(len(benchmarks), 3)
    nrows = math.ceil(len(benchmarks) / ncols)
    with figure_style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), sharey=True, squeeze=False,
                                 layout="constrained")
        for ax in axes.flat[len(benchmarks):]:
            ax.set_visible(False)
        for ax, bench in zip(axes.flat, benchmarks, strict=False):
            logs = panels[bench]
            ax.set_title(f"{bench} ({len(logs)} run{'s' if len(logs) != 1 else ''})", pad=14)
            ax.set_xlabel("step (over all stages)")
            ax.grid(True, linewidth=0.4, alpha=0.5)
            if not logs:
                ax.text(0.5, 0.5, "no training log", transform=ax.transAxes, ha="center", va="center")
                continue
            for _, log in logs:
                for term, ys in log.terms.items():
                    total = term == "loss"
                    ax.plot(log.steps, ys, color=term_colors[term], linewidth=1.6 if total else 0.9,
                            alpha=0.75 if total else 0.6)
            stages = max((log.stages for _, log in logs), key=len)
            marker = blended_transform_factory(ax.transData, ax.transAxes)
            for name, start in stages:
                if start > 0:
                    ax.axvline(start, color="#666666", linestyle="--", linewidth=0.8)
                if name is not None:
                    ax.text(start, 1.01, name, transform=marker, ha="left", va="bottom", fontsize=8)
        for row in axes:
            row[0].set_ylabel("loss")
        if values.size and (values > 0).all():
            axes.flat[0].set_yscale("log")
        handles = [Line2D([], [], color=term_colors[t], linewidth=1.6 if t == "loss" else 0.9, label=t) for t in terms]
        fig.legend(handles=handles, title="term (a line per seed)", loc="outside right upper", frameon=False)
        fig.suptitle(title)
        return save_figure(fig, stem, formats)
