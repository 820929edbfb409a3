"""Report figures from a small synthetic score frame: files per format, readable images, expected text, colours,
missing cells, and the training-log layout behind the loss curves."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from kdbench.report.plots import (
    id_ood_scatter,
    loss_curves,
    loss_log,
    method_colors,
    radar,
    read_metrics,
    target_bars,
)

TARGETS = {"game2real": ["city", "dashcam", "street"], "rgb2irrg": ["aerial-irrg", "aerial-irrg-b"]}
SOURCES = {"game2real": "game", "rgb2irrg": "aerial-rgb"}
METHODS = ["teacher", "student-only", "gkd", "cwd (temperature=2.0)"]
SEEDS = (0, 1, 2)


def _scores() -> pd.DataFrame:
    """Teacher (seed 0), student-only and two methods on both benchmarks, two pairs, three seeds; cwd has no
    ``street`` score on f2l seed 0 (the deliberately missing cell)."""
    rows = []
    for pi, pair in enumerate(("f2f", "f2l")):
        for mi, method in enumerate(METHODS):
            for seed in SEEDS if method != "teacher" else (0,):
                for bi, (bench, domains) in enumerate(TARGETS.items()):
                    base = 40.0 + 5 * mi - 3 * pi + bi + 0.5 * seed
                    row = {"suite": "synth5", "setting": "", "benchmark": bench, "source": SOURCES[bench],
                           "pair": pair, "pair_kind": pair.upper(), "method": method, "family": method.split()[0],
                           "seed": seed, "in-domain": base + 20, "train_s": 1.0 + seed, "run_path": None}
                    for ti, t in enumerate(domains):
                        row[t] = base - 2 * ti
                    if method == "cwd (temperature=2.0)" and pair == "f2l":
                        row["street"] = math.nan
                    row["out-of-domain"] = float(pd.Series([row[t] for t in domains]).mean())
                    rows.append(row)
    frame = pd.DataFrame(rows)
    return frame


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    return _scores()


def _svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()
    return "\n".join(t for el in root.iter() for t in (el.text, el.tail) if t and t.strip())


def _check_png(path: Path) -> None:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width > 300 and img.height > 300


def _check_both(paths: list[Path], stem: Path) -> str:
    assert paths == [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    assert all(p.is_file() for p in paths)
    _check_png(paths[0])
    return _svg_text(paths[1])


def test_method_colors_fixed_and_stable():
    colors = method_colors(METHODS)
    assert colors["teacher"] == "#000000" and colors["student-only"] == "#808080"
    assert len(set(colors.values())) == len(METHODS)
    many = ["teacher", "student-only"] + [f"m{i}" for i in range(25)]
    big = method_colors(many)
    assert list(big) == many
    assert "#000000" not in [big[m] for m in many[2:]] and "#808080" not in [big[m] for m in many[2:]]
    assert len({big[m] for m in many[2:20]}) == 18


def test_scatter(tmp_path, scores):
    stem = tmp_path / "fig" / "scatter"
    paths = id_ood_scatter(scores, list(TARGETS), METHODS, stem, ("png", "svg"), "synth5: in vs out")
    text = _check_both(paths, stem)
    for label in [*METHODS, "f2f", "f2l", "in-domain mIoU (%)", "mean out-of-domain mIoU (%)", "synth5: in vs out"]:
        assert label in text


def test_scatter_uses_only_complete_seeds(tmp_path, scores):
    """A seed missing one benchmark is dropped; a method with no complete seed has no point (and no legend)."""
    partial = scores[~((scores.method == "gkd") & (scores.benchmark == "rgb2irrg"))]
    paths = id_ood_scatter(partial, list(TARGETS), METHODS, tmp_path / "s", ["svg"], "t")
    text = _svg_text(paths[0])
    assert "gkd" not in text.split("\n") and "student-only" in text
    assert "not shown (no seed with every benchmark: game2real, rgb2irrg): gkd" in text, "a dropped method is named"
    assert id_ood_scatter(partial[partial.method == "gkd"], list(TARGETS), METHODS, tmp_path / "n", ["svg"], "t") == []


def test_no_two_method_colours_look_alike_even_with_twenty_methods():
    from kdbench.report.plots import _lab

    methods = ["teacher", "student-only"] + [f"m{i}" for i in range(20)]
    colors = [method_colors(methods)[m] for m in methods]
    gaps = [float(((_lab(a) - _lab(b)) ** 2).sum() ** 0.5) for i, a in enumerate(colors) for b in colors[:i]]
    assert min(gaps) > 20, "CIE76 ΔE below 20: two methods would look alike"
    assert method_colors(["teacher", "kd", "cwd"])["kd"] == "#1f77b4", "up to nine methods keep tab10"


def test_teacher_labels_of_nearby_stars_do_not_overlap(tmp_path, scores):
    """Two pairs whose teachers score almost alike: both stars named, the labels apart."""
    import matplotlib.pyplot as plt

    from kdbench.report import plots

    close = scores.copy()
    close.loc[(close.method == "teacher") & (close.pair == "f2l"), ["in-domain", "out-of-domain"]] += [0.02, 0.05]
    close.loc[close.method == "teacher", "in-domain"] = 61.0
    drawn = {}
    real_save = plots.save_figure

    def keep(fig, stem, formats):
        fig.canvas.draw()
        drawn["labels"] = [t for t in fig.axes[0].texts if t.get_text() in ("f2f", "f2l")]
        drawn["boxes"] = [t.get_window_extent() for t in drawn["labels"]]
        return real_save(fig, stem, formats)

    plots.save_figure = keep
    try:
        id_ood_scatter(close, list(TARGETS), METHODS, tmp_path / "s", ["svg"], "t")
    finally:
        plots.save_figure = real_save
        plt.close("all")
    first, second = drawn["boxes"]
    assert len(drawn["labels"]) == 2 and not first.overlaps(second)


def test_target_bars(tmp_path, scores):
    stem = tmp_path / "bars"
    f2l = scores[scores.pair == "f2l"]
    paths = target_bars(f2l, TARGETS, METHODS, stem, ["png", "svg"], "f2l per target")
    text = _check_both(paths, stem)
    for label in [*METHODS, "city", "dashcam", "aerial-irrg-b", "avg", "game2real", "f2l per target"]:
        assert label in text
    with Image.open(paths[0]) as img:
        assert img.width > img.height


def test_png_only(tmp_path, scores):
    stem = tmp_path / "only"
    f2f = scores[scores.pair == "f2f"]
    assert target_bars(f2f, TARGETS, METHODS, stem, ["png"], "t") == [stem.with_suffix(".png")]
    assert radar(f2f, TARGETS, METHODS, tmp_path / "r", ("png",), "t") == [tmp_path / "r.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.png", "r.png"]
    with pytest.raises(ValueError, match="pdf"):
        radar(f2f, TARGETS, METHODS, tmp_path / "x", ["pdf"], "t")


def test_radar(tmp_path, scores):
    stem = tmp_path / "radar"
    paths = radar(scores[scores.pair == "f2f"], TARGETS, METHODS, stem, ["png", "svg"], "f2f radar")
    text = _check_both(paths, stem)
    for label in [*METHODS, "game→city", "game→street", "aerial-rgb→aerial-irrg-b", "f2f radar"]:
        assert label in text
    assert "not drawn" not in text


def test_radar_skips_incomplete_method(tmp_path, scores):
    """cwd lacks ``street`` on f2l (seed 0 only, so its mean still exists): drop every seed's street too."""
    f2l = scores[scores.pair == "f2l"].copy()
    f2l.loc[f2l.method == "cwd (temperature=2.0)", "street"] = math.nan
    paths = radar(f2l, TARGETS, METHODS, tmp_path / "radar", ["svg"], "f2l")
    lines = _svg_text(paths[0]).split("\n")
    assert any("not drawn" in line and "cwd (temperature=2.0)" in line for line in lines)
    assert "cwd (temperature=2.0)" not in lines and "gkd" in lines


