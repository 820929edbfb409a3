"""Label tables as data (``tables/*.yaml``) and the vectorised mappings from raw label values to train ids.

A *class table* is a train-id space (class names and display palette, e.g. ``cityscapes19``); an *encoding* says how
the values stored in one kind of label file become train ids of a table: a LUT indexed by the raw value (raw values
the LUT does not list are *off-table* and read as 255), optionally followed by mmseg's ``reduce_zero_label``.
Colour-coded label images are first turned into raw indices through the encoding's colour table. Every table names
its source (datasets.md §0.1, §4, §6, §8, §9, §11); every table also gets a ``<table>-trainids`` encoding for files
already holding train ids (valid: 0..K-1 and 255).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources

import numpy as np
import yaml

IGNORE = 255
TABLES_PACKAGE = "kdbench.data.real"
TABLES_FOLDER = "tables"


@dataclass(frozen=True)
class ClassTable:
    """A train-id label space: ``classes[i]`` is train id ``i``, drawn in ``palette[i]`` (RGB)."""

    name: str
    title: str
    source: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Encoding:
    """Raw label values -> train ids of ``table``. ``lut[v]`` is the train id of raw value ``v`` (``None``: ``v`` is
    not in the table); values past the LUT are off-table too. ``raw_colours[v]`` is raw value ``v``'s colour in
    colour-coded label images (RGB), where the dataset has such images."""

    name: str
    table: str
    source: str
    lut: tuple[int | None, ...]
    raw_names: tuple[str, ...] = ()
    raw_colours: tuple[tuple[int, int, int], ...] | None = None
    reduce_zero_label: bool = False

    @cached_property
    def lut_array(self) -> np.ndarray:
        """The LUT as uint8 (off-table entries 255), ``reduce_zero_label`` not applied."""
        return np.array([IGNORE if v is None else v for v in self.lut], dtype=np.uint8)

    @cached_property
    def known_array(self) -> np.ndarray:
        return np.array([v is not None for v in self.lut], dtype=bool)

    def to_train_ids(self, raw: np.ndarray) -> np.ndarray:
        """H×W raw values (any integer dtype; negative = unknown colour) -> H×W uint8 train ids, 255 = ignore."""
        out = apply_lut(raw, self.lut_array)
        return reduce_zero_label(out) if self.reduce_zero_label else out

    def off_table(self, raw: np.ndarray) -> np.ndarray:
        """Boolean mask of the raw values the table does not list."""
        raw = np.asarray(raw)
        inside = (raw >= 0) & (raw < len(self.lut))
        known = np.zeros(raw.shape, dtype=bool)
        known[inside] = self.known_array[raw[inside]]
        return ~known

    def off_table_values(self, raw: np.ndarray) -> list[int]:
        """The distinct off-table raw values, ascending (−1 stands for colours outside ``raw_colours``)."""
        raw = np.asarray(raw)
        return [int(v) for v in np.unique(raw[self.off_table(raw)])]


def apply_lut(raw: np.ndarray, lut: np.ndarray, fill: int = IGNORE) -> np.ndarray:
    """``lut[raw]`` as uint8, with ``fill`` for raw values outside ``0..len(lut)-1`` (vectorised)."""
    raw = np.asarray(raw)
    lut = np.asarray(lut, dtype=np.uint8)
    if raw.dtype == np.uint8:
        full = np.full(256, fill, dtype=np.uint8)
        full[:min(len(lut), 256)] = lut[:256]
        return full[raw]
    out = np.full(raw.shape, fill, dtype=np.uint8)
    inside = (raw >= 0) & (raw < len(lut))
    out[inside] = lut[raw[inside]]
    return out


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg ``reduce_zero_label`` (datasets.md §0): 0 -> 255, v -> v-1 for 1..254, 255 stays 255."""
    label = np.asarray(label, dtype=np.uint8)
    out = label - np.uint8(1)
    out[(label == 0) | (label == IGNORE)] = IGNORE
    return out


