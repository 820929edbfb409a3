"""``kdbench data check``: what is on disk for each dataset and what is wrong with it. Reads, never writes.

Per split: image and label counts against the official size (datasets.md §1-§11; a different count is a warning,
since subsets are legitimate), then per checked sample: the image and label decode, have the same size, and the
label holds only values of the dataset's table (raw values before mapping, e.g. a GTA labelId ≥ 34, an ISPRS colour
outside the table, an UrbanSyn value > 19). Missing folders, images without labels, unreadable files, size
mismatches and off-table values are errors.

A dataset that ``kdbench data prepare`` converts (Mapillary, Potsdam, Vaihingen) is checked in its converted form
when that is there, else in its raw download (:mod:`kdbench.data.real.check_raw`): a correct raw download is not an
error, only a note that it still needs converting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdbench.data.real import prepare_io
from kdbench.data.real.catalog import PREPARE_HINT, DatasetSpec, get_dataset
from kdbench.data.real.files import (
    Sample,
    dataset_root,
    find_layout,
    holds_images,
    holds_split,
    list_samples,
    read_image,
    read_raw_label,
)
from kdbench.data.real.prepare import prepared_folder, raw_dir
from kdbench.errors import UserError

ERROR, WARNING, NOTE = "error", "warning", "note"
_SEVERITY_ORDER = {ERROR: 0, WARNING: 1, NOTE: 2}
#: problem kind -> its heading in :func:`format_reports`
KINDS = {
    "missing-folder": "missing folder",
    "empty": "no images",
    "no-label": "image without label",
    "unreadable": "unreadable file",
    "size-mismatch": "image/label size mismatch",
    "off-table": "label values outside the table",
    "count": "count differs from the official size",
    "config": "dataset config file",
    "prepare": "needs converting",
    "held-out": "held-out training slice",
}
#: what to do about images without labels, by report kind (raw download or files read as they are)
NO_LABEL_HINT = {False: "a run refuses such a split; --set data.missing_labels=skip leaves these images out",
                 True: "kdbench data prepare refuses them: restore their labels, or remove the images"}
EXAMPLES = 3


@dataclass(frozen=True)
class Problem:
    kind: str
    severity: str
    split: str | None
    detail: str
    path: Path | None = None


@dataclass(frozen=True)
class SplitReport:
    split: str
    images: int
    labels: int
    official: int
    checked: int
    labelled: bool = True
    unit: str = "images"


@dataclass
class DatasetReport:
    """One dataset's check. ``raw``: its raw download was checked (a dataset ``prepare`` has not converted yet)."""

    name: str
    title: str
    root: Path | None
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    raw: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_dataset(spec: DatasetSpec, root: Path, splits: str | Sequence[str] | None = None,
                  limit: int | None = None, workers: int = 1) -> DatasetReport:
    """Checks ``splits`` (default: the dataset's train and eval splits) of ``spec`` under ``root``. ``limit``: decode
    at most that many samples per split, evenly spread over the sorted list (counts and label pairing are always
    checked for all). ``workers``: decoding threads."""
    names = [splits] if isinstance(splits, str) else list(splits or default_splits(spec))
    for name in names:
        spec.split(name)
    report = DatasetReport(spec.name, spec.title, root)
    for name in names:
        _check_split(spec, root, name, limit, workers, report)
    return report


def check_datasets(names: Sequence[str], data_root: Path, cache_dir: Path | None, paths: Mapping[str, str] | None,
                   limit: int | None = None, splits: Mapping[str, Sequence[str]] | None = None,
                   workers: int = 1) -> list[DatasetReport]:
    """One report per dataset name (an unknown name is a UserError); ``splits`` overrides the checked splits per
    dataset name. A dataset ``prepare`` converts is checked as converted where it is, else as its raw download."""
    specs = [get_dataset(name) for name in names]
    reports = []
    memo: dict = {}  # raw label decodes shared by the views of one download (Potsdam RGB and IRRG)
    for spec in specs:
        if spec.prepared:
            reports.append(_check_prepared(spec, Path(data_root), cache_dir, paths or {}, limit,
                                           (splits or {}).get(spec.name), workers, memo))
            continue
        try:
            root = dataset_root(spec, Path(data_root), paths, cache_dir)
        except UserError as err:
            reports.append(DatasetReport(spec.name, spec.title, None,
                                         problems=[Problem("missing-folder", ERROR, None, str(err))]))
            continue
        reports.append(check_dataset(spec, root, (splits or {}).get(spec.name), limit, workers))
    return reports