def test_radar_needs_three_axes(tmp_path, scores):
    two = {"rgb2irrg": TARGETS["rgb2irrg"]}
    assert radar(scores[scores.pair == "f2f"], two, METHODS, tmp_path / "r", ["png", "svg"], "t") == []
    assert not list(tmp_path.iterdir())


def test_colors_stable_across_subsets(tmp_path, scores):
    """The same method has the same colour in a figure of all methods and in one of a subset."""
    full = method_colors(METHODS)
    f2f = scores[scores.pair == "f2f"]
    subset = f2f[f2f.method.isin(["teacher", "cwd (temperature=2.0)"])]
    svg_all = target_bars(f2f, TARGETS, METHODS, tmp_path / "all", ["svg"], "t")[0].read_text()
    svg_sub = target_bars(subset, TARGETS, METHODS, tmp_path / "sub", ["svg"], "t")[0].read_text()
    cwd = full["cwd (temperature=2.0)"]
    assert cwd in svg_all and cwd in svg_sub
    assert full["gkd"] in svg_all and full["gkd"] not in svg_sub


def test_svg_reproducible(tmp_path, scores):
    f2f = scores[scores.pair == "f2f"]
    a = radar(f2f, TARGETS, METHODS, tmp_path / "a", ["svg"], "t")[0].read_bytes()
    b = radar(f2f, TARGETS, METHODS, tmp_path / "b", ["svg"], "t")[0].read_bytes()
    assert a == b


