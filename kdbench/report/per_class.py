"""Per-class IoU under shift: for one (suite, setting, pair), a table per benchmark and target domain with a row per
method and a column per class (mean IoU over seeds, test split), so a reader sees which classes a method gains out
of domain and which classes every method loses.

Each table ends with the classes' in-domain IoU (the source domain, mean over the compared methods) and names the
classes that lose the most from source to target on average over the compared methods. The long-form CSV holds
every cell unrounded with its std and seed count.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import pandas as pd

from kdbench.report.frames import method_order, roles, test_rows


@dataclass
class ClassTable:
    """One target domain's per-class table: ``cells[method][class] = (mean, std, n)`` over seeds."""

    benchmark: str
    source: str
    domain: str
    classes: list[str]
    methods: list[str]
    cells: dict[str, dict[str, tuple[float, float, int]]] = field(default_factory=dict)
    #: each class's in-domain IoU, mean over the compared methods' seed means
    source_iou: dict[str, float] = field(default_factory=dict)
    #: methods whose values may be marked best (not the teacher or another reference row)
    markable: set[str] = field(default_factory=set)

    def losses(self, top: int = 3) -> list[tuple[str, float]]:
        """The ``top`` classes with the largest drop from source to this target, mean over the compared methods."""
        drops = []
        for name in self.classes:
            target = [self.cells[m][name][0] for m in self.markable if not math.isnan(self.cells[m][name][0])]
            if target and not math.isnan(self.source_iou.get(name, math.nan)):
                drops.append((self.source_iou[name] - sum(target) / len(target), name))
        return [(name, drop) for drop, name in sorted(drops, reverse=True)[:top]]


def _stats(values: list[float]) -> tuple[float, float, int]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    mean = sum(values) / len(values)
    std = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else math.nan
    return mean, std, len(values)


def class_tables(scores: pd.DataFrame, records: pd.DataFrame) -> list[ClassTable]:
    """The per-class tables of one (suite, setting, pair): ``scores`` its ``run_scores`` rows, ``records`` the
    results' records (their test rows of these runs are read)."""
    label = dict(zip(scores.run_path, scores.method, strict=True))
    rows = test_rows(records)
    rows = rows[rows.run_path.isin(set(label))]
    role = roles(scores)
    methods = [m for m in method_order(scores) if m in set(label.values())]
    compared = {m for m in methods if role[m] in ("", "baseline")}
    tables = []
    for bench, per_bench in rows.groupby("benchmark", sort=False):
        source_rows = per_bench[per_bench.role == "source"]
        source = source_rows.domain.iloc[0] if len(source_rows) else "?"
        source_means = _class_means(source_rows, label)
        for domain, per_domain in per_bench[per_bench.role == "target"].groupby("domain", sort=False):
            classes = list(dict.fromkeys(c for d in per_domain.per_class_iou if isinstance(d, dict) for c in d))
            if not classes:  # records made without per-class scores
                continue
            table = ClassTable(bench, source, domain, classes, [m for m in methods if m in
                                                                 set(per_domain.run_path.map(label))],
                               markable=compared)
            for method in table.methods:
                mine = per_domain[per_domain.run_path.map(label) == method]
                table.cells[method] = {c: _stats([d.get(c) for d in mine.per_class_iou if isinstance(d, dict)])
                                       for c in classes}
            table.markable = compared & set(table.methods)
            for name in classes:
                means = [source_means[m][name] for m in table.markable if m in source_means
                         and not math.isnan(source_means[m].get(name, math.nan))]
                table.source_iou[name] = sum(means) / len(means) if means else math.nan
            tables.append(table)
    return tables


def _class_means(rows: pd.DataFrame, label: dict[str, str]) -> dict[str, dict[str, float]]:
    means: dict[str, dict[str, float]] = {}
    for method, mine in rows.groupby(rows.run_path.map(label), sort=False):
        classes = list(dict.fromkeys(c for d in mine.per_class_iou if isinstance(d, dict) for c in d))
        means[method] = {c: _stats([d.get(c) for d in mine.per_class_iou if isinstance(d, dict)])[0]
                         for c in classes}
    return means


def _number(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def to_markdown(table: ClassTable) -> str:
    """The table as Markdown: best value of each class column in bold (compared methods and the baseline only),
    then the in-domain row and a sentence on the largest losses."""
    lines = [f"#### {table.benchmark}: {table.source} → {table.domain}", "",
             "| method | " + " | ".join(table.classes) + " |", "|---|" + "---:|" * len(table.classes)]
    best = {}
    for name in table.classes:
        values = [round(table.cells[m][name][0], 1) for m in table.markable if not math.isnan(table.cells[m][name][0])]
        best[name] = max(values) if values else None
    for method in table.methods:
        texts = []
        for name in table.classes:
            mean = table.cells[method][name][0]
            text = _number(mean)
            texts.append(f"**{text}**" if method in table.markable and best[name] is not None
                         and not math.isnan(mean) and round(mean, 1) == best[name] else text)
        lines.append(f"| {method} | " + " | ".join(texts) + " |")
    lines.append(f"| *in-domain ({table.source})* | " + " | ".join(_number(table.source_iou.get(c, math.nan))
                                                         for c in table.classes) + " |")
    losses = table.losses()
    if losses:
        lines += ["", "Largest losses from source to target (mean over the compared methods): "
                  + ", ".join(f"{name} −{drop:.1f}" for name, drop in losses) + "."]
    return "\n".join(lines) + "\n"


def to_csv(tables: list[ClassTable], suite: str, setting: str, pair: str) -> str:
    """Long form, one line per (benchmark, domain, method, class): unrounded mean, std, seed count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["suite", "setting", "pair", "benchmark", "domain", "method", "class", "mean", "std", "n"])
    for table in tables:
        for method in table.methods:
            for name in table.classes:
                mean, std, n = table.cells[method][name]
                writer.writerow([suite, setting, pair, table.benchmark, table.domain, method, name,
                                 "" if math.isnan(mean) else f"{mean:.4f}", "" if math.isnan(std) else f"{std:.4f}",
                                 n])
    return buffer.getvalue()
