"""The paper table: one per suite, setting and teacher->student pair, in the layout of the GKD paper's Table 1
(Lv et al., CVPR 2026): rows for the teacher, student-only and every method; for each benchmark a column per
target domain, the benchmark average (plain mean over its targets) and the in-domain (source) mIoU; then the means
over benchmarks, the gains against student-only and against the best baseline, the seed count, training time and
training steps (every stage's, so GKD's three stages count against its budget), and what the rows cost
(:data:`COST_COLUMNS`: parameters, extra parameters, GFLOPs, training images per second).

Cells are mean ± sample std over seeds. The best value of each mIoU column is marked (the teacher and other
reference rows are never marked). "Best baseline" for a row is the strongest other method, leaving out the
reference rows, the baseline and the row's own family (a method and its ablations, ``Method.ablation_of``), so GKD
is compared with the KD baselines and not with its own variants. Which rows are references is their records'
``reference`` role (``kdbench.record``), never their name; columns are found by ``Column.key``, never by their
display text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from kdbench.report.frames import method_order, roles
from kdbench.report.significance import Interval, welch_interval

MIOU, DELTA, COUNT, SECONDS, STEPS, COST = "miou", "delta", "count", "seconds", "steps", "cost"
SUMMARY = ""  # the group of the columns that summarise every benchmark
#: the columns' keys (``Column.key``), by which code finds them; their names are display text only. Per benchmark:
#: a target domain's column (named by the domain), the targets' average, the source's (in-domain) score
TARGET, BENCH_OOD, BENCH_ID = "target", "bench_ood", "bench_id"
#: the summary columns
MEAN_ID, MEAN_OOD, DELTA_BASELINE, DELTA_BEST, SEEDS, TRAIN_S, TRAIN_STEPS = (
    "mean_id", "mean_ood", "delta_baseline", "delta_best", "seeds", "train_s", "train_steps")
#: the cost columns, as the GKD paper's Params column: the row's model's parameters (the student with its head; the
#: teacher's own in its row), the method's extra trainable parameters, GFLOPs of one evaluation forward
#: (``kdbench.engine.cost``), training images per second
PARAMS, EXTRA_PARAMS, GFLOPS, IMAGES_PER_S = "params", "extra_params", "gflops", "images_per_s"
#: each cost column's key, display name, the ``run_scores`` column it reads and the scale it is shown at
COST_COLUMNS = ((PARAMS, "Params (M)", "student_params", 1e-6), (EXTRA_PARAMS, "+params (M)", "extra_params", 1e-6),
                (GFLOPS, "GFLOPs", "gflops", 1.0), (IMAGES_PER_S, "img/s", "train_images_per_s", 1.0))


@dataclass(frozen=True)
class Column:
    group: str  # a benchmark, or SUMMARY
    name: str  # display text: a target domain, "avg", "in-domain", "mean ID", "mean OOD", "Δ student-only", ...
    kind: str = MIOU
    #: what the column holds, for code to find it by (TARGET, BENCH_OOD, MEAN_OOD, ...)
    key: str = TARGET


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
    #: the row's reference role (``kdbench.record.REFERENCE_ROLES``); "" for a compared method
    reference: str = ""

    @property
    def ranked(self) -> bool:
        """Whether the row competes for "best baseline" and gets a Δ against one: a compared method, not a
        reference row or the baseline."""
        return not self.reference

    @property
    def markable(self) -> bool:
        """Whether the row's values may be marked best: a compared method or the baseline (the teacher and other
        reference rows are shown, not ranked)."""
        return self.reference in ("", "baseline")


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

    def index(self, key: str) -> int:
        """The position of the summary column ``key`` (MEAN_OOD, ...)."""
        return next(i for i, c in enumerate(self.columns) if c.key == key)

    def baseline(self) -> Row | None:
        """The no-distillation baseline's row (reference role "baseline"), if the table has one."""
        return next((r for r in self.rows if r.reference == "baseline"), None)


