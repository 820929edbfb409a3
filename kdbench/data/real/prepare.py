"""``kdbench data prepare``: converts the raw originals that GKD's benchmarks read in a converted form into the
cache folder, resumably (datasets.md §6, §9, §10).

========================  =====================================  ==================================================
dataset                   raw folder (default ``<root>/…``)      output under the cache folder
========================  =====================================  ==================================================
``potsdam-rgb``           ``potsdam`` (2_Ortho_RGB + labels)     ``potsdam/RGB/{img_dir,ann_dir}/{train,val}``
``potsdam-irrg``          ``potsdam`` (3_Ortho_IRRG + labels)    ``potsdam/IRRG/{img_dir,ann_dir}/{train,val}``
``vaihingen-irrg``        ``vaihingen`` (top/ + eroded GT)       ``vaihingen/{img_dir,ann_dir}/{train,val}``
``mapillary``             ``mapillary`` (v1.2 or v2.0 package)   ``mapillary/half/{val_img,val_label}`` and, of the
                                                                 training split's held-out slice only,
                                                                 ``mapillary/half/{train_img,train_label}``
========================  =====================================  ==================================================

Every other dataset is read as it is and has nothing to prepare. Nothing is ever written under the data root or a
raw folder. Each prepared folder keeps its progress in ``.kdbench-prepare/``: one record per finished unit (tile or
image) and, written last, ``done.json`` (converter version, parameters, digest of the raw inputs' listing, counts),
so an interrupted run resumes where it stopped and a finished dataset is skipped without looking at its outputs.
A dataset that cannot be prepared (raw files missing or broken) is reported as failed and the others go on.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from kdbench.data.real import prepare_io
from kdbench.data.real.prepare_io import MissingInputs, Plan, Unit, UnitRecords, Writer
from kdbench.data.real.prepare_isprs import plan_potsdam, plan_vaihingen
from kdbench.data.real.prepare_mapillary import plan_mapillary
from kdbench.errors import UserError

#: datasets that ``prepare`` converts -> (default raw folder under the data root, output folder under the cache)
PREPARED: dict[str, tuple[str, str]] = {
    "potsdam-rgb": ("potsdam", "potsdam/RGB"),
    "potsdam-irrg": ("potsdam", "potsdam/IRRG"),
    "vaihingen-irrg": ("vaihingen", "vaihingen"),
    "mapillary": ("mapillary", "mapillary"),
}
#: where GKD's own converters put the same data under the raw folder (accepted when the originals are absent)
_GKD_LAYOUT = {"potsdam-rgb": "RGB/img_dir/val", "potsdam-irrg": "IRRG/img_dir/val", "vaihingen-irrg": "img_dir/val",
               "mapillary": "half/val_img"}

PREPARED_NOW = "prepared"
ALREADY = "already prepared"
FOUND_CONVERTED = "found converted"
NOTHING = "nothing to do"
FAILED = "FAILED"


@dataclass(frozen=True)
class DatasetResult:
    """What ``prepare`` did for one dataset. ``counts``: samples (image/label pairs) per split in ``folder``;
    ``units``: tiles/images of the raw data (``unit_kind``); ``converted``: units converted by this run;
    ``written``: files written; ``note``: for a FAILED dataset, the one-line reason."""

    name: str
    status: str
    folder: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    units: int = 0
    converted: int = 0
    written: int = 0
    expected: dict[str, int] | None = None
    note: str = ""
    unit_kind: str = "units"

    def line(self) -> str:
        """One readable line: what was done (converted and skipped counts) or why it failed."""
        counts = ", ".join(f"{split} {n}" for split, n in sorted(self.counts.items()))
        if self.status == NOTHING:
            return f"{self.name}: nothing to prepare (read as it is from the data root)"
        if self.status == FAILED:
            reason = self.note.removeprefix(f"dataset {self.name}: ").removeprefix(f"{self.name}: ")
            return f"{self.name}: FAILED: {reason}"
        text = f"{self.name}: {self.status} in {self.folder}"
        if self.status == PREPARED_NOW:
            text += (f": {self.converted} {self.unit_kind} converted, {self.units - self.converted} skipped "
                     "(done before)")
        elif self.status == ALREADY:
            text += f", skipped ({self.units} {self.unit_kind} done before)"
        text += f" ({counts})" if counts else ""
        if self.note:
            text += f"; {self.note}"
        if self.expected and self.counts != self.expected:
            full = ", ".join(f"{split} {n}" for split, n in sorted(self.expected.items()))
            text += f"; the full official data gives {full}"
        return text


@dataclass(frozen=True)
class PrepareSummary:
    results: tuple[DatasetResult, ...]

    def __getitem__(self, name: str) -> DatasetResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {r.name: dict(r.counts) for r in self.results if r.status not in (NOTHING, FAILED)}

    @property
    def failed(self) -> list[DatasetResult]:
        return [r for r in self.results if r.status == FAILED]

    def lines(self) -> list[str]:
        """The per-dataset summary, one line each."""
        return [r.line() for r in self.results]


def prepared_folder(name: str, cache_dir: Path) -> Path:
    """Where ``prepare`` writes dataset ``name`` (one of :data:`PREPARED`)."""
    return Path(cache_dir).expanduser() / PREPARED[name][1]


def is_prepared(name: str, cache_dir: Path) -> bool:
    """Whether a finished conversion of ``name`` is in the cache (its done marker exists)."""
    return prepare_io.done_marker(prepared_folder(name, cache_dir)).is_file()


def prepare_datasets(names: list[str], data_root: Path | None, cache_dir: Path, paths: dict[str, str],
                     echo: Callable[[str], None] = print, workers: int = 1, clip: int = 512) -> PrepareSummary:
    """Converts each of ``names`` that needs it from its raw folder (``paths[name]``, else ``data_root/<folder>``)
    into ``cache_dir``; other names are reported as having nothing to do. Every raw input is located (and the
    Mapillary config checked) before anything is written. A dataset that cannot be located or converted is a
    FAILED result naming the reason (echoed at once); the others go on. ``workers`` threads convert units in
    parallel; ``clip`` is the ISPRS patch size (512 in mmseg/GKD; tests use smaller). A cache folder inside the
    data root is a UserError (nothing is done)."""
    cache_dir = Path(cache_dir).expanduser()
    _check_cache_outside(cache_dir, data_root)
    names = list(dict.fromkeys(names))
    plans = {name: _plan_or_failure(name, data_root, cache_dir, paths, clip) for name in names if name in PREPARED}
    for planned in plans.values():
        if isinstance(planned, DatasetResult) and planned.status == FAILED:
            echo(planned.line())
    results = []
    with prepare_io.large_images_allowed():
        for name in names:
            planned = plans.get(name)
            if planned is None:
                results.append(DatasetResult(name, NOTHING))
            elif isinstance(planned, DatasetResult):
                results.append(planned)
            else:
                results.append(_run_or_failure(planned, echo, max(1, workers)))
    return PrepareSummary(tuple(results))


def _plan_or_failure(name: str, data_root: Path | None, cache_dir: Path, paths: dict[str, str],
                     clip: int) -> Plan | DatasetResult:
    try:
        return _plan(name, raw_dir(name, data_root, paths), prepared_folder(name, cache_dir), clip)
    except (UserError, OSError) as exc:
        return DatasetResult(name, FAILED, note=_reason(exc))


def _run_or_failure(plan: Plan, echo: Callable[[str], None], workers: int) -> DatasetResult:
    try:
        return _run(plan, echo, workers)
    except (UserError, OSError) as exc:
        result = DatasetResult(plan.name, FAILED, plan.out_dir, units=len(plan.units), unit_kind=plan.unit_kind,
                               note=f"{_reason(exc)} (finished {plan.unit_kind} are kept: a re-run goes on from "
                                    "there)")
        echo(result.line())
        return result


def _reason(exc: Exception) -> str:
    """An exception as one line: a UserError's message, else its type and message."""
    text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def raw_dir(name: str, data_root: Path | None, paths: dict[str, str]) -> Path:
    """``paths[name]`` (relative: to the data root, as the loaders take it), else the default folder."""
    has_root = data_root is not None and str(data_root) != ""
    if paths.get(name):
        override = Path(paths[name]).expanduser()
        return Path(data_root).expanduser() / override if has_root and not override.is_absolute() else override
    if not has_root:
        raise UserError(f"{name}: no raw folder: pass --data-root or set data.paths.{name}")
    return Path(data_root).expanduser() / PREPARED[name][0]


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_cache_outside(cache_dir: Path, data_root: Path | None) -> None:
    if data_root is not None and str(data_root) != "" and _inside(cache_dir, Path(data_root).expanduser()):
        raise UserError(f"cache folder {cache_dir} is inside the data root {data_root}: prepare never writes among "
                        "the originals; choose a cache folder (data.cache_dir) outside it")


