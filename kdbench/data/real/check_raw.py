"""``kdbench data check`` on the RAW download of a dataset that ``kdbench data prepare`` converts (Mapillary,
Potsdam, Vaihingen), when it is not converted yet. Reads, never writes.

The raw files are found as ``prepare`` finds them (:mod:`~kdbench.data.real.prepare_isprs`,
:mod:`~kdbench.data.real.prepare_mapillary`: extracted folders or the official zips). Per split: tiles/images
against the official split lists (a different count is a warning), images without a label; per checked pair: the
image and label decode in full (a truncated file is an error), have the same size, and the label holds only the
table's values (ISPRS colours, Mapillary v1.2 ids 0..65). Of Mapillary's training split only the held-out slice
``prepare`` converts (its target-val) is checked, as a split ``train``; a download without a training folder is a
warning (no target-val). Files ``prepare`` never reads (Vaihingen's area9 ground truth, Mapillary's other training
images and v2.0 labels, the colour decoys in the Vaihingen zip) are not looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdbench.data.real import prepare_io, prepare_isprs, prepare_mapillary
from kdbench.data.real.check import ERROR, NOTE, WARNING, DatasetReport, Problem, SplitReport, off_table_text, spread
from kdbench.data.real.labels import colours_to_index, encoding
from kdbench.data.real.prepare_io import Source
from kdbench.errors import UserError

#: the note a correct raw download gets (not an error: the data is fine, it only needs converting)
RAW_OK = "raw OK; run kdbench data prepare"


@dataclass(frozen=True)
class RawPair:
    """One raw image (tile) and its label (``None``: not found)."""

    key: str
    image: Source
    label: Source | None


@dataclass(frozen=True)
class RawSplit:
    split: str
    official: int
    pairs: list[RawPair]


@dataclass
class RawListing:
    """What ``prepare`` would read of one dataset: per split its pairs; ``unit`` names a pair ("tiles", "images");
    ``read_label`` decodes a label to (H×W, off-table text or "")."""

    unit: str
    splits: list[RawSplit]
    read_label: Callable[[Source], tuple[tuple[int, int], str]]
    problems: list[Problem] = field(default_factory=list)


#: label decodes shared between the views of one download (Potsdam RGB and IRRG read the same label tiles)
LabelMemo = dict[str, tuple[tuple[int, int] | None, list[Problem]]]


def check_raw_dataset(name: str, title: str, raw_dir: Path, limit: int | None = None, workers: int = 1,
                      memo: LabelMemo | None = None, out_dir: Path | None = None) -> DatasetReport:
    """A report on the raw download of ``name`` in ``raw_dir``; with no error it carries the :data:`RAW_OK` note
    (naming ``out_dir``, where prepare would write). A download that is not there raises MissingInputs (for the
    caller to word). ``limit`` and ``workers`` as for :func:`kdbench.data.real.check.check_dataset`."""
    listing = _listing(name, raw_dir)
    report = DatasetReport(name, title, raw_dir, raw=True, problems=list(listing.problems))
    memo = {} if memo is None else memo
    with prepare_io.large_images_allowed():
        for split in listing.splits:
            _check_split(listing, split, raw_dir, limit, workers, memo, report)
    if report.ok:
        into = f" (into {out_dir})" if out_dir is not None else ""
        report.problems.append(Problem("prepare", NOTE, None, f"{RAW_OK} to convert it{into}"))
    return report


def _listing(name: str, raw_dir: Path) -> RawListing:
    if name == "mapillary":
        return _mapillary_listing(name, raw_dir)
    if name.startswith("potsdam-"):
        images, labels = prepare_isprs.potsdam_sources(name, name.removeprefix("potsdam-").upper(), raw_dir)
        return _isprs_listing(images, labels, prepare_isprs.POTSDAM_SPLITS)
    if name == "vaihingen-irrg":
        images, labels = prepare_isprs.vaihingen_sources(name, raw_dir)
        return _isprs_listing(images, labels, prepare_isprs.VAIHINGEN_SPLITS)
    raise UserError(f"dataset {name} has no raw download to check: it is read as it is")


def _isprs_listing(images: dict[str, Source], labels: dict[str, Source],
                   splits: dict[str, tuple[str, ...]]) -> RawListing:
    """The tiles of mmseg's split lists that are present (others are ignored, as prepare ignores them)."""
    out = [RawSplit(split, len(tiles), [RawPair(t, images[t], labels.get(t)) for t in sorted(tiles) if t in images])
           for split, tiles in splits.items()]
    return RawListing("tiles", out, _isprs_label)


def _mapillary_listing(name: str, raw_dir: Path) -> RawListing:
    images, labels, config = prepare_mapillary.find_layout(raw_dir, name)
    problems = []
    if config.is_file():
        try:
            prepare_mapillary.check_config(config)
        except UserError as err:
            problems.append(Problem("config", ERROR, None, str(err), config))
    else:
        problems.append(Problem("config", NOTE, None, prepare_mapillary.config_note(config), config))
    splits = [RawSplit("val", prepare_mapillary.EXPECTED["val"],
                       _raw_pairs(prepare_mapillary.validation_pairs(images, labels)))]
    held_out = _mapillary_slice(name, raw_dir, problems)
    return RawListing("images", splits + ([held_out] if held_out else []), _mapillary_label, problems)