def paper_table(scores: pd.DataFrame, benchmarks: list[str], targets: dict[str, list[str]]) -> PaperTable:
    """The table of one (suite, setting, pair): ``scores`` holds its runs (one row each, see ``run_scores``)."""
    benchmarks = [b for b in benchmarks if b in set(scores.benchmark)]
    sources = {b: scores[scores.benchmark == b].source.iloc[0] for b in benchmarks}
    columns = []
    for bench in benchmarks:
        columns += [Column(bench, t) for t in targets.get(bench, [])]
        columns += [Column(bench, "avg", key=BENCH_OOD), Column(bench, "in-domain", key=BENCH_ID)]
    role = roles(scores)
    baseline = next((m for m in method_order(scores) if role[m] == "baseline"), None) or registered_baseline()
    columns += [Column(SUMMARY, "mean ID", key=MEAN_ID), Column(SUMMARY, "mean OOD", key=MEAN_OOD),
                Column(SUMMARY, f"Δ {baseline}", DELTA, DELTA_BASELINE),
                Column(SUMMARY, "Δ best baseline", DELTA, DELTA_BEST),
                Column(SUMMARY, "seeds", COUNT, SEEDS), Column(SUMMARY, "train s", SECONDS, TRAIN_S),
                Column(SUMMARY, "train steps", STEPS, TRAIN_STEPS),
                *(Column(SUMMARY, name, COST, key) for key, name, _, _ in COST_COLUMNS)]
    rows = []
    for method in method_order(scores):
        runs = scores[scores.method == method]
        row = Row(method, str(runs.family.iloc[0]), runs.seed.nunique(), reference=role[method])
        for col in columns:
            if col.group:
                per = runs[runs.benchmark == col.group]
                key = {BENCH_OOD: "out-of-domain", BENCH_ID: "in-domain"}.get(col.key, col.name)
                row.cells.append(Cell.of(per[key]) if key in per else Cell())
        complete = runs.groupby("seed").filter(lambda g: set(g.benchmark) >= set(benchmarks))
        per_seed = complete.groupby("seed")
        row.ood_by_seed = [float(v) for v in per_seed["out-of-domain"].mean()]
        row.cells += [Cell.of(per_seed["in-domain"].mean()), Cell.of(per_seed["out-of-domain"].mean()),
                      Cell(), Cell(), Cell(float(row.seeds), None, row.seeds),
                      *(Cell() if row.reference == "teacher" else Cell.of([runs[field].mean()])
                        for field in ("train_s", "train_steps"))]
        row.cells += [cost_cell(runs, field, scale) for _, _, field, scale in COST_COLUMNS]
        rows.append(row)
    table = PaperTable(str(scores.suite.iloc[0]), str(scores.setting.iloc[0]), str(scores.pair.iloc[0]),
                       str(scores.pair_kind.iloc[0]), benchmarks, sources, columns, rows)
    _add_gains(table)
    _mark_best(table)
    return table


def cost_cell(runs: pd.DataFrame, field: str, scale: float) -> Cell:
    """A cost column's cell: the mean over the row's runs (its seeds, on every benchmark) of what they recorded,
    times ``scale``; empty where none recorded it (runs older than the field)."""
    if field not in runs:
        return Cell()
    return Cell.of([v * scale for v in runs[field]])


def registered_baseline() -> str:
    """The name of the installed method whose reference role is "baseline" (the Δ column's name where a table has
    no baseline row), or "baseline" if none is."""
    from kdbench.errors import UserError
    from kdbench.method import METHODS

    for name in METHODS.names():
        try:
            if METHODS.get(name).reference == "baseline":
                return name
        except UserError:  # a plugin that fails to load
            continue
    return "baseline"


def _add_gains(table: PaperTable) -> None:
    """Δ of the baseline (student-only) and Δ best baseline: differences of mean OOD, each with its 95% Welch
    interval over the seeds of the two rows (``kdbench.report.significance``)."""
    ood, vs_baseline, vs_best = table.index(MEAN_OOD), table.index(DELTA_BASELINE), table.index(DELTA_BEST)
    rows = {r.method: r for r in table.rows}
    baseline = table.baseline()
    reference = baseline.cells[ood].mean if baseline is not None else None
    for row in table.rows:
        mine = row.cells[ood].mean
        if mine is None:
            continue
        if reference is not None and row is not baseline:
            row.cells[vs_baseline] = Cell(mine - reference, None, 1, interval=welch_interval(
                row.ood_by_seed, baseline.ood_by_seed))
        rival = best_baseline(table, row.method)
        if rival is not None and row.ranked:
            row.cells[vs_best] = Cell(mine - rows[rival].cells[ood].mean, None, 1, interval=welch_interval(
                row.ood_by_seed, rows[rival].ood_by_seed))


def _mark_best(table: PaperTable) -> None:
    for index, column in enumerate(table.columns):
        if column.kind != MIOU:
            continue
        contenders = [r.cells[index] for r in table.rows if r.markable and r.cells[index].mean is not None]
        if not contenders:
            continue
        top = max(round(c.mean, 1) for c in contenders)
        for cell in contenders:
            cell.best = round(cell.mean, 1) == top


def best_baseline(table: PaperTable, method: str) -> str | None:
    """The method whose mean OOD the row's "Δ best baseline" is measured against: the strongest ranked row
    outside ``method``'s family."""
    ood = table.index(MEAN_OOD)
    family = next(r.family for r in table.rows if r.method == method)
    rivals = [(r.cells[ood].mean, r.method) for r in table.rows if r.ranked and r.method != method
              and r.family != family and r.cells[ood].mean is not None]
    return max(rivals)[1] if rivals else None


def summary_view(table: PaperTable) -> PaperTable:
    """The table cut to the columns that summarise every benchmark (mean ID, mean OOD, the Δ columns, seeds, train
    time and steps; not the cost columns): what fits on a terminal."""
    keep = [i for i, c in enumerate(table.columns) if c.group == SUMMARY and c.kind != COST]
    rows = [Row(r.method, r.family, r.seeds, [r.cells[i] for i in keep], r.ood_by_seed, r.reference)
            for r in table.rows]
    return PaperTable(table.suite, table.setting, table.pair, table.pair_kind, table.benchmarks, table.sources,
                      [table.columns[i] for i in keep], rows)
