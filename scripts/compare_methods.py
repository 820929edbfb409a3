"""Two rows of a report side by side in every table it wrote: mean ID, mean OOD and training steps of each, and
the OOD difference with its 95% Welch interval over seeds. The report's own Δ best baseline never sets a method
against its own ablation (GKD against single-stage GKD); this does, for any two rows. It reads the report's CSVs
(``tables/*.csv``; one per suite, setting or selection rule, and pair), so what it prints follows from them.

    python scripts/compare_methods.py results/synth5-tuned gkd gkd-single-stage
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from kdbench.report.significance import welch_from_summary


def summary(frame: pd.DataFrame, method: str, column: str) -> pd.Series | None:
    rows = frame[(frame.method == method) & (frame.benchmark == "all") & (frame.column == column)]
    return None if rows.empty or pd.isna(rows.iloc[0]["mean"]) else rows.iloc[0]


def cell(row: pd.Series | None, digits: int = 1) -> str:
    if row is None:
        return "–"
    text = f"{row['mean']:.{digits}f}"
    return text + (f" ± {row['std']:.1f}" if digits and not pd.isna(row["std"]) else "")


def compare(csv: Path, first: str, second: str) -> str | None:
    """The table's line for ``first`` against ``second``, or None where the table lacks either."""
    frame = pd.read_csv(csv)
    a, b = summary(frame, first, "mean OOD"), summary(frame, second, "mean OOD")
    if a is None or b is None:
        return None
    interval = welch_from_summary(a["mean"], a["std"], int(a["n"]), b["mean"], b["std"], int(b["n"]))
    delta = f"{a['mean'] - b['mean']:+.1f}" if interval is None else (
        interval.format() + ("" if interval.significant else " n.s."))
    cells = [csv.stem]
    for method, ood in ((first, a), (second, b)):
        cells += [cell(summary(frame, method, "mean ID")), cell(ood), cell(summary(frame, method, "train steps"), 0)]
    return "| " + " | ".join([*cells, delta]) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a report's folder (with tables/), or its tables/ folder")
    parser.add_argument("first", help="a row's method label, as in the report")
    parser.add_argument("second", help="the row to set it against")
    args = parser.parse_args(argv)
    tables = args.report / "tables" if (args.report / "tables").is_dir() else args.report
    csvs = sorted(tables.glob("*.csv"))
    if not csvs:
        print(f"compare_methods: no report tables (*.csv) in {tables}", file=sys.stderr)
        return 1
    lines = [line for csv in csvs if (line := compare(csv, args.first, args.second))]
    if not lines:
        print(f"compare_methods: no table in {tables} has both {args.first!r} and {args.second!r}", file=sys.stderr)
        return 1
    headers = ["table"] + [f"{m} {c}" for m in (args.first, args.second) for c in ("mean ID", "mean OOD", "steps")]
    print("| " + " | ".join([*headers, f"Δ OOD ({args.first} − {args.second})"]) + " |")
    print("|---|" + "---:|" * (len(headers)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
