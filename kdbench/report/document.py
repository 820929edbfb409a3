"""``kdbench report``: paper tables (Markdown, CSV, LaTeX), plots (PNG, SVG) and ``report.md`` embedding them, from
the run records under a results directory.

Every figure and table caption names the suite, the evaluation protocol, the seeds, the device, the precision and
the software versions the runs were made with. A messy results tree is reported as it is: missing cells are "–"
and listed, failed runs are listed with their reasons, unreadable record lines are listed, and runs of different
settings are never averaged together (``frames``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdbench.errors import UserError
from kdbench.report import plots
from kdbench.report.figures import Place, PlotInput, plots_of
from kdbench.report.frames import (
    Results,
    method_order,
    missing_runs,
    read_results,
    roles,
    run_scores,
    suite_benchmark_order,
    targets_by_benchmark,
)
from kdbench.report.html import write_html
from kdbench.report.per_class import class_tables
from kdbench.report.per_class import to_csv as per_class_csv
from kdbench.report.per_class import to_markdown as per_class_markdown
from kdbench.report.render import to_csv, to_latex, to_markdown
from kdbench.report.selected import RuleView, apply_rule, check_rules, rules_present, searched, sensitivity
from kdbench.report.significance import welch_interval
from kdbench.report.tables import MEAN_OOD, PaperTable, best_baseline, paper_table
from kdbench.results import atomic_write_text

FORMATS = ("md", "html", "csv", "tex", "png", "svg")
TABLE_FORMATS = ("md", "csv", "tex")


@dataclass
class Report:
    """What ``write_report`` wrote: ``report.md`` (``None`` unless "md" was asked for), every file, the tables,
    ``report.html`` (``None`` unless "html" was asked for)."""

    markdown: Path | None
    files: list[Path] = field(default_factory=list)
    tables: list[tuple[str, PaperTable]] = field(default_factory=list)
    #: the plots' notes already said (a figure without files, ``kdbench.report.figures.Figure``)
    notes: set[str] = field(default_factory=set)
    html: Path | None = None


def method_families() -> dict[str, str]:
    """Each registered method's family: the method an ablation ablates, else itself."""
    from kdbench.method import METHODS

    families = {}
    for name in METHODS.names():
        try:
            families[name] = METHODS.get(name).ablation_of or name
        except UserError:  # a plugin that fails to load: it is its own family
            families[name] = name
    return families


def _narrow(records: pd.DataFrame, option: str, column: str, wanted: list[str] | None, keep: tuple[str, ...] = ()
            ) -> pd.DataFrame:
    if not wanted:
        return records
    unknown = [w for w in wanted if w not in set(records[column])]
    if unknown:
        present = ", ".join(sorted(set(records[column]) - set(keep)))
        raise UserError(f"--{option}: {', '.join(unknown)} not in these results; present: {present}")
    return records[records[column].isin(set(wanted) | set(keep))]


def _slug(suite: str, setting: str, *parts: str) -> str:
    name = "-".join([suite, *parts])
    if setting:
        name += "-" + hashlib.sha256(setting.encode()).hexdigest()[:6]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _provenance(records: pd.DataFrame, scores: pd.DataFrame) -> str:
    """Seeds, device, precision and versions of the runs behind one setting."""
    paths = set(scores.run_path)
    rows = records[records.run_path.isin(paths)]
    seeds = sorted(set(scores[scores.reference != "teacher"].seed)) or [0]
    versions = sorted({", ".join(f"{k} {v}" for k, v in sorted(r.items())) for r in rows.versions
                       if isinstance(r, dict)})
    devices = sorted({f"{d} ({p})" for d, p in zip(rows.device, rows.precision, strict=True)})
    return "; ".join([f"seeds {', '.join(map(str, seeds))} ({len(seeds)})", f"device {'; '.join(devices)}",
                      f"versions {'; '.join(versions)}"])


def tuned_keys() -> dict[str, list[str]]:
    """Each registered method's search-space keys."""
    from kdbench.method import METHODS

    keys = {}
    for name in METHODS.names():
        try:
            keys[name] = list(METHODS.get(name).search_space)
        except UserError:
            keys[name] = []
    return keys


#: what each selection rule looks at, for the report's headings and captions
RULE_TEXT = {
    "default": "trial 0, the method's defaults (looks at no score)",
    "source-val": "the trial with the best seed-mean source-val mIoU (held-out images of the training domain: "
                  "what a practitioner without target data can do)",
    "oracle": "the trial with the best seed-mean target-val mIoU; it uses target labels, so it is an upper bound "
              "on selection, not a result",
}


