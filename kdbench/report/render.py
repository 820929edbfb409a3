"""A paper table as Markdown, LaTeX (booktabs) and CSV (long form: one line per row and column, numbers unrounded).

Markdown and LaTeX print mean ± std over seeds with one decimal, the best value of a column in bold, and the seed
count of a cell as a superscript where it differs from the row's (an incomplete sweep); "–" marks a missing cell.
A Δ cell prints its 95% Welch interval over seeds in brackets and "n.s." where the interval contains 0 (no interval
with a single seed on either side); the CSV gives the interval's ends and whether it excludes 0. A cost cell
(parameters in millions, GFLOPs, images per second) prints its mean to three significant digits, "–" where the
runs did not record it.
"""

from __future__ import annotations

import csv
import io
import math

from kdbench.report.tables import (
    BENCH_ID,
    BENCH_OOD,
    COST,
    COUNT,
    DELTA,
    MIOU,
    SECONDS,
    STEPS,
    SUMMARY,
    TARGET,
    Cell,
    Column,
    PaperTable,
)


def _number(cell: Cell, column: Column) -> str:
    if cell.mean is None:
        return "–"
    if column.kind == COUNT:
        return str(cell.n)
    if column.kind in (SECONDS, STEPS):
        return f"{cell.mean:.0f}"
    if column.kind == COST:
        return significant(cell.mean)
    if column.kind == DELTA:
        if cell.interval is None:
            return f"{cell.mean:+.1f}"
        return cell.interval.format() + ("" if cell.interval.significant else " n.s.")
    return f"{cell.mean:.1f}"


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits without an exponent, whole numbers from 10**digits on
    (86.57 -> 86.6, 0.02134 -> 0.0213, 1234.5 -> 1234)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _header_names(table: PaperTable) -> list[str]:
    """Markdown has one header line: a target keeps its name unless two benchmarks share it."""
    names = [c.name for c in table.columns if c.key == TARGET]
    repeated = {n for n in names if names.count(n) > 1}
    headers = []
    for column in table.columns:
        if not column.group:
            headers.append(column.name)
        elif column.key == BENCH_OOD:
            headers.append(f"{column.group} avg")
        elif column.key == BENCH_ID:
            headers.append(f"{column.group} ID ({table.sources[column.group]})")
        else:
            headers.append(f"{column.group}/{column.name}" if column.name in repeated else column.name)
    return headers


def to_markdown(table: PaperTable) -> str:
    header = ["method", *_header_names(table)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        texts = []
        for cell, column in zip(row.cells, table.columns, strict=True):
            text = _number(cell, column)
            if cell.std is not None and column.kind == MIOU:
                text += f" ± {cell.std:.1f}"
            if cell.mean is not None and column.kind == MIOU and cell.n != row.seeds:
                text += f" <sup>n={cell.n}</sup>"
            texts.append(f"**{text}**" if cell.best else text)
        lines.append("| " + " | ".join([row.method, *texts]) + " |")
    return "\n".join(lines)


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "Δ": r"$\Delta$",
                  "→": r"$\rightarrow$", "±": r"$\pm$", "–": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: PaperTable, caption: str, label: str) -> str:
    """A booktabs table: a header line of benchmarks spanning their columns, then the column names."""
    spans: list[tuple[str, int]] = []
    for column in table.columns:
        if spans and spans[-1][0] == column.group:
            spans[-1] = (column.group, spans[-1][1] + 1)
        else:
            spans.append((column.group, 1))
    top, rules, start = ["Method"], [], 2
    for group, width in spans:
        title = (f"{latex_escape(group)} ({latex_escape(table.sources[group])}$\\rightarrow$)" if group
                 else "all benchmarks")
        top.append(f"\\multicolumn{{{width}}}{{c}}{{{title}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    names = ["" ] + [latex_escape({BENCH_ID: "ID", BENCH_OOD: "Avg"}.get(c.key, c.name)) for c in table.columns]
    body = []
    for row in table.rows:
        texts = []
        for cell, column in zip(row.cells, table.columns, strict=True):
            text = latex_escape(_number(cell, column))
            if cell.best:
                text = f"\\textbf{{{text}}}"
            if cell.std is not None and column.kind == MIOU:
                text += f"\\,{{\\scriptsize$\\pm${cell.std:.1f}}}"
            if cell.mean is not None and column.kind == MIOU and cell.n != row.seeds:
                text += f"\\textsuperscript{{n={cell.n}}}"
            texts.append(text)
        body.append(" & ".join([latex_escape(row.method), *texts]) + r" \\")
        if row.reference == "baseline":
            body.append(r"\midrule")
    lines = [r"\begin{table*}[t]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
             f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
             r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule",
             " & ".join(top) + r" \\", " ".join(rules), " & ".join(names) + r" \\", r"\midrule",
             *body, r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def to_csv(table: PaperTable) -> str:
    """Long form, one line per (method, column): unrounded mean, std, seed count, and whether it is the best."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["suite", "setting", "pair", "pair_kind", "method", "benchmark", "column", "mean", "std", "n",
                     "best", "ci_low", "ci_high", "significant"])
    for row in table.rows:
        for cell, column in zip(row.cells, table.columns, strict=True):
            ci = cell.interval
            writer.writerow([table.suite, table.setting, table.pair, table.pair_kind, row.method,
                             column.group or "all", column.name,
                             "" if cell.mean is None else f"{cell.mean:.4f}",
                             "" if cell.std is None else f"{cell.std:.4f}", cell.n, int(cell.best),
                             "" if ci is None else f"{ci.low:.4f}", "" if ci is None else f"{ci.high:.4f}",
                             "" if ci is None else int(ci.significant)])
    return buffer.getvalue()


__all__ = ["SUMMARY", "latex_escape", "significant", "to_csv", "to_latex", "to_markdown"]