def colours_to_index(rgb: np.ndarray, colours: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """H×W×3 RGB -> H×W int32 index into ``colours``; −1 where the pixel's colour is not in the table."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an H×W×3 colour image, got shape {rgb.shape}")
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)
    table = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], dtype=np.int32)
    order = np.argsort(table, kind="stable")
    sorted_table = table[order]
    pos = np.clip(np.searchsorted(sorted_table, codes), 0, len(table) - 1)
    return np.where(sorted_table[pos] == codes, order[pos], -1).astype(np.int32)


def class_table(name: str) -> ClassTable:
    tables = _load()[0]
    if name not in tables:
        raise KeyError(f"unknown class table {name!r}; known: {', '.join(sorted(tables))}")
    return tables[name]


def encoding(name: str) -> Encoding:
    encodings = _load()[1]
    if name not in encodings:
        raise KeyError(f"unknown label encoding {name!r}; known: {', '.join(sorted(encodings))}")
    return encodings[name]


def table_names() -> list[str]:
    return sorted(_load()[0])


def encoding_names() -> list[str]:
    return sorted(_load()[1])


@cache
def _load() -> tuple[dict[str, ClassTable], dict[str, Encoding]]:
    """Reads every ``tables/*.yaml`` of the package (packaged data, so ``importlib.resources``)."""
    folder = resources.files(TABLES_PACKAGE).joinpath(TABLES_FOLDER)
    docs = [(entry.name, yaml.safe_load(entry.read_text(encoding="utf-8")) or {})
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")]
    tables: dict[str, ClassTable] = {}
    for file, doc in docs:
        for entry in doc.get("tables", []):
            table = _parse_table(entry, file)
            if table.name in tables:
                raise ValueError(f"{file}: class table {table.name!r} defined twice")
            tables[table.name] = table
    encodings = {f"{t.name}-trainids": _trainids_encoding(t) for t in tables.values()}
    for file, doc in docs:
        for entry in doc.get("encodings", []):
            enc = _parse_encoding(entry, file, tables)
            if enc.name in encodings:
                raise ValueError(f"{file}: encoding {enc.name!r} defined twice")
            encodings[enc.name] = enc
    return tables, encodings


def _parse_table(entry: dict, file: str) -> ClassTable:
    classes = tuple(str(c) for c in entry["classes"])
    palette = tuple(_colour(c, file) for c in entry["palette"])
    if len(palette) != len(classes):
        raise ValueError(f"{file}: table {entry['name']!r} has {len(classes)} classes but {len(palette)} colours")
    return ClassTable(str(entry["name"]), str(entry["title"]), str(entry["source"]), classes, palette)


def _trainids_encoding(table: ClassTable) -> Encoding:
    lut: list[int | None] = [*range(table.num_classes), *([None] * (IGNORE - table.num_classes)), IGNORE]
    return Encoding(f"{table.name}-trainids", table.name, f"train ids 0..{table.num_classes - 1}, 255 = ignore",
                    tuple(lut), raw_names=(*table.classes, *([""] * (IGNORE - table.num_classes)), "ignore"))


def _parse_encoding(entry: dict, file: str, tables: dict[str, ClassTable]) -> Encoding:
    name = str(entry["name"])
    table = tables.get(entry["table"])
    if table is None:
        raise ValueError(f"{file}: encoding {name!r} maps to unknown table {entry['table']!r}")
    lut = tuple(int(v) for v in entry["lut"])
    rzl = bool(entry.get("reduce_zero_label", False))
    limit = table.num_classes + (1 if rzl else 0)
    bad = [v for v in lut if v != IGNORE and not 0 <= v < limit]
    if bad:
        raise ValueError(f"{file}: encoding {name!r} maps to {bad}, outside table {table.name!r}")
    names = tuple(str(n) for n in entry.get("raw_names", ()))
    colours = entry.get("raw_colours")
    colours = tuple(_colour(c, file) for c in colours) if colours is not None else None
    for what, seq in (("raw_names", names), ("raw_colours", colours)):
        if seq and len(seq) != len(lut):
            raise ValueError(f"{file}: encoding {name!r} has {len(lut)} LUT entries but {len(seq)} {what}")
    return Encoding(name, table.name, str(entry["source"]), lut, names, colours, rzl)


def _colour(value: object, file: str) -> tuple[int, int, int]:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in value)):
        raise ValueError(f"{file}: {value!r} is not an [R, G, B] colour")
    return int(value[0]), int(value[1]), int(value[2])