def _check_prepared(spec: DatasetSpec, data_root: Path, cache_dir: Path | None, paths: Mapping[str, str],
                    limit: int | None, splits: Sequence[str] | None, workers: int, memo: dict) -> DatasetReport:
    """The converted files where they are (cache, override, data root), else the raw download ``prepare`` reads."""
    from kdbench.data.real.check_raw import check_raw_dataset

    root = dataset_root(spec, data_root, paths, cache_dir)
    interrupted = cache_dir is not None and _interrupted(spec.name, root, cache_dir)
    if holds_images(spec, root) and not interrupted:
        return check_dataset(spec, root, splits, limit, workers)
    out = prepared_folder(spec.name, cache_dir) if cache_dir is not None else None
    state = f"the conversion in {root} was interrupted" if interrupted else "not prepared" + (
        f" (nothing in {out})" if out is not None else "")
    try:
        report = check_raw_dataset(spec.name, spec.title, raw_dir(spec.name, data_root, dict(paths)), limit,
                                   workers, memo, out)
    except UserError as err:
        detail = f"dataset {spec.name}: {state}, and its raw download was not found: {err}; {PREPARE_HINT}"
        return DatasetReport(spec.name, spec.title, None, problems=[Problem("missing-folder", ERROR, None, detail)])
    if interrupted:
        report.problems.append(Problem("prepare", NOTE, None, f"{state}; kdbench data prepare finishes it"))
    return report


def _interrupted(name: str, root: Path, cache_dir: Path) -> bool:
    """Whether ``root`` is a conversion ``prepare`` started in the cache and never finished."""
    folder = prepared_folder(name, cache_dir)
    marker = prepare_io.done_marker(folder)
    return root.resolve() == folder.resolve() and marker.parent.is_dir() and not marker.is_file()


def default_splits(spec: DatasetSpec) -> list[str]:
    """The splits a run reads: training, evaluation, and the one its validation images come from."""
    return list(dict.fromkeys(s for s in (spec.train_split, spec.eval_split, spec.val_split) if s is not None))


def format_reports(reports: Sequence[DatasetReport]) -> str:
    """Readable text: one line per dataset (root, per-split counts, verdict), its problems indented, grouped by kind
    with a count and the first few examples."""
    lines = []
    for report in reports:
        counts = "; ".join(_split_text(s) for s in report.splits) or "nothing found"
        verdict = "OK" if report.ok else f"{len(report.errors)} error(s)"
        if report.warnings:
            verdict += f", {len(report.warnings)} warning(s)"
        if report.raw and report.ok:
            verdict += "; not prepared yet"
        where = f" at {report.root}" if report.root is not None else ""
        name = f"{report.name} (raw download)" if report.raw else report.name
        lines.append(f"{name}{where}: {counts} -- {verdict}")
        lines += _problem_lines(report)
    bad = [r.name for r in reports if not r.ok]
    lines.append(f"{len(reports)} dataset(s) checked: {len(reports) - len(bad)} OK"
                 + (f", errors in {', '.join(bad)}" if bad else ""))
    unprepared = [r.name for r in reports if r.raw and r.ok]
    if unprepared:
        lines.append(f"Raw downloads OK, not converted yet: {', '.join(unprepared)}; run kdbench data prepare "
                     "(same --data-root, --path and --cache) before training on them.")
    if any(p.kind == "count" for r in reports for p in r.problems):
        lines.append("Counts differing from the official size are warnings, not errors: a subset is fine, but its "
                     "scores are not comparable with the paper's.")
    return "\n".join(lines)


