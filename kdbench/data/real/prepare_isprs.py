"""ISPRS Potsdam and Vaihingen: raw orthophoto tiles -> mmseg's 512² patches (datasets.md §9, §10).

Follows mmsegmentation's ``tools/dataset_converters/{potsdam,vaihingen}.py``, which GKD's ``data/potsdam/{RGB,IRRG}``
and ``data/vaihingen`` folders come from: boxes start every ``clip`` pixels and the last row/column is shifted back
to end at the border (12 × 12 = 144 patches of a 6000² tile); patches are named
``<tile>_<x0>_<y0>_<x1>_<y1>.png``; labels go from the ISPRS colour code to 0..6 (0 = boundary/void). Colours match
exactly: mmseg compares a weighted channel sum, which can also alias a stray colour onto a class; here every colour
outside the table becomes 0. Image channels are copied as stored (IRRG stays NIR-R-G).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from kdbench.data.real.labels import colours_to_index, encoding
from kdbench.data.real.prepare_io import MissingInputs, Plan, Source, Unit, Writer, list_folder, list_zip
from kdbench.errors import UserError

VERSION = 1

#: raw label colours (R, G, B); the position is the output index (mmseg's table, datasets.md §9; the catalog's
#: ``isprs-ann`` encoding)
ISPRS_COLOURS: tuple[tuple[int, int, int], ...] = encoding("isprs-ann").raw_colours

POTSDAM_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
              "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11", "7_12", "7_7", "7_8", "7_9"),
    "val": ("5_15", "6_15", "6_13", "3_13", "4_14", "6_14", "5_14", "2_13", "4_15", "2_14", "5_13", "4_13", "3_14",
            "7_13"),
}
VAIHINGEN_SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"area{k}" for k in (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)),
    "val": tuple(f"area{k}" for k in (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)),
}
POTSDAM_EXPECTED = {"train": 3456, "val": 2016}
VAIHINGEN_EXPECTED = {"train": 344, "val": 398}

#: modality -> (folder / zip stem of the official download, file pattern); the group is the tile id "<r>_<c>"
POTSDAM_IMAGES = {
    "RGB": ("2_Ortho_RGB", re.compile(r"top_potsdam_(\d+_\d+)_RGB\.tif")),
    "IRRG": ("3_Ortho_IRRG", re.compile(r"top_potsdam_(\d+_\d+)_IRRG\.tif")),
}
POTSDAM_LABELS = ("5_Labels_all_noBoundary", re.compile(r"top_potsdam_(\d+_\d+)_label_noBoundary\.tif"))
VAIHINGEN_IMAGE = re.compile(r"top_mosaic_09cm_(area\d+)\.tif")
VAIHINGEN_LABEL = re.compile(r"top_mosaic_09cm_(area\d+)_noBoundary\.tif")
VAIHINGEN_IMAGE_ZIP = "ISPRS_semantic_labeling_Vaihingen.zip"
VAIHINGEN_LABEL_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip"
VAIHINGEN_LABEL_FOLDERS = ("", "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
                           "gts_eroded_for_participants")


def box_starts(length: int, clip: int) -> list[int]:
    """Window starts along one axis: every ``clip`` pixels, plus one ending at the border if ``clip`` does not
    divide ``length``."""
    starts = list(range(0, length - clip + 1, clip))
    if length % clip:
        starts.append(length - clip)
    return starts


def clip_boxes(width: int, height: int, clip: int) -> list[tuple[int, int, int, int]]:
    """The (x0, y0, x1, y1) patch boxes of a ``width`` × ``height`` tile, row by row."""
    return [(x, y, x + clip, y + clip) for y in box_starts(height, clip) for x in box_starts(width, clip)]


def colour_to_index(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 ISPRS colour label -> H×W uint8 index 0..6; colours outside the table -> 0."""
    index = colours_to_index(rgb, ISPRS_COLOURS)
    return np.where(index < 0, 0, index).astype(np.uint8)


def _find(raw_dir: Path, name: str, what: str, folders: Sequence[str], zips: Sequence[str], pattern: re.Pattern[str],
          example: str, zip_parent: str | None = None) -> dict[str, Source]:
    """Sources matching ``pattern`` in the listed sub-folders, then in the listed zips (first found wins)."""
    where = " or ".join([f"folder {f}/" if f else "the folder itself" for f in folders] + [f"zip {z}" for z in zips])
    if not raw_dir.is_dir():
        raise MissingInputs(f"{name}: raw folder {raw_dir} not found (expected {what} {example} in {where}; "
                            f"set --data-root or data.paths.{name})")
    found: dict[str, Source] = {}
    for folder in folders:
        for key, source in list_folder(raw_dir / folder, pattern).items():
            found.setdefault(key, source)
    for archive in zips:
        for key, source in list_zip(raw_dir / archive, pattern, zip_parent).items():
            found.setdefault(key, source)
    if not found:
        raise MissingInputs(f"{name}: no {what} in {raw_dir}: expected files like {example} in {where}")
    return found


