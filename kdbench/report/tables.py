"""The paper table: one per suite, setting and teacher->student pair, in the layout of the GKD paper's Table 1
(Lv et al., CVPR 2026): rows for the teacher, student-only and every method; for each benchmark a column per
target domain, the benchmark average (plain mean over its targets) and the in-domain (source) mIoU; then the means
over benchmarks, the gains against student-only and against the best baseline, the seed count and training time.

Cells are mean ± sample std over seeds. The best value of each mIoU column is marked (the teacher, a reference,
is never marked). "Best baseline" for a row is the strongest other method, leaving out the teacher, student-only
and the row's own family (a method and its ablations, ``Method.ablation_of``), so GKD is compared with the KD
baselines and not with its own variants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from kdbench.report.frames import STUDENT_ONLY, TEACHER, method_order
from kdbench.report.significance import Interval, welch_interval

MIOU, DELTA, COUNT, SECONDS = "miou", "delta", "count", "seconds"
SUMMARY = ""  # the group of the columns that summarise every benchmark


@dataclass(frozen=True)
class Column:
    group: str  # a benchmark, or SUMMARY
    name: str  # a target domain, "avg", "in-domain", "mean ID", "mean OOD", "Δ student-only", ...
    kind: str = MIOU


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0
    best: bool = False
    #: a Δ cell's 95% Welch interval over seeds (None: fewer than two seeds on a side, or not a Δ cell)
    interval: Interval | None = None

    @classmethod
    def of(cls, values: pd.Series | list[float]) -> Cell:
        values = [float(v) for v in values if not (v is None or math.isnan(float(v)))]
        if not values:
            return cls()
        std = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else None
        return cls(sum(values) / len(values), std, len(values))


@dataclass
class Row:
    method: str
    family: str
    seeds: int
    cells: list[Cell] = field(default_factory=list)
    #: mean OOD over the benchmarks, per seed that ran every benchmark (what the Δ intervals compare)
    ood_by_seed: list[float] = field(default_factory=list)


@dataclass
class PaperTable:
    suite: str
    setting: str
    pair: str
    pair_kind: str
    benchmarks: list[str]
    sources: dict[str, str]
    columns: list[Column]
    rows: list[Row]


def paper_table(scores: pd.DataFrame, benchmarks: list[str], targets: dict[str, list[str]]) -> PaperTable:
    """The table of one (suite, setting, pair): ``scores`` holds its runs (one row each, see ``run_scores``)."""
    benchmarks = [b for b in benchmarks if b in set(scores.benchmark)]
    sources = {b: scores[scores.benchmark == b].source.iloc[0] for b in benchmarks}
    columns = []
    for bench in benchmarks:
        columns += [Column(bench, t) for t in targets.get(bench, [])]
        columns += [Column(bench, "avg"), Column(bench, "in-domain")]
    columns += [Column(SUMMARY, "mean ID"), Column(SUMMARY, "mean OOD"),
                Column(SUMMARY, "Δ student-only", DELTA), Column(SUMMARY, "Δ best baseline", DELTA),
                Column(SUMMARY, "seeds", COUNT), Column(SUMMARY, "train s", SECONDS)]
    rows = []
    for method in method_order(list(scores.method.unique())):
        runs = scores[scores.method == method]
        row = Row(method, str(runs.family.iloc[0]), runs.seed.nunique())
        for col in columns:
            if col.group:
                per = runs[runs.benchmark == col.group]
                key = {"avg": "out-of-domain"}.get(col.name, col.name)
                row.cells.append(Cell.of(per[key]) if key in per else Cell())
        complete = runs.groupby("seed").filter(lambda g: set(g.benchmark) >= set(benchmarks))
        per_seed = complete.groupby("seed")
        row.ood_by_seed = [float(v) for v in per_seed["out-of-domain"].mean()]
        row.cells += [Cell.of(per_seed["in-domain"].mean()), Cell.of(per_seed["out-of-domain"].mean()),
                      Cell(), Cell(), Cell(float(row.seeds), None, row.seeds),
                      Cell() if method == TEACHER else Cell.of([runs.train_s.mean()])]
        rows.append(row)
    table = PaperTable(str(scores.suite.iloc[0]), str(scores.setting.iloc[0]), str(scores.pair.iloc[0]),
                       str(scores.pair_kind.iloc[0]), benchmarks, sources, columns, rows)
    _add_gains(table)
    _mark_best(table)
    return table


def _add_gains(table: PaperTable) -> None:
    """Δ student-only and Δ best baseline: differences of mean OOD, each with its 95% Welch interval over the
    seeds of the two rows (``kdbench.report.significance``)."""
    ood = [c.name for c in table.columns].index("mean OOD")
    vs_student, vs_best = ood + 1, ood + 2
    rows = {r.method: r for r in table.rows}
    means = {r.method: r.cells[ood].mean for r in table.rows}
    reference = means.get(STUDENT_ONLY)
    for row in table.rows:
        mine = means[row.method]
        if mine is None:
            continue
        if reference is not None and row.method != STUDENT_ONLY:
            row.cells[vs_student] = Cell(mine - reference, None, 1, interval=welch_interval(
                row.ood_by_seed, rows[STUDENT_ONLY].ood_by_seed))
        rival = best_baseline(table, row.method)
        if rival is not None and row.method not in (TEACHER, STUDENT_ONLY):
            row.cells[vs_best] = Cell(mine - means[rival], None, 1, interval=welch_interval(
                row.ood_by_seed, rows[rival].ood_by_seed))


def _mark_best(table: PaperTable) -> None:
    for index, column in enumerate(table.columns):
        if column.kind != MIOU:
            continue
        contenders = [r.cells[index] for r in table.rows if r.method != TEACHER and r.cells[index].mean is not None]
        if not contenders:
            continue
        top = max(round(c.mean, 1) for c in contenders)
        for cell in contenders:
            cell.best = round(cell.mean, 1) == top


def best_baseline(table: PaperTable, method: str) -> str | None:
    """The method whose mean OOD the row's "Δ best baseline" is measured against."""
    ood = [c.name for c in table.columns].index("mean OOD")
    family = next(r.family for r in table.rows if r.method == method)
    rivals = [(r.cells[ood].mean, r.method) for r in table.rows if r.method not in (TEACHER, STUDENT_ONLY, method)
              and r.family != family and r.cells[ood].mean is not None]
    return max(rivals)[1] if rivals else None


def summary_view(table: PaperTable) -> PaperTable:
    """The table cut to the columns that summarise every benchmark (mean ID, mean OOD, the Δ columns, seeds, train
    time): what fits on a terminal."""
    keep = [i for i, c in enumerate(table.columns) if c.group == SUMMARY]
    rows = [Row(r.method, r.family, r.seeds, [r.cells[i] for i in keep], r.ood_by_seed) for r in table.rows]
    return PaperTable(table.suite, table.setting, table.pair, table.pair_kind, table.benchmarks, table.sources,
                      [table.columns[i] for i in keep], rows)