def _mapillary_slice(name: str, raw_dir: Path, problems: list[Problem]) -> RawSplit | None:
    """The held-out slice of the raw training split (what prepare converts as target-val), as split ``train``;
    ``None``, with a problem noted, when there is none to read."""
    folder = raw_dir / prepare_mapillary.TRAINING_IMAGES
    try:
        held = prepare_mapillary.training_slice(raw_dir, name)
    except UserError as err:
        problems.append(Problem("missing-folder", ERROR, "train", str(err), folder))
        return None
    if held is None:
        problems.append(Problem("missing-folder", WARNING, "train", prepare_mapillary.no_training_note(raw_dir),
                                folder))
        return None
    problems.append(Problem("held-out", NOTE, "train", f"held-out slice: the last {len(held.pairs)} of the "
                            f"{held.total} images in {prepare_mapillary.TRAINING_IMAGES} are its target-val (the only "
                            "training images prepare converts and check reads)"))
    return RawSplit("train", prepare_mapillary.EXPECTED["train"], _raw_pairs(held.pairs))


def _raw_pairs(pairs: list[tuple[Path, Path | None]]) -> list[RawPair]:
    return [RawPair(image.stem, prepare_io.file_source(image), prepare_io.file_source(label) if label else None)
            for image, label in pairs]


def _isprs_label(source: Source) -> tuple[tuple[int, int], str]:
    rgb = np.asarray(prepare_isprs.read_rgb(source))
    index = colours_to_index(rgb, prepare_isprs.ISPRS_COLOURS)
    return rgb.shape[:2], off_table_text([-1], rgb, index) if (index < 0).any() else ""


def _mapillary_label(source: Source) -> tuple[tuple[int, int], str]:
    ids = prepare_mapillary.read_ids(source)
    values = encoding("mapillary-v12").off_table_values(ids)
    return ids.shape[:2], off_table_text(values, None, ids) if values else ""


def _check_split(listing: RawListing, split: RawSplit, raw_dir: Path, limit: int | None, workers: int,
                 memo: LabelMemo, report: DatasetReport) -> None:
    pairs = split.pairs
    checked = spread(pairs, limit)
    labelled = sum(p.label is not None for p in pairs)
    report.splits.append(SplitReport(split.split, len(pairs), labelled, split.official, len(checked),
                                     unit=listing.unit))
    if not pairs:
        report.problems.append(Problem("empty", ERROR, split.split, f"no {listing.unit} of the {split.split} split "
                                       f"in {raw_dir}", raw_dir))
        return
    if len(pairs) != split.official:
        report.problems.append(Problem("count", WARNING, split.split, f"{split.split} has {len(pairs)} "
                                       f"{listing.unit}, the official {split.split} split has {split.official}"))
    report.problems += [Problem("no-label", ERROR, split.split, source_name(p.image, raw_dir), p.image.path)
                        for p in pairs if p.label is None]

    def check(pair: RawPair) -> list[Problem]:
        return _check_pair(listing, split.split, pair, raw_dir, memo)

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(check, checked))
    else:
        found = [check(pair) for pair in checked]
    for problems in found:
        report.problems += problems


def _check_pair(listing: RawListing, split: str, pair: RawPair, raw_dir: Path, memo: LabelMemo) -> list[Problem]:
    problems = []
    try:
        with pair.image.read_image() as image:
            shape = (image.height, image.width)
    except UserError as err:
        problems.append(Problem("unreadable", ERROR, split, str(err), pair.image.path))
        shape = None
    if pair.label is None:
        return problems
    label_shape, label_problems = _label(listing, split, pair.label, raw_dir, memo)
    problems += label_problems
    if shape is not None and label_shape is not None and label_shape != shape:
        problems.append(Problem("size-mismatch", ERROR, split, f"{source_name(pair.image, raw_dir)} is "
                                f"{shape[1]}×{shape[0]}, {source_name(pair.label, raw_dir)} is "
                                f"{label_shape[1]}×{label_shape[0]}", pair.label.path))
    return problems


def _label(listing: RawListing, split: str, source: Source, raw_dir: Path,
           memo: LabelMemo) -> tuple[tuple[int, int] | None, list[Problem]]:
    """The label's (H, W) (``None``: unreadable) and its problems, decoded once per check."""
    key = f"{source.describe()}|{source.fingerprint}"
    if key not in memo:
        try:
            shape, off_table = listing.read_label(source)
        except UserError as err:
            memo[key] = None, [Problem("unreadable", ERROR, split, str(err), source.path)]
        else:
            detail = f"{source_name(source, raw_dir)}: {off_table}"
            memo[key] = shape, [Problem("off-table", ERROR, split, detail, source.path)] if off_table else []
    return memo[key]


def source_name(source: Source, raw_dir: Path) -> str:
    """A raw file relative to the raw folder; a zip member as ``<zip>:<member>``."""
    try:
        rel = source.path.relative_to(raw_dir).as_posix()
    except ValueError:
        rel = str(source.path)
    return f"{rel}:{source.member}" if source.member else rel
