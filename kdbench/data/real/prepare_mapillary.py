"""Mapillary Vistas v1.2 -> GKD's half-resolution 19-class evaluation copies (datasets.md §6).

GKD/Rein evaluate Mapillary as a *target* only, on ``half/val_img/<id>.jpg`` + ``half/val_label/<id>.png``: their
``mapillary2cityscape.py`` maps the 66 v1.2 class ids to the 19 Cityscapes train ids (rule derived from openseg,
applied to the ``readable`` names of ``config.json``), and ``mapillary_resize.py`` shrinks each validation image to
(w//2, h//2) with bicubic (saved as JPEG at Pillow's default quality) and its converted label with nearest. Both
packagings are read: standalone v1.2 (``{split}/labels``, ``config.json``) and the v2.0 package
(``{split}/v1.2/labels``, ``config_v1.2.json``). Label PNGs are palettised and read by index, never by colour.

Mapillary is never trained on, so of its training split only the held-out slice is converted, the same way, into
``half/train_img`` + ``half/train_label``: its target-val. The slice is cut here, from the *raw* training list (the
last :func:`~kdbench.data.real.holdout.val_count` of 18,000 sorted images: 500), by the rule every dataset's loader
applies to its own training list; the loaders read the converted slice in full (the catalog's ``held_out``) and never
cut it again. A download without ``training/images`` is converted as before, with a note: no target-val.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kdbench.data.real.holdout import hold_out
from kdbench.data.real.labels import class_table, encoding
from kdbench.data.real.prepare_io import MissingInputs, Plan, Source, Unit, Writer, file_source
from kdbench.errors import UserError

VERSION = 1
IGNORE = 255

#: the 19 Cityscapes train classes as the rule compares them (lower case, no spaces)
CITYSCAPES_NAMES = tuple(name.replace(" ", "") for name in class_table("cityscapes19").classes)

#: Mapillary v1.2 class id -> Cityscapes train id (datasets.md §6, the 66-entry LUT; the catalog's ``mapillary-v12``
#: encoding, which the rule below must reproduce from a dataset's own config.json)
MAPPING = encoding("mapillary-v12")
MAPILLARY_TO_CITYSCAPES: tuple[int, ...] = tuple(MAPPING.lut)
EXPECTED = {"val": 2000, "train": 500}  # train: the held-out slice of the 18,000 training images
#: the folder of the raw training images (both packagings)
TRAINING_IMAGES = "training/images"

# substring rules tried in order after an exact class-name match (GKD/Rein ``mapillary2cityscape.py``)
_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("trafficsign", "front", "back"), "trafficsign"),
    (("onrail",), "train"),
    (("cyclist", "rider"), "rider"),
    (("pole", "streetlight"), "pole"),
    (("curb", "pedestrianarea"), "sidewalk"),
    (("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking"), "road"),
)


def derive_lut(readable_names: list[str]) -> list[int]:
    """The Cityscapes train id of each Mapillary class, by GKD's rule on its ``readable`` name."""
    lut = []
    for readable in readable_names:
        name = readable.lower().replace(" ", "").replace("-", "")
        if name in CITYSCAPES_NAMES:
            lut.append(CITYSCAPES_NAMES.index(name))
            continue
        target = next((cls for needles, cls in _RULES if any(n in name for n in needles)), None)
        lut.append(CITYSCAPES_NAMES.index(target) if target else IGNORE)
    return lut


def check_config(config: Path) -> None:
    """Refuses a ``config.json`` whose 66 label names do not give :data:`MAPILLARY_TO_CITYSCAPES`."""
    try:
        labels = json.loads(config.read_text())["labels"]
        names = [label["readable"] for label in labels]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{config}: not a Mapillary config (expected labels[].readable): {exc}") from exc
    if len(names) != len(MAPILLARY_TO_CITYSCAPES):
        raise UserError(f"{config}: {len(names)} labels, expected the {len(MAPILLARY_TO_CITYSCAPES)} of Mapillary "
                        "Vistas v1.2 (the v2.0 config has 124)")
    derived = derive_lut(names)
    wrong = [f"{i} {names[i]!r} -> {d} (expected {e})"
             for i, (d, e) in enumerate(zip(derived, MAPILLARY_TO_CITYSCAPES, strict=True)) if d != e]
    if wrong:
        raise UserError(f"{config}: its label names do not give GKD's v1.2 -> Cityscapes mapping: {'; '.join(wrong)}")


def find_layout(raw_dir: Path, name: str) -> tuple[Path, Path, Path]:
    """(validation images folder, v1.2 labels folder, config file) of either packaging."""
    hint = ("expected validation/images with validation/labels + config.json (v1.2) or validation/v1.2/labels + "
            "config_v1.2.json (v2.0 package)")
    if not raw_dir.is_dir():
        raise MissingInputs(f"{name}: raw folder {raw_dir} not found ({hint}; set --data-root or data.paths.{name})")
    val = raw_dir / "validation"
    labels = label_folder(val)
    if labels is None:
        raise MissingInputs(f"{name}: no validation label folder in {raw_dir}: {hint}")
    config = raw_dir / ("config_v1.2.json" if labels.parent.name == "v1.2" else "config.json")
    if not (val / "images").is_dir():
        raise MissingInputs(f"{name}: folder {val / 'images'} not found: {hint}")
    return val / "images", labels, config