def write_report(root: Path, out: Path | None = None, formats: tuple[str, ...] = FORMATS,
                 methods: list[str] | None = None, pairs: list[str] | None = None,
                 benchmarks: list[str] | None = None, select: list[str] | None = None) -> Report:
    """Write the report of the runs under ``root`` into ``out`` (default: ``root``). Where a method ran several
    trials, or ``select`` names rules, one set of tables per selection rule (default: every rule the results
    allow)."""
    root = Path(root)
    out = Path(out) if out else root
    if not formats:
        raise UserError(f"--format: choose at least one of {', '.join(FORMATS)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"--format: unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    results = read_results(root)
    if results.records.empty and not results.failures:
        raise UserError(f"no finished runs under {root}")
    report = Report(out / "report.md" if "md" in formats else None)
    if results.records.empty:  # every run failed: the report is the list of reasons
        if report.markdown is None and "html" not in formats:
            raise UserError(f"no finished runs under {root}, {len(results.failures)} failed (first: "
                            f"{results.failures[0]['run']}: {results.failures[0]['reason']}); add --format md "
                            "or html for the list")
        lines = [f"# kdbench report: {root}", "", f"No finished runs, {len(results.failures)} failed.", "",
                 *_problems(results, results.records)]
        _write_documents(report, lines, out, formats)
        return report
    records = _narrow(results.records, "methods", "method", methods,
                      keep=tuple(results.records[results.records.reference != ""].method.unique()))
    records = _narrow(records, "pairs", "pair", pairs)
    records = _narrow(records, "benchmarks", "benchmark", benchmarks)
    scores = run_scores(records, method_families())
    check_one_teacher(scores)
    lines = [f"# kdbench report: {root}", "",
             f"{scores.run_path.nunique()} finished runs, {len(results.failures)} failed. mIoU (%) of the last "
             "checkpoint, mean ± sample std over seeds (superscript n: a cell with fewer seeds than its row); "
             "a target column is that domain's mIoU, *avg* the plain mean over a benchmark's targets (as the GKD "
             "paper), *ID* the source domain's; *mean ID/OOD* average the benchmarks per seed first. Bold: the best "
             "value of a column, the teacher aside. *Δ best baseline*: against the strongest other method, leaving "
             "out student-only and the row's own ablations. Each Δ carries its 95% Welch interval over seeds in "
             "brackets, *n.s.* where it contains 0 (none with one seed). *train s*: mean wall seconds of the "
             "method's training stages per run (no shared pretraining, no evaluation); *train steps*: their optimiser "
             "steps per run, every stage counted (GKD's distillation stages and its task stage).", ""]
    if not (select or searched(scores)):
        for (suite, setting), per_setting in scores.groupby(["suite", "setting"], sort=False):
            lines += _setting_section(suite, setting, per_setting, records, out, formats, report,
                                      methods is not None)
    else:
        present = rules_present(records, scores)
        rules = select or present
        check_rules(rules, present)
        for index, rule in enumerate(rules):
            view = apply_rule(records, scores, rule, tuned_keys())
            lines += [f"## Selection rule: {rule}", "", f"Each cell reports {RULE_TEXT[rule]}, with its test "
                      "scores over seeds.", "", *_chosen_table(view), ""]
            shown = formats if index == 0 else tuple(f for f in formats if f not in ("png", "svg"))
            for (suite, setting), per_setting in view.scores.groupby(["suite", "setting"], sort=False):
                lines += _setting_section(suite, setting, per_setting, records, out, shown, report,
                                          methods is not None, rule)
        lines += _sensitivity_table(sensitivity(scores))
    lines += _problems(results, records)
    _write_documents(report, lines, out, formats)
    return report


def _write_documents(report: Report, lines: list[str], out: Path, formats: tuple[str, ...]) -> None:
    """``report.md`` and ``report.html`` (the same text as a page, ``kdbench.report.html``), those asked for."""
    if report.markdown is not None:
        atomic_write_text(report.markdown, "\n".join(lines))
        report.files.append(report.markdown)
    if "html" in formats:
        report.html = write_html(out / "report.html", "\n".join(lines), out)
        report.files.append(report.html)


def _chosen_table(view: RuleView) -> list[str]:
    """The trial each cell reports under the rule, with its tuned values and the val score it was chosen on."""
    if view.chosen.empty:
        return []
    lines = ["| pair | benchmark | method | trial | tuned values | val mIoU chosen on | seeds | trials |",
             "|---|---|---|---:|---|---:|---:|---:|"]
    for row in view.chosen.itertuples():
        values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.values.items())
        score = "–" if row.score is None or pd.isna(row.score) else f"{row.score:.1f}"
        lines.append(f"| {row.pair} | {row.benchmark} | {row.base} | {row.trial} | {values or 'no search space'} "
                     f"| {score} | {row.seeds} | {row.trials} |")
    return lines


