"""Mapillary Vistas v1.2 validation -> GKD's half-resolution 19-class evaluation copies (datasets.md §6).

GKD/Rein evaluate Mapillary as a *target* only, on ``half/val_img/<id>.jpg`` + ``half/val_label/<id>.png``: their
``mapillary2cityscape.py`` maps the 66 v1.2 class ids to the 19 Cityscapes train ids (rule derived from openseg,
applied to the ``readable`` names of ``config.json``), and ``mapillary_resize.py`` shrinks each validation image to
(w//2, h//2) with bicubic (saved as JPEG at Pillow's default quality) and its converted label with nearest. Only the
validation split is converted (the training split is never used by the dg5 benchmarks). Both packagings are read:
standalone v1.2 (``validation/labels``, ``config.json``) and the v2.0 package (``validation/v1.2/labels``,
``config_v1.2.json``). Label PNGs are palettised and read by index, never by colour.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

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
EXPECTED = {"val": 2000}

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
    if (val / "v1.2" / "labels").is_dir():
        labels, config = val / "v1.2" / "labels", raw_dir / "config_v1.2.json"
    elif (val / "labels").is_dir():
        labels, config = val / "labels", raw_dir / "config.json"
    else:
        raise MissingInputs(f"{name}: no validation label folder in {raw_dir}: {hint}")
    if not (val / "images").is_dir():
        raise MissingInputs(f"{name}: folder {val / 'images'} not found: {hint}")
    return val / "images", labels, config


def validation_pairs(images: Path, labels: Path) -> list[tuple[Path, Path | None]]:
    """Each validation image (``*.jpg``, sorted) with its label ``<labels>/<id>.png`` (``None`` if absent)."""
    pairs = []
    for image in sorted(images.glob("*.jpg")):
        label = labels / f"{image.stem}.png"
        pairs.append((image, label if label.is_file() else None))
    return pairs


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
    return Plan(name, raw_dir, out_dir, units, convert_image, VERSION, unit_kind="images", expected=EXPECTED,
                notes=notes)


def read_ids(source: Source) -> np.ndarray:
    """A raw v1.2 label's class ids (H×W uint8); a label that is not a palettised/grey PNG is a UserError."""
    label = source.read_image()
    if label.mode not in ("P", "L"):
        raise UserError(f"{source.describe()}: mode {label.mode}, expected a palettised PNG of class ids")
    return np.asarray(label)


def convert_image(unit: Unit, writer: Writer) -> int:
    """Writes ``half/val_img/<id>.jpg`` and ``half/val_label/<id>.png`` (19-class train ids, 255 ignore)."""
    image_source, label_source = unit.sources
    image, ids = image_source.read_image(), read_ids(label_source)
    if (ids.shape[1], ids.shape[0]) != image.size:
        raise UserError(f"{label_source.describe()}: size {(ids.shape[1], ids.shape[0])} differs from its image "
                        f"{image.size}")
    train_ids = Image.fromarray(MAPPING.to_train_ids(ids))
    half = (image.width // 2, image.height // 2)
    writer.save(f"half/val_img/{unit.key}.jpg", image.resize(half, Image.Resampling.BICUBIC), "JPEG")
    writer.save(f"half/val_label/{unit.key}.png", train_ids.resize(half, Image.Resampling.NEAREST), "PNG")
    return 1