def _plan(name: str, raw_dir: Path, out_dir: Path, clip: int) -> Plan | DatasetResult:
    if _inside(out_dir, raw_dir) or _inside(raw_dir, out_dir):
        raise UserError(f"{name}: output folder {out_dir} and raw folder {raw_dir} overlap: prepare never writes "
                        "among the originals; choose a cache folder (data.cache_dir) elsewhere")
    try:
        if name.startswith("potsdam-"):
            return plan_potsdam(name, name.removeprefix("potsdam-").upper(), raw_dir, out_dir, clip)
        if name == "vaihingen-irrg":
            return plan_vaihingen(name, raw_dir, out_dir, clip)
        return plan_mapillary(name, raw_dir, out_dir)
    except MissingInputs:
        marker = prepare_io.read_json(prepare_io.done_marker(out_dir))
        if marker:
            return DatasetResult(name, ALREADY, out_dir, marker.get("counts", {}), marker.get("units", 0),
                                 note="raw originals not found, kept as is",
                                 unit_kind=marker.get("unit_kind", "units"))
        if (raw_dir / _GKD_LAYOUT[name]).is_dir():
            return DatasetResult(name, FOUND_CONVERTED, raw_dir, note="GKD's converted layout, read from there")
        raise


def _run(plan: Plan, echo: Callable[[str], None], workers: int) -> DatasetResult:
    marker_path = prepare_io.done_marker(plan.out_dir)
    marker = prepare_io.read_json(marker_path)
    sources = plan.sources_digest()
    if marker and (marker.get("version"), marker.get("params"), marker.get("sources")) == (
            plan.version, plan.params, sources):
        return DatasetResult(plan.name, ALREADY, plan.out_dir, marker["counts"], marker["units"],
                             expected=plan.expected, note="; ".join(plan.notes), unit_kind=plan.unit_kind)
    echo(f"{plan.name}: converting {len(plan.units)} {plan.unit_kind} from {plan.raw_dir} into {plan.out_dir}")
    for note in plan.notes:
        echo(f"{plan.name}: note: {note}")
    marker_path.unlink(missing_ok=True)
    prepare_io.remove_temporaries(plan.out_dir)
    records = UnitRecords(plan.out_dir)
    for orphan in sorted(records.keys() - {u.key for u in plan.units}):
        records.remove(orphan)
    counts: Counter[str] = Counter({split: 0 for split in {u.split for u in plan.units}})
    todo = []
    for unit in plan.units:
        record = records.finished(unit.key, plan.unit_fingerprint(unit))
        if record is not None:
            counts[unit.split] += record["samples"]
        else:
            todo.append(unit)
    written = 0
    bar = tqdm(total=len(todo), desc=plan.name, unit=plan.unit_kind, leave=False, disable=None)
    try:
        for unit, samples, files in _convert_all(plan, records, todo, workers):
            counts[unit.split] += samples
            written += files
            bar.update()
    finally:
        bar.close()
    summary = {"dataset": plan.name, "version": plan.version, "params": plan.params, "sources": sources,
               "counts": dict(sorted(counts.items())), "units": len(plan.units), "unit_kind": plan.unit_kind}
    prepare_io.write_json_atomic(marker_path, summary)
    return DatasetResult(plan.name, PREPARED_NOW, plan.out_dir, summary["counts"], len(plan.units), len(todo),
                         written, plan.expected, unit_kind=plan.unit_kind)


def _convert_one(plan: Plan, records: UnitRecords, unit: Unit) -> tuple[Unit, int, int]:
    writer = Writer(plan.out_dir)
    samples = plan.convert(unit, writer)
    records.delete_outputs(unit.key, keep=writer.written)
    records.save(unit.key, plan.unit_fingerprint(unit), writer.written, samples)
    return unit, samples, len(writer.written)


def _convert_all(plan: Plan, records: UnitRecords, todo: list[Unit],
                 workers: int) -> Iterator[tuple[Unit, int, int]]:
    if workers == 1:
        for unit in todo:
            yield _convert_one(plan, records, unit)
        return
    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(_convert_one, plan, records, unit) for unit in todo]
        for future in cf.as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