def _pair(name: str, raw_dir: Path, out_dir: Path, clip: int, images: dict[str, Source], labels: dict[str, Source],
          splits: dict[str, tuple[str, ...]], label_name: str, expected: dict[str, int]) -> Plan:
    split_of = {tile: split for split, tiles in splits.items() for tile in tiles}
    units = []
    for key in sorted(images):
        if key not in split_of:
            continue
        if key not in labels:
            raise MissingInputs(f"{name}: label {label_name.format(key)} of tile {key} not found in {raw_dir} "
                                f"(image {images[key].describe()})")
        units.append(Unit(key, split_of[key], (images[key], labels[key])))
    if not units:
        raise MissingInputs(f"{name}: none of the tiles in {raw_dir} belongs to the mmseg train/val split lists")
    plan = Plan(name, raw_dir, out_dir, units, functools.partial(convert_tile, clip=clip), VERSION,
                params={"clip": clip}, unit_kind="tiles", expected=expected if clip == 512 else None)
    total = len(split_of)
    if len(units) < total:
        plan.notes.append(f"{len(units)} of the {total} tiles of the official split lists found")
    return plan


def potsdam_sources(name: str, modality: str, raw_dir: Path) -> tuple[dict[str, Source], dict[str, Source]]:
    """(image tiles, label tiles) of Potsdam ``modality`` ("RGB" or "IRRG") in ``raw_dir``, keyed by tile id, from
    ``2_Ortho_RGB``/``3_Ortho_IRRG`` and ``5_Labels_all_noBoundary`` (extracted folders or the official zips)."""
    stem, pattern = POTSDAM_IMAGES[modality]
    images = _find(raw_dir, name, f"Potsdam {modality} tiles", [stem], [f"{stem}.zip"], pattern,
                   f"top_potsdam_2_10_{modality}.tif")
    label_stem, label_pattern = POTSDAM_LABELS
    labels = _find(raw_dir, name, "Potsdam label tiles", [label_stem], [f"{label_stem}.zip"], label_pattern,
                   "top_potsdam_2_10_label_noBoundary.tif")
    return images, labels


def vaihingen_sources(name: str, raw_dir: Path) -> tuple[dict[str, Source], dict[str, Source]]:
    """(image tiles, eroded ground-truth tiles) of Vaihingen in ``raw_dir``, keyed by area: ``top/`` and the
    ``_noBoundary`` labels (folders or the two official zips)."""
    images = _find(raw_dir, name, "Vaihingen tiles", ["top"], [VAIHINGEN_IMAGE_ZIP], VAIHINGEN_IMAGE,
                   "top_mosaic_09cm_area1.tif", zip_parent="top")
    labels = _find(raw_dir, name, "Vaihingen eroded ground truth", VAIHINGEN_LABEL_FOLDERS,
                   [VAIHINGEN_LABEL_ZIP, VAIHINGEN_IMAGE_ZIP], VAIHINGEN_LABEL, "top_mosaic_09cm_area1_noBoundary.tif")
    return images, labels


def plan_potsdam(name: str, modality: str, raw_dir: Path, out_dir: Path, clip: int = 512) -> Plan:
    """Potsdam ``modality`` from ``raw_dir`` (:func:`potsdam_sources`) into ``out_dir/{img_dir,ann_dir}``."""
    images, labels = potsdam_sources(name, modality, raw_dir)
    return _pair(name, raw_dir, out_dir, clip, images, labels, POTSDAM_SPLITS,
                 "top_potsdam_{}_label_noBoundary.tif", POTSDAM_EXPECTED)


def plan_vaihingen(name: str, raw_dir: Path, out_dir: Path, clip: int = 512) -> Plan:
    """Vaihingen from ``raw_dir`` (:func:`vaihingen_sources`); area9 is in neither split list and is dropped, as
    mmseg does."""
    images, labels = vaihingen_sources(name, raw_dir)
    return _pair(name, raw_dir, out_dir, clip, images, labels, VAIHINGEN_SPLITS,
                 "top_mosaic_09cm_{}_noBoundary.tif", VAIHINGEN_EXPECTED)


def read_rgb(source: Source) -> Image.Image:
    """A raw tile (image or colour label) decoded as 8-bit RGB (UserError naming it if unreadable or not RGB)."""
    return _as_rgb(source.read_image(), source)


def _as_rgb(image: Image.Image, source: Source) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "P", "L"):
        return image.convert("RGB")
    raise UserError(f"{source.describe()}: image mode {image.mode}, expected an 8-bit 3-channel TIFF")


def convert_tile(unit: Unit, writer: Writer, clip: int) -> int:
    """Cuts one tile and its label into ``img_dir/<split>/`` and ``ann_dir/<split>/`` patches; returns the count."""
    image_source, label_source = unit.sources
    image, label = read_rgb(image_source), read_rgb(label_source)
    if image.size != label.size:
        raise UserError(f"{label_source.describe()}: size {label.size} differs from its image "
                        f"{image_source.describe()} {image.size}")
    width, height = image.size
    if width < clip or height < clip:
        raise UserError(f"{image_source.describe()}: {width}×{height} is smaller than the {clip}² patch size")
    boxes = clip_boxes(width, height, clip)
    for box in boxes:
        stem = "_".join([unit.key, *map(str, box)])
        writer.save(f"img_dir/{unit.split}/{stem}.png", image.crop(box), "PNG", compress_level=1)
        index = colour_to_index(np.asarray(label.crop(box)))
        writer.save(f"ann_dir/{unit.split}/{stem}.png", Image.fromarray(index), "PNG", compress_level=1)
    return len(boxes)
