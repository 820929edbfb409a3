"""Tables from run records: in-domain vs out-of-domain mIoU per suite, pair and benchmark (mean ± std over seeds).

The full paper-style report (LaTeX, plots, Δ columns) builds on the same frames; this module gives the table every
run ends with.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kdbench.errors import UserError
from kdbench.results import atomic_write_text, load_records

BASELINE_ORDER = ("teacher", "student-only")


def records_frame(root: Path) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    if not Path(root).is_dir():
        raise UserError(f"results directory {root} does not exist")
    records, failures = load_records(Path(root))
    return pd.DataFrame.from_records(records), failures


def run_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: in-domain mIoU, each target's mIoU and their plain mean (targets only, as the paper)."""
    keys = ["suite", "protocol", "benchmark", "pair", "pair_kind", "method", "seed"]
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        source = group[group.role == "source"]
        targets = group[group.role == "target"]
        row["in-domain"] = float(source.miou.iloc[0]) if len(source) else float("nan")
        for _, r in targets.iterrows():
            row[r.domain] = float(r.miou)
        row["out-of-domain"] = float(targets.miou.mean()) if len(targets) else float("nan")
        row["wall_s"] = float(group.wall_s.iloc[0])
        stages = group.stages.iloc[0] if "stages" in group else []
        row["train_s"] = float(sum(st["wall_s"] for st in stages)) if isinstance(stages, list) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _method_order(methods: list[str]) -> list[str]:
    first = [m for m in BASELINE_ORDER if m in methods]
    return first + sorted(m for m in methods if m not in BASELINE_ORDER)


def _fmt(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def benchmark_table(scores: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """Rows: methods (teacher, student-only, then the rest). Columns: in-domain, targets, out-of-domain avg, seeds,
    mean training time per run (the method's stages only: no shared pretraining, no evaluation)."""
    columns = ["in-domain", *targets, "out-of-domain"]
    rows = []
    for method in _method_order(list(scores.method.unique())):
        runs = scores[scores.method == method]
        row = {"method": method}
        for col in columns:
            row[col] = _fmt(runs[col]) if col in runs else "–"
        row["seeds"] = str(len(runs)) if method != "teacher" else "–"
        row["train s"] = "–" if method == "teacher" else f"{runs.train_s.mean():.0f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _suite_order(suite: str, benchmarks: list[str]) -> list[str]:
    """``benchmarks`` in the order the suite declares them, where the suite is known; else as found."""
    from kdbench.suite import load_suite

    try:
        order = list(load_suite(suite).benchmarks)
    except (UserError, OSError):
        return benchmarks
    return sorted(benchmarks, key=lambda b: order.index(b) if b in order else len(order))


def pair_summary(scores: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """One pair's methods across benchmarks: in-domain and out-of-domain mIoU per benchmark (mean ± std over seeds),
    the out-of-domain mean over benchmarks (averaged per seed first, then mean ± std), and mean training time."""
    rows = []
    for method in _method_order(list(scores.method.unique())):
        runs = scores[scores.method == method]
        row = {"method": method}
        for bench in benchmarks:
            per = runs[runs.benchmark == bench]
            row[f"{bench} ID"] = _fmt(per["in-domain"])
            row[f"{bench} OOD"] = _fmt(per["out-of-domain"])
        complete = runs.groupby("seed").filter(lambda g: set(g.benchmark) >= set(benchmarks))
        row["mean OOD"] = _fmt(complete.groupby("seed")["out-of-domain"].mean()) if len(benchmarks) > 1 else "–"
        row["train s"] = "–" if method == "teacher" else f"{runs.train_s.mean():.0f}"
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    lines = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *lines])


def write_report(root: Path, out: Path | None = None) -> Path:
    """Write ``report.md`` and one CSV per (suite, pair, benchmark) table; return the report's path."""
    root = Path(root)
    out = Path(out) if out else root
    frame, failures = records_frame(root)
    if frame.empty:
        raise UserError(f"no finished runs under {root}")
    scores = run_scores(frame)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    lines = [f"# kdbench report: {root}", ""]
    first = frame.iloc[0]
    lines += [f"Device {first.device}, precision {first.precision}, torch {first.versions['torch']}, "
              f"kdbench {first.versions['kdbench']}. mIoU (%), last checkpoint, mean ± std over seeds; "
              "out-of-domain is the plain mean over a benchmark's targets.", ""]
    for (suite, protocol), per_suite in scores.groupby(["suite", "protocol"], sort=False):
        caption = frame[(frame.suite == suite) & (frame.protocol == protocol)].protocol_caption.iloc[0]
        lines += [f"## Suite {suite}", "", f"Protocol {caption}.", ""]
        benchmarks = _suite_order(suite, list(dict.fromkeys(per_suite.benchmark)))
        for (pair, kind), per_pair in per_suite.groupby(["pair", "pair_kind"], sort=False):
            summary = pair_summary(per_pair, benchmarks)
            atomic_write_text(out / "tables" / f"{suite}-{pair}-summary.csv", summary.to_csv(index=False))
            lines += [f"### {pair} ({kind}): every benchmark", "", to_markdown(summary), ""]
        for (pair, kind), per_pair in per_suite.groupby(["pair", "pair_kind"], sort=False):
            for bench in benchmarks:
                per_bench = per_pair[per_pair.benchmark == bench]
                if per_bench.empty:
                    continue
                targets = frame[(frame.suite == suite) & (frame.benchmark == bench) & (frame.role == "target")
                                ].domain.drop_duplicates().tolist()
                table = benchmark_table(per_bench, targets)
                csv = out / "tables" / f"{suite}-{pair}-{bench}.csv"
                atomic_write_text(csv, table.to_csv(index=False))
                source = frame[(frame.benchmark == bench) & (frame.role == "source")].domain.iloc[0]
                lines += [f"### {pair} ({kind}), {bench}: {source} -> {', '.join(targets)}", "",
                          to_markdown(table), ""]
    if "teacher_digest" in frame:
        mixed = frame.dropna(subset=["teacher_digest"]).groupby(["suite", "benchmark", "pair"]).teacher_digest.nunique()
        for (suite, bench, pair), count in mixed[mixed > 1].items():
            lines += [f"Warning: {suite} {bench} {pair} mixes runs made with {count} different teacher weights "
                      "(`teacher_digest` in the records); their rows are not comparable.", ""]
    if failures:
        lines += ["## Failed runs", ""] + [f"- `{f['run']}`: {f['reason']}" for f in failures] + [""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