def _sensitivity_table(frame: pd.DataFrame) -> list[str]:
    """Each searched method's spread of seed-mean OOD over its trials (test scores; it chooses nothing)."""
    if frame.empty:
        return []
    lines = ["## Sensitivity to hyper-parameters", "", "Seed-mean OOD mIoU of every trial of a cell (test scores, "
             "for describing the search only; no rule reads them): lowest, highest, and the std over trials.", "",
             "| pair | benchmark | method | trials | lowest | highest | std |", "|---|---|---|---:|---:|---:|---:|"]
    for row in frame.itertuples():
        lines.append(f"| {row.pair} | {row.benchmark} | {row.base} | {row.trials} | {row.low:.1f} | {row.high:.1f} "
                     f"| {row.std:.1f} |")
    return [*lines, ""]


def _setting_section(suite: str, setting: str, scores: pd.DataFrame, records: pd.DataFrame, out: Path,
                     formats: tuple[str, ...], report: Report, chosen: bool, rule: str | None = None) -> list[str]:
    """One suite and setting: the scatter, then per pair its table, findings, plots and missing runs. The radar
    and bar charts leave ablations out unless the methods were ``chosen`` (``--methods``), to stay readable; an
    ablation whose method is not in the setting is drawn, as the only row of its family.
    ``rule``: the selection rule the runs were chosen by, named in headings, captions and file names."""
    benchmarks = suite_benchmark_order(suite, list(dict.fromkeys(scores.benchmark)))
    found = targets_by_benchmark(records, suite)
    targets = {b: found[b] for b in benchmarks if b in found}
    caption_rows = records[records.run_path.isin(set(scores.run_path))]
    protocol = caption_rows.protocol_caption.iloc[0]
    provenance = _provenance(records, scores)
    heading = f"## Suite {suite}" + (f" ({setting})" if setting else "") + (f", selection: {rule}" if rule else "")
    chosen_by = f" Selection rule {rule}: {RULE_TEXT[rule]}." if rule else ""
    lines = [heading, "", f"Protocol {protocol}; {provenance}.", ""]
    image_formats = [f for f in formats if f in ("png", "svg")]
    shown = "png" if "png" in image_formats else (image_formats[0] if image_formats else None)
    all_methods = method_order(scores)
    colors = plots.method_colors(all_methods, roles(scores))
    ablations = frozenset() if chosen else frozenset(
        scores[(scores.family != scores.base) & scores.family.isin(set(scores.base))].method)
    rule_parts = [rule] if rule else []

    def draw(scope: str, runs: pd.DataFrame, title: str, naming) -> list[str]:
        if not image_formats:
            return []
        view = PlotInput(runs, benchmarks, targets, all_methods, colors, ablations, title, image_formats,
                         Place(out, naming))
        return _figure_lines(view, scope, out, shown, report)

    lines += draw("setting", scores, suite, lambda suffix: _slug(suite, setting, *rule_parts, suffix))
    for (pair, kind), per_pair in scores.groupby(["pair", "pair_kind"], sort=False):
        table = paper_table(per_pair, benchmarks, targets)
        report.tables.append((heading, table))
        first = records[(records.run_path.isin(set(per_pair.run_path))) & (records.reference != "teacher")]
        student = first.student.iloc[0] if len(first) else "?"
        teacher = records[records.run_path.isin(set(per_pair.run_path))].teacher.iloc[0]
        caption = (f"{suite}, pair {pair} ({kind}: {teacher} -> {student}), mIoU (%). Protocol {protocol}; "
                   f"{provenance}.{chosen_by}")
        name = _slug(suite, setting, *([rule] if rule else []), pair)
        lines += [f"### {pair} ({kind}): {teacher} → {student}", "", f"*{caption}*", ""]
        if "md" in formats or "html" in formats:
            lines += [to_markdown(table), ""]
        for fmt, text in (("csv", lambda t=table: to_csv(t)),
                          ("tex", lambda t=table, c=caption, n=name: to_latex(t, c, f"tab:{n}"))):
            if fmt in formats:
                path = out / "tables" / f"{name}.{fmt}"
                atomic_write_text(path, text())
                report.files.append(path)
        links = [f"[{fmt.upper()}]({_rel(out / 'tables' / name, out, fmt)})" for fmt in ("csv", "tex")
                 if fmt in formats]
        if links:
            lines += ["Table as " + ", ".join(links) + ".", ""]
        lines += _per_class(per_pair, records, out, name, suite, setting, pair, formats, report)
        lines += _findings(table)
        lines += draw("pair", per_pair, f"{suite} {pair} ({kind})", lambda suffix, n=name: f"{n}-{suffix}")
        missing = missing_runs(per_pair, benchmarks)
        if missing:
            lines += [f"Missing runs (cells shown as –): {'; '.join(missing)}.", ""]
    return lines