def label_folder(split_dir: Path) -> Path | None:
    """The v1.2 labels of one split folder: ``v1.2/labels`` (v2.0 package), else ``labels`` (v1.2); ``None``: none."""
    return next((folder for folder in (split_dir / "v1.2" / "labels", split_dir / "labels") if folder.is_dir()), None)


def jpgs(images: Path) -> list[Path]:
    """The ``*.jpg`` files of a folder in sorted order (hidden files, e.g. macOS ``._`` copies, skipped)."""
    return sorted(p for p in images.glob("*.jpg") if not p.name.startswith("."))


def with_labels(images: list[Path], labels: Path) -> list[tuple[Path, Path | None]]:
    """Each image with its label ``<labels>/<id>.png`` (``None`` if absent)."""
    return [(image, label if (label := labels / f"{image.stem}.png").is_file() else None) for image in images]


def validation_pairs(images: Path, labels: Path) -> list[tuple[Path, Path | None]]:
    """Each validation image (:func:`jpgs`) with its label (``None`` if absent)."""
    return with_labels(jpgs(images), labels)


@dataclass(frozen=True)
class HeldOut:
    """The held-out slice of the raw training split: ``total`` raw training images, ``pairs`` the last
    ``val_count(total)`` of them in sorted order, each with its label (``None``: not found)."""

    images: Path
    labels: Path
    total: int
    pairs: list[tuple[Path, Path | None]]


def training_slice(raw_dir: Path, name: str) -> HeldOut | None:
    """The held-out slice of ``raw_dir``'s training split, cut from the raw list (never from a converted subset);
    ``None`` when the download has no ``training/images`` folder. Images there without a label folder are a
    UserError naming it. Only the slice's labels are looked up."""
    images = raw_dir / TRAINING_IMAGES
    if not images.is_dir():
        return None
    labels = label_folder(images.parent)
    if labels is None:
        raise UserError(f"{name}: no label folder for {images}: expected training/labels (v1.2) or "
                        "training/v1.2/labels (v2.0 package)")
    listed = jpgs(images)
    _, held = hold_out(listed)
    return HeldOut(images, labels, len(listed), with_labels(held, labels))


def no_training_note(raw_dir: Path) -> str:
    return (f"no {TRAINING_IMAGES} in {raw_dir}: Mapillary gets no target-val (gtav's oracle then reads Cityscapes "
            "and BDD100K only)")


def config_note(config: Path) -> str:
    return f"no {config.name} next to the data: the mapping was not checked against its label names"


def plan_mapillary(name: str, raw_dir: Path, out_dir: Path) -> Plan:
    images, labels, config = find_layout(raw_dir, name)
    notes = []
    if config.is_file():
        check_config(config)
    else:
        notes.append(config_note(config))
    units = []
    for image, label in validation_pairs(images, labels):
        if label is None:
            raise MissingInputs(f"{name}: label {labels / f'{image.stem}.png'} of image {image} not found")
        units.append(Unit(image.stem, "val", (file_source(image), file_source(label))))
    if not units:
        raise MissingInputs(f"{name}: no .jpg images in {images}")
    held = training_slice(raw_dir, name)
    if held is None:
        notes.append(no_training_note(raw_dir))
    else:
        units += _slice_units(name, held)
    return Plan(name, raw_dir, out_dir, units, convert_image, VERSION, unit_kind="images", expected=EXPECTED,
                notes=notes)


def _slice_units(name: str, held: HeldOut) -> list[Unit]:
    """One unit per held-out training image, keyed ``train.<id>`` (a validation image's key is its bare id, as
    before, so an earlier conversion's records still hold); a missing label is a UserError naming it."""
    units = []
    for image, label in held.pairs:
        if label is None:
            raise UserError(f"{name}: label {held.labels / f'{image.stem}.png'} of held-out training image {image} "
                            "not found")
        units.append(Unit(f"train.{image.stem}", "train", (file_source(image), file_source(label))))
    return units


def read_ids(source: Source) -> np.ndarray:
    """A raw v1.2 label's class ids (H×W uint8); a label that is not a palettised/grey PNG is a UserError."""
    label = source.read_image()
    if label.mode not in ("P", "L"):
        raise UserError(f"{source.describe()}: mode {label.mode}, expected a palettised PNG of class ids")
    return np.asarray(label)


def convert_image(unit: Unit, writer: Writer) -> int:
    """Writes ``half/<split>_img/<id>.jpg`` and ``half/<split>_label/<id>.png`` (19-class train ids, 255 ignore)."""
    image_source, label_source = unit.sources
    key = Path(image_source.name).stem
    image, ids = image_source.read_image(), read_ids(label_source)
    if (ids.shape[1], ids.shape[0]) != image.size:
        raise UserError(f"{label_source.describe()}: size {(ids.shape[1], ids.shape[0])} differs from its image "
                        f"{image.size}")
    train_ids = Image.fromarray(MAPPING.to_train_ids(ids))
    half = (image.width // 2, image.height // 2)
    writer.save(f"half/{unit.split}_img/{key}.jpg", image.resize(half, Image.Resampling.BICUBIC), "JPEG")
    writer.save(f"half/{unit.split}_label/{key}.png", train_ids.resize(half, Image.Resampling.NEAREST), "PNG")
    return 1