def _write_metrics(path: Path, garbage_line: int | None = None) -> None:
    lines = []
    for stage, steps in (("domain-agnostic", range(0, 40, 10)), ("domain-specific", [*range(0, 30, 10), 29])):
        for step in steps:
            row = {"stage": stage, "step": step, "lr": 3e-4, "loss": 2.0 / (step + 1) + 0.1,
                   "loss/cls": 0.05 + step / 1e3}
            row["loss/feat" if stage == "domain-agnostic" else "loss/mask"] = 0.5 / (step + 2)
            lines.append(json.dumps(row))
    if garbage_line is not None:
        lines.insert(garbage_line - 1, '{"stage": "domain-agnostic", "step": 5, "loss"')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_loss_log_layout(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path)
    log = loss_log(read_metrics(path))
    assert log.stages == [("domain-agnostic", 0), ("domain-specific", 40)]
    assert log.steps == [0, 10, 20, 30, 40, 50, 60, 69]
    assert list(log.terms) == ["loss", "loss/cls", "loss/feat", "loss/mask"]
    assert all(math.isnan(v) for v in log.terms["loss/feat"][4:]) and not math.isnan(log.terms["loss/mask"][4])
    flat = loss_log([{"step": 0, "loss": 1.0}, {"step": 5, "loss": 0.5}])
    assert flat.stages == [(None, 0)] and flat.steps == [0, 5]


def test_loss_curves(tmp_path, scores):
    runs = scores[(scores.pair == "f2l") & (scores.method == "gkd")].copy()
    for i, run in runs.iterrows():
        if run.benchmark == "rgb2irrg" and run.seed == 2:
            continue
        runs.loc[i, "run_path"] = str(tmp_path / "runs" / f"{run.benchmark}-{run.seed}")
        _write_metrics(tmp_path / "runs" / f"{run.benchmark}-{run.seed}" / "metrics.jsonl",
                       garbage_line=3 if (run.benchmark, run.seed) == ("game2real", 1) else None)
    (tmp_path / "runs" / "rgb2irrg-1" / "metrics.jsonl").unlink()
    bad = tmp_path / "runs" / "game2real-1" / "metrics.jsonl"
    stem = tmp_path / "out" / "loss"
    with pytest.warns(UserWarning, match=f"{bad}:3: unreadable metrics line skipped"):
        paths = loss_curves(runs, list(TARGETS), stem, ["png", "svg"], "gkd f2l training")
    text = _check_both(paths, stem)
    lines = text.split("\n")
    for label in ["domain-agnostic", "domain-specific", "loss/cls", "loss/feat", "loss/mask", "gkd f2l training",
                  "game2real (3 runs)", "rgb2irrg (1 run)"]:
        assert any(label in line for line in lines), label
    assert any(line.strip().startswith("60") for line in lines)


def test_loss_curves_draw_no_panel_for_a_benchmark_not_run(tmp_path, scores):
    runs = scores[(scores.pair == "f2l") & (scores.method == "gkd") & (scores.benchmark == "game2real")].copy()
    for i, run in runs.iterrows():
        runs.loc[i, "run_path"] = str(tmp_path / f"run-{run.seed}")
        _write_metrics(tmp_path / f"run-{run.seed}" / "metrics.jsonl")
    text = _svg_text(loss_curves(runs, list(TARGETS), tmp_path / "loss", ["svg"], "t")[0])
    assert "game2real (3 runs)" in text and "rgb2irrg" not in text and "no training log" not in text


def test_loss_curves_nothing_to_plot(tmp_path, scores):
    runs = scores[(scores.pair == "f2l") & (scores.method == "gkd")].copy()
    runs["run_path"] = str(tmp_path / "missing")
    assert loss_curves(runs, list(TARGETS), tmp_path / "loss", ["png", "svg"], "t") == []
    teacher = scores[scores.method == "teacher"]
    assert loss_curves(teacher, list(TARGETS), tmp_path / "loss", ["png"], "t") == []
    assert not (tmp_path / "loss.png").exists()