def _check_split(spec: DatasetSpec, root: Path, split: str, limit: int | None, workers: int,
                 report: DatasetReport) -> None:
    split_spec = spec.split(split)
    if split == spec.held_out and not holds_split(spec, root, split):
        folder = root / split_spec.layouts[0].image_dir(split)
        report.problems.append(Problem("missing-folder", WARNING, split, f"no target-val: {folder} not found (the "
                                       "held-out training images; kdbench data prepare converts them where the raw "
                                       "download has its training folder)", folder))
        return
    try:
        samples = list_samples(spec, root, split, missing_labels="keep")
    except UserError as err:
        report.problems.append(Problem("missing-folder", ERROR, split, str(err)))
        return
    labelled = split_spec.labelled
    with_label = [s for s in samples if s.label is not None]
    checked = spread(samples, limit)
    report.splits.append(SplitReport(split, len(samples), len(with_label), split_spec.size, len(checked), labelled))
    if not samples:
        folder = root / find_layout(spec, root, split).image_dir(split)
        report.problems.append(Problem("empty", ERROR, split, f"no images in {folder}", folder))
        return
    if len(samples) != split_spec.size:
        report.problems.append(Problem("count", WARNING, split, f"{split} has {len(samples)} images, the official "
                                       f"{split} split has {split_spec.size}"))
    if labelled:
        report.problems += [Problem("no-label", ERROR, split, _rel(s.image, root), s.image)
                            for s in samples if s.label is None]
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(lambda s: _check_sample(spec, root, split, s, labelled), checked))
    else:
        found = [_check_sample(spec, root, split, s, labelled) for s in checked]
    for problems in found:
        report.problems += problems


def _check_sample(spec: DatasetSpec, root: Path, split: str, sample: Sample, labelled: bool) -> list[Problem]:
    problems = []
    try:
        shape = read_image(sample.image).shape[:2]
    except UserError as err:
        problems.append(Problem("unreadable", ERROR, split, str(err), sample.image))
        shape = None
    if not labelled or sample.label is None:
        return problems
    try:
        raw = read_raw_label(spec, sample.label)
    except UserError as err:
        return [*problems, Problem("unreadable", ERROR, split, str(err), sample.label)]
    label_rel = _rel(sample.label, root)
    if shape is not None and tuple(raw.raw.shape[:2]) != tuple(shape):
        problems.append(Problem("size-mismatch", ERROR, split, f"{_rel(sample.image, root)} is {shape[1]}×{shape[0]}, "
                                f"{label_rel} is {raw.raw.shape[1]}×{raw.raw.shape[0]}", sample.label))
    values = raw.encoding.off_table_values(raw.raw)
    if values:
        problems.append(Problem("off-table", ERROR, split,
                                f"{label_rel}: {off_table_text(values, raw.colours, raw.raw)}", sample.label))
    return problems


def off_table_text(values: list[int], colours: np.ndarray | None, raw: np.ndarray) -> str:
    if colours is None:
        return "values " + ", ".join(str(v) for v in values)
    unknown = np.unique(colours[raw < 0].reshape(-1, 3), axis=0)
    shown = ", ".join(f"({r},{g},{b})" for r, g, b in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    return f"colours {shown}{more}"


def _split_text(split: SplitReport) -> str:
    labels = f", {split.labels} labels" if split.labelled else " (no labels)"
    checked = f", {split.checked} decoded" if split.checked != split.images else ""
    return f"{split.split} {split.images}/{split.official} {split.unit}{labels}{checked}"


def _problem_lines(report: DatasetReport) -> list[str]:
    groups: dict[tuple[str, str], list[Problem]] = {}
    for problem in report.problems:
        groups.setdefault((problem.severity, problem.kind), []).append(problem)
    lines = []
    for (severity, kind), problems in sorted(groups.items(), key=lambda kv: (_SEVERITY_ORDER[kv[0][0]], kv[0][1])):
        if kind in ("missing-folder", "empty", "config", "prepare", "held-out"):
            lines += [f"  {severity}: {p.detail}" for p in problems]
        elif kind == "count":
            counts = ", ".join(f"{s.split} {s.images} of {s.official}" for s in report.splits
                               if s.images != s.official)
            lines.append(f"  {severity}: {KINDS[kind]} (a subset is fine): {counts}")
        else:
            per_split = Counter(p.split for p in problems)
            where = f" ({', '.join(f'{k} {v}' for k, v in per_split.items())})" if len(per_split) > 1 else ""
            lines.append(f"  {severity}: {KINDS[kind]}: {len(problems)} file(s){where}, e.g.")
            lines += [f"      {p.detail}" for p in problems[:EXAMPLES]]
            if len(problems) > EXAMPLES:
                lines.append(f"      ... and {len(problems) - EXAMPLES} more")
            if kind == "no-label":
                lines.append(f"      ({NO_LABEL_HINT[report.raw]})")
    return lines


def spread(samples: list, limit: int | None) -> list:
    """At most ``limit`` samples, evenly spaced over the list (all when ``limit`` is None or large enough)."""
    if limit is None or limit >= len(samples):
        return samples
    if limit <= 0:
        return []
    return [samples[i * len(samples) // limit] for i in range(limit)]


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)