def _per_class(scores: pd.DataFrame, records: pd.DataFrame, out: Path, name: str, suite: str, setting: str,
               pair: str, formats: tuple[str, ...], report: Report) -> list[str]:
    """The pair's per-class IoU tables (``per_class``): ``per-class/<name>.md`` and ``per-class/<name>.csv``,
    and the report.md line that links them."""
    tables = class_tables(scores, records)
    if not tables:
        return []
    links = []
    if "md" in formats or "html" in formats:
        path = out / "per-class" / f"{name}.md"
        heading = f"# Per-class IoU: {suite}{f' ({setting})' if setting else ''}, pair {pair}"
        intro = ("Mean IoU (%) over seeds of every class on each target domain (test split); bold: the best value "
                 "of a class, the teacher aside. The *in-domain* row is each class's IoU on the source domain, mean "
                 "over the compared methods.")
        atomic_write_text(path, "\n".join([heading, "", intro, ""] + [per_class_markdown(t) for t in tables]))
        report.files.append(path)
        links.append(f"[Markdown]({path.relative_to(out).as_posix()})")
    if "csv" in formats:
        path = out / "per-class" / f"{name}.csv"
        atomic_write_text(path, per_class_csv(tables, suite, setting, pair))
        report.files.append(path)
        links.append(f"[CSV]({path.relative_to(out).as_posix()})")
    return ["Per-class IoU on every target domain: " + ", ".join(links) + ".", ""] if links else []


def _findings(table: PaperTable) -> list[str]:
    """One sentence per pair: which method leads on mean OOD, by how much over the best other family."""
    ood = table.index(MEAN_OOD)
    ranked = sorted(((r.cells[ood].mean, r.method) for r in table.rows
                     if r.markable and r.cells[ood].mean is not None), reverse=True)
    if not ranked:
        return []
    top_score, top = ranked[0]
    rival = best_baseline(table, top)
    text = f"Best mean OOD: {top} ({top_score:.1f})"
    if rival:
        rival_score = next(r.cells[ood].mean for r in table.rows if r.method == rival)
        text += f", {top_score - rival_score:+.1f} over the best other method, {rival} ({rival_score:.1f})"
        seeds = {r.method: r.ood_by_seed for r in table.rows}
        interval = welch_interval(seeds[top], seeds[rival])
        if interval is None:
            text += "; one seed, so no interval"
        else:
            verdict = "significant" if interval.significant else "not significant"
            text += f"; {verdict} (95% interval over seeds [{interval.low:+.1f}, {interval.high:+.1f}])"
    return [text + ".", ""]


def _figure_lines(view: PlotInput, scope: str, out: Path, shown: str | None, report: Report) -> list[str]:
    """Draw every registered plot of ``scope`` (``kdbench.report.figures``) and the report.md lines that show
    them: an embedded figure with its caption, or one line of links per plot whose figures are links."""
    lines = []
    for _, plot in plots_of(scope):
        figures = plot.draw(view)
        for figure in figures:
            report.files += figure.paths
        if not shown:
            continue
        links = [f"[{f.link}]({_rel(f.paths[0].with_suffix(''), out, shown)})" for f in figures if f.link]
        for figure in figures:
            if not figure.paths:  # a note (figures.Figure), said once per report
                lines += [] if figure.caption in report.notes else [figure.caption, ""]
                report.notes.add(figure.caption)
            elif not figure.link:
                lines += [f"![{figure.alt}]({_rel(figure.paths[0].with_suffix(''), out, shown)})", "",
                          f"*{figure.caption}*", ""]
        if links:
            lines += [f"{plot.links_intro}: " + ", ".join(links) + ".", ""]
    return lines


def _rel(stem: Path, out: Path, fmt: str) -> str:
    return stem.with_suffix(f".{fmt}").relative_to(out).as_posix()


def check_one_teacher(scores: pd.DataFrame) -> None:
    """Refuse a table whose runs were distilled from different teacher weights (``teacher_digest``): their rows
    would be averaged and compared as if they shared a teacher."""
    known = scores.dropna(subset=["teacher_digest"])
    for (suite, setting, bench, pair), digests in known.groupby(["suite", "setting", "benchmark", "pair"],
                                                                sort=False).teacher_digest:
        found = sorted(digests.unique())
        if len(found) > 1:
            where = f"{suite}{f' [{setting}]' if setting else ''} {bench} {pair}"
            raise UserError(f"{where} mixes runs made with {len(found)} different teacher weights "
                            f"({', '.join(d[:12] for d in found)}; `teacher_digest` in the records), which are not "
                            "comparable: report each output folder on its own, or leave the pair out with --pairs")


def _problems(results: Results, records: pd.DataFrame) -> list[str]:
    lines = []
    if results.failures:
        lines += ["## Failed runs", ""] + [f"- `{f['run']}`: {f['reason']}" for f in results.failures] + [""]
    if results.skipped_lines:
        lines += ["## Skipped record lines", ""] + [f"- {s}" for s in results.skipped_lines] + [""]
    return lines
