"""A compact Markdown table from a report's long-form CSV (``tables/<suite>-<pair>.csv``): per method the benchmark
averages (ID and OOD), the means over benchmarks and the gain against student-only, mean ± std over seeds, bold
where the report marks the best. The README's result tables are printed with it.

    python scripts/summary_table.py results/synth5-quick/tables/synth5-f2l.csv --methods teacher,student-only,cwd,gkd
"""

from __future__ import annotations

import argparse

import pandas as pd


def cell(row: pd.Series, signed: bool = False) -> str:
    if pd.isna(row["mean"]):
        return "–"
    text = f"{row['mean']:+.1f}" if signed else f"{row['mean']:.1f}"
    if not signed and not pd.isna(row["std"]):
        text += f" ± {row['std']:.1f}"
    return f"**{text}**" if row["best"] else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--methods", help="comma-separated rows, in this order (default: all, as in the report)")
    args = parser.parse_args()
    frame = pd.read_csv(args.csv)
    methods = args.methods.split(",") if args.methods else list(dict.fromkeys(frame.method))
    benchmarks = [b for b in dict.fromkeys(frame.benchmark) if b != "all"]
    columns = [(b, "in-domain", f"{b} ID") for b in benchmarks] + [(b, "avg", f"{b} OOD") for b in benchmarks]
    columns += [("all", "mean ID", "mean ID"), ("all", "mean OOD", "mean OOD"),
                ("all", "Δ student-only", "Δ OOD vs student-only"), ("all", "seeds", "seeds")]
    print("| method | " + " | ".join(title for _, _, title in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for method in methods:
        rows = frame[frame.method == method]
        if rows.empty:
            continue
        texts = []
        for bench, name, _ in columns:
            row = rows[(rows.benchmark == bench) & (rows.column == name)].iloc[0]
            if name == "seeds":
                texts.append(str(int(row["n"])))
            else:
                texts.append(cell(row, signed=name.startswith("Δ")))
        print(f"| {method} | " + " | ".join(texts) + " |")


if __name__ == "__main__":
    main()
