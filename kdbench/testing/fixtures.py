"""Deterministic writers of tiny datasets in the real on-disk formats (datasets.md §15), for tests.

Each ``make_<dataset>(root)`` writes one dataset into ``root`` (the dataset's own folder) and returns a
:class:`Fixture` listing every image and label written with the *raw* values each label file encodes (label ids,
SYNTHIA class ids, ISPRS codes, ...), so a test computes the expected train ids from its own copy of the published
tables. Labels are vertical stripes, one per raw value of the dataset's id list plus, with ``off_table=True``, two
values the table does not list; the second image of a split has the stripes reversed and other pixels, so pairing
or sorting mistakes show. Writers that can add the converted ``*_labelTrainIds.png`` files take the LUT to apply as
an argument (``trainid_lut``) and write them only when given one. :func:`make_all` writes every catalog dataset
under one data root with the default folder names, and the converted Potsdam/Vaihingen/Mapillary layouts (what
``kdbench data prepare`` produces) into a cache folder. Every file is a few KB.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: Cityscapes labelIds 0..33 (GTA5, ACDC and Cityscapes ``labelIds`` files)
LABEL_IDS = tuple(range(34))
TRAIN_IDS = (*range(19), 255)
ACDC_CONDITIONS = {"fog": "GOPR0475", "night": "GOPR0351", "rain": "GOPR0402", "snow": "GOPR0122"}
MAPILLARY_IDS = ("-1A2b3C4d5E6f7G8h9I0jK", "__CRyFzoDOXn6unQ6a3DnQ")
#: the converted held-out slice of the training split: two images, every one of them validation (never cut again)
MAPILLARY_HELD_OUT_IDS = ("ZzTrainHeldOut00000000", "zzTrainHeldOut00000001")


@dataclass(frozen=True)
class FixtureSample:
    """One written image (``pixels``: the RGB array written; a JPEG decodes close to it) and its label file with
    the raw values it encodes (``None`` for an image-only split)."""

    split: str
    image: Path
    pixels: np.ndarray
    label: Path | None = None
    raw: np.ndarray | None = None


@dataclass
class Fixture:
    dataset: str
    root: Path
    samples: list[FixtureSample] = field(default_factory=list)
    decoys: list[Path] = field(default_factory=list)

    def split(self, name: str) -> list[FixtureSample]:
        return [s for s in self.samples if s.split == name]


# --- building blocks -------------------------------------------------------------------------------------------

def seed_of(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def stripes(values: Sequence[int], height: int, width: int, reverse: bool = False) -> np.ndarray:
    """H×W int32 with column ``c`` holding ``values[c * len(values) // width]`` (every value gets ≥ 1 column)."""
    if len(values) > width:
        raise ValueError(f"{len(values)} stripes do not fit in {width} columns")
    order = list(values)[::-1] if reverse else list(values)
    columns = np.array([order[c * len(order) // width] for c in range(width)], dtype=np.int32)
    return np.repeat(columns[None, :], height, axis=0)


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    """Seeded RGB made of 8×8 blocks of random colour (survives JPEG almost unchanged)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(-(-height // 8), -(-width // 8), 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width])


def with_off_table(values: Sequence[int], extra: Sequence[int], off_table: bool) -> tuple[int, ...]:
    return (*values, *extra) if off_table else tuple(values)


def map_lut(raw: np.ndarray, lut: Sequence[int]) -> np.ndarray:
    """``lut[raw]`` with 255 for raw values past the LUT (for the optional converted label files)."""
    table = np.asarray(lut, dtype=np.int64)
    out = np.full(raw.shape, 255, dtype=np.uint8)
    inside = (raw >= 0) & (raw < len(table))
    out[inside] = table[raw[inside]]
    return out


def _mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_rgb(path: Path, pixels: np.ndarray, fmt: str = "PNG") -> Path:
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(_mkdir(path), format=fmt, **(
        {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}))
    return path


def write_grey(path: Path, values: np.ndarray) -> Path:
    """Mode "L" PNG of uint8 values."""
    Image.fromarray(np.asarray(values, dtype=np.uint8)).save(_mkdir(path), format="PNG")
    return path


def write_palette(path: Path, indices: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> Path:
    """Mode "P" PNG whose pixel *indices* are ``indices`` (palette entries past ``palette`` are grey)."""
    image = Image.fromarray(np.asarray(indices, dtype=np.uint8))
    flat = [c for i in range(256) for c in (palette[i] if i < len(palette) else (i, i, i))]
    image.putpalette(flat)  # an "L" image with a palette becomes mode "P", keeping its values as indices
    image.save(_mkdir(path), format="PNG")
    return path


def write_grey16(path: Path, values: np.ndarray) -> Path:
    """Mode "I;16" PNG (16-bit grey)."""
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(_mkdir(path), format="PNG")
    return path


def write_png16_rgb(path: Path, rgb: np.ndarray) -> Path:
    """16-bit-per-channel RGB PNG (colour type 2, bit depth 16), written with the standard library: Pillow cannot
    write it. Rows are filter type 0, samples big-endian (PNG spec)."""
    rgb = np.asarray(rgb, dtype=np.uint16)
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    _mkdir(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
                             + chunk(b"IEND", b""))
    return path


def _sample(fixture: Fixture, split: str, image: Path, pixels: np.ndarray, label: Path | None = None,
            raw: np.ndarray | None = None) -> None:
    fixture.samples.append(FixtureSample(split, image, pixels, label, raw))


# --- the datasets ----------------------------------------------------------------------------------------------

def make_cityscapes(root: Path, trainid_lut: Sequence[int] | None = None, off_table: bool = True) -> Fixture:
    """``leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png`` + ``gtFine/.../<stem>_gtFine_labelIds.png`` (L);
    decoys ``_gtFine_color.png``, ``_gtFine_instanceIds.png`` (I;16), ``_gtFine_polygons.json``; 64×32."""
    fx = Fixture("cityscapes", root)
    ids = with_off_table(LABEL_IDS, (34, 250), off_table)
    stems = {"train": ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019"],
             "val": ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"]}
    for split, names in stems.items():
        for i, stem in enumerate(names):
            pixels = random_image(32, 64, seed_of("cityscapes", split, i))
            image = write_rgb(root / "leftImg8bit" / split / f"{stem}_leftImg8bit.png", pixels)
            raw = stripes(ids, 32, 64, reverse=i == 1)
            gt = root / "gtFine" / split / stem
            label = write_grey(Path(f"{gt}_gtFine_labelIds.png"), raw)
            if trainid_lut is not None:
                write_grey(Path(f"{gt}_gtFine_labelTrainIds.png"), map_lut(raw, trainid_lut))
            fx.decoys += [write_rgb(Path(f"{gt}_gtFine_color.png"), random_image(32, 64, seed_of("colour", stem))),
                          write_grey16(Path(f"{gt}_gtFine_instanceIds.png"), raw * 1000 + 1)]
            polygons = {"imgHeight": 32, "imgWidth": 64,
                        "objects": [{"label": "road", "polygon": [[0, 16], [63, 16], [63, 31], [0, 31]]}]}
            Path(f"{gt}_gtFine_polygons.json").write_text(json.dumps(polygons))
            fx.decoys.append(Path(f"{gt}_gtFine_polygons.json"))
            _sample(fx, split, image, pixels, label, raw)
    return fx


def make_gta5(root: Path, trainid_lut: Sequence[int] | None = None, off_table: bool = True,
              palette: Sequence[tuple[int, int, int]] = ()) -> Fixture:
    """``images/0000{1,2}.png`` + ``labels/0000{1,2}.png`` in mode "P" (index = labelId; ``palette`` colours, grey
    where not given); ``labels/<id>_labelTrainIds.png`` too with ``trainid_lut``; 64×32."""
    fx = Fixture("gta5", root)
    ids = with_off_table(LABEL_IDS, (34, 250), off_table)
    colours = list(palette) or [((37 * i) % 256, (91 * i) % 256, (173 * i) % 256) for i in range(256)]
    for i, name in enumerate(("00001", "00002")):
        pixels = random_image(32, 64, seed_of("gta5", i))
        image = write_rgb(root / "images" / f"{name}.png", pixels)
        raw = stripes(ids, 32, 64, reverse=i == 1)
        label = write_palette(root / "labels" / f"{name}.png", raw, colours)
        if trainid_lut is not None:
            write_grey(root / "labels" / f"{name}_labelTrainIds.png", map_lut(raw, trainid_lut))
        _sample(fx, "train", image, pixels, label, raw)
    return fx


def make_synthia(root: Path, trainid_lut: Sequence[int] | None = None, off_table: bool = True) -> Fixture:
    """``RGB/000000{0,1}.png`` + ``GT/LABELS/<same>.png`` as 16-bit RGB: R = class id 0..22 (off-table 23 and 259,
    which an 8-bit read would turn into road), G = instance 300, B = 0; ``root`` is the RAND_CITYSCAPES folder."""
    fx = Fixture("synthia", root)
    ids = with_off_table(range(23), (23, 259), off_table)
    for i, name in enumerate(("0000000", "0000001")):
        pixels = random_image(32, 64, seed_of("synthia", i))
        image = write_rgb(root / "RGB" / f"{name}.png", pixels)
        raw = stripes(ids, 32, 64, reverse=i == 1)
        rgb16 = np.stack([raw, np.full_like(raw, 300), np.zeros_like(raw)], axis=-1)
        label = write_png16_rgb(root / "GT" / "LABELS" / f"{name}.png", rgb16)
        if trainid_lut is not None:
            write_grey(root / "GT" / "LABELS" / f"{name}_labelTrainIds.png", map_lut(raw, trainid_lut))
        _sample(fx, "train", image, pixels, label, raw)
    fx.decoys.append(write_rgb(root / "GT" / "COLOR" / "0000000.png", random_image(32, 64, 7)))
    return fx


def make_urbansyn(root: Path, off_table: bool = True) -> Fixture:
    """``rgb/rgb_000{1,2}.png`` + ``ss/ss_000{1,2}.png`` (L, 0..19; off-table 20 and 250); 64×32."""
    fx = Fixture("urbansyn", root)
    ids = with_off_table(range(20), (20, 250), off_table)
    for i, number in enumerate(("0001", "0002")):
        pixels = random_image(32, 64, seed_of("urbansyn", i))
        image = write_rgb(root / "rgb" / f"rgb_{number}.png", pixels)
        raw = stripes(ids, 32, 64, reverse=i == 1)
        _sample(fx, "train", image, pixels, write_grey(root / "ss" / f"ss_{number}.png", raw), raw)
    return fx


def make_bdd100k(root: Path, off_table: bool = True) -> Fixture:
    """``images/10k/{train,val}/<hash>.jpg`` + ``labels/sem_seg/masks/<split>/<hash>.png`` (L train ids; off-table
    19 and 200); decoy colour maps in ``labels/sem_seg/colormaps/<split>``; 48×27."""
    fx = Fixture("bdd100k", root)
    ids = with_off_table(TRAIN_IDS, (19, 200), off_table)
    names = {"train": ("0a0a0b1a-7c39d841", "0a0c3694-4cc8b0e3"), "val": ("7d2f7975-e0c1c5a7", "7d4a9094-0455564b")}
    for split, hashes in names.items():
        for i, name in enumerate(hashes):
            pixels = random_image(27, 48, seed_of("bdd100k", split, i))
            image = write_rgb(root / "images" / "10k" / split / f"{name}.jpg", pixels, "JPEG")
            raw = stripes(ids, 27, 48, reverse=i == 1)
            label = write_grey(root / "labels" / "sem_seg" / "masks" / split / f"{name}.png", raw)
            fx.decoys.append(write_rgb(root / "labels" / "sem_seg" / "colormaps" / split / f"{name}.png",
                                       random_image(27, 48, seed_of("bdd-colour", name))))
            _sample(fx, split, image, pixels, label, raw)
    return fx


def make_mapillary_prepared(root: Path, off_table: bool = True) -> Fixture:
    """The converted half-resolution validation copies GKD evaluates (``half/val_img/<id>.jpg`` +
    ``half/val_label/<id>.png``, L train ids; off-table 19 and 200) and, the same way, the held-out slice of the
    training split (``half/train_img``, ``half/train_label``: split ``train``, its target-val); 32×24 (half of
    64×48); ``root`` is ``<cache>/mapillary``."""
    fx = Fixture("mapillary", root)
    ids = with_off_table(TRAIN_IDS, (19, 200), off_table)
    for split, names in (("val", MAPILLARY_IDS), ("train", MAPILLARY_HELD_OUT_IDS)):
        for i, name in enumerate(names):
            pixels = random_image(24, 32, seed_of("mapillary", i) if split == "val" else seed_of("mapillary", split, i))
            image = write_rgb(root / "half" / f"{split}_img" / f"{name}.jpg", pixels, "JPEG")
            raw = stripes(ids, 24, 32, reverse=i == 1)
            label = write_grey(root / "half" / f"{split}_label" / f"{name}.png", raw)
            _sample(fx, split, image, pixels, label, raw)
    return fx


def make_acdc(root: Path, trainid_lut: Sequence[int] | None = None, off_table: bool = True) -> dict[str, Fixture]:
    """For each condition: ``rgb_anon/<c>/{train,val,test}/<seq>/<seq>_frame_00004{1,2}_rgb_anon.png`` and
    ``gt/<c>/{train,val}/<seq>/<stem>_gt_labelIds.png`` (L labelIds; ``_gt_labelTrainIds.png`` with
    ``trainid_lut``); no test labels; decoys ``train_ref`` images and ``_gt_labelColor.png``; 48×27. Returns one
    fixture per dataset view (``acdc-<cond>``)."""
    ids = with_off_table(LABEL_IDS, (34, 250), off_table)
    out = {}
    for cond, seq in ACDC_CONDITIONS.items():
        fx = Fixture(f"acdc-{cond}", root)
        for split in ("train", "val", "test"):
            for i, frame in enumerate(("000041", "000042")):
                stem = f"{seq}/{seq}_frame_{frame}"
                pixels = random_image(27, 48, seed_of("acdc", cond, split, i))
                image = write_rgb(root / "rgb_anon" / cond / split / f"{stem}_rgb_anon.png", pixels)
                if split == "test":
                    _sample(fx, split, image, pixels)
                    continue
                raw = stripes(ids, 27, 48, reverse=i == 1)
                gt = root / "gt" / cond / split / stem
                label = write_grey(Path(f"{gt}_gt_labelIds.png"), raw)
                if trainid_lut is not None:
                    write_grey(Path(f"{gt}_gt_labelTrainIds.png"), map_lut(raw, trainid_lut))
                fx.decoys.append(write_rgb(Path(f"{gt}_gt_labelColor.png"), random_image(27, 48, 5)))
                _sample(fx, split, image, pixels, label, raw)
        fx.decoys.append(write_rgb(root / "rgb_anon" / cond / "train_ref" / seq / f"{seq}_frame_000041_ref_anon.png",
                                   random_image(27, 48, seed_of("ref", cond))))
        out[fx.dataset] = fx
    return out


def _isprs(fx: Fixture, root: Path, names: dict[str, tuple[str, ...]], off_table: bool) -> Fixture:
    ids = with_off_table(range(7), (7, 200), off_table)
    for split, patches in names.items():
        for i, name in enumerate(patches):
            pixels = random_image(32, 32, seed_of(fx.dataset, split, i))
            image = write_rgb(root / "img_dir" / split / f"{name}.png", pixels)
            raw = stripes(ids, 32, 32, reverse=i == 1)
            _sample(fx, split, image, pixels, write_grey(root / "ann_dir" / split / f"{name}.png", raw), raw)
    return fx


def make_potsdam_prepared(root: Path, modality: str, off_table: bool = True) -> Fixture:
    """mmseg-converted Potsdam patches (``img_dir``/``ann_dir`` ``{train,val}/<r>_<c>_<x0>_<y0>_<x1>_<y1>.png``, ann
    codes 0..6; off-table 7 and 200); ``root`` is ``<cache>/potsdam/<RGB|IRRG>``; 32×32."""
    names = {"train": ("2_10_0_0_32_32", "2_10_32_0_64_32"), "val": ("2_13_0_0_32_32", "2_13_32_0_64_32")}
    return _isprs(Fixture(f"potsdam-{modality.lower()}", root), root, names, off_table)


def make_vaihingen_prepared(root: Path, off_table: bool = True) -> Fixture:
    """mmseg-converted Vaihingen patches (``area<k>_<x0>_<y0>_<x1>_<y1>.png``; area1 train, area2 val); ``root``
    is ``<cache>/vaihingen``; 32×32."""
    names = {"train": ("area1_0_0_32_32", "area1_32_0_64_32"), "val": ("area2_0_0_32_32", "area2_32_0_64_32")}
    return _isprs(Fixture("vaihingen-irrg", root), root, names, off_table)


def make_rescuenet(root: Path, off_table: bool = True, official: bool = False) -> Fixture:
    """GKD's flat layout ``test-org-img/<id>.jpg`` + ``test-label-img/<id>_lab.png`` (L, 0..5 with 0 = ignore;
    off-table 6 and 200); with ``official`` the official 11-class layout ``test/test-{org,label}-img`` (0..10)
    instead; 40×30."""
    fx = Fixture("rescuenet", root)
    ids = with_off_table(range(11) if official else range(6), (11, 200) if official else (6, 200), off_table)
    base = root / "test" if official else root
    for i, name in enumerate(("10778", "10794")):
        pixels = random_image(30, 40, seed_of("rescuenet", i))
        image = write_rgb(base / "test-org-img" / f"{name}.jpg", pixels, "JPEG")
        raw = stripes(ids, 30, 40, reverse=i == 1)
        _sample(fx, "test", image, pixels, write_grey(base / "test-label-img" / f"{name}_lab.png", raw), raw)
    return fx


def make_all(data_root: Path, cache_dir: Path | None = None, off_table: bool = True) -> dict[str, Fixture]:
    """Every catalog dataset: the downloadable ones under ``data_root`` with GKD's folder names, the prepared ones
    (Potsdam RGB/IRRG, Vaihingen, Mapillary) converted under ``cache_dir`` (``None``: GKD's converted layout under
    ``data_root``, which the loader accepts too). Keyed by dataset name."""
    data_root = Path(data_root)
    cache_dir = data_root if cache_dir is None else Path(cache_dir)
    out = {
        "gta5": make_gta5(data_root / "GTA5", off_table=off_table),
        "synthia": make_synthia(data_root / "SYNTHIA_RAND_CITYSCAPES" / "RAND_CITYSCAPES", off_table=off_table),
        "urbansyn": make_urbansyn(data_root / "UrbanSyn", off_table=off_table),
        "cityscapes": make_cityscapes(data_root / "cityscapes", off_table=off_table),
        "bdd100k": make_bdd100k(data_root / "bdd100k", off_table=off_table),
        "mapillary": make_mapillary_prepared(cache_dir / "mapillary", off_table=off_table),
        **make_acdc(data_root / "acdc", off_table=off_table),
        "potsdam-rgb": make_potsdam_prepared(cache_dir / "potsdam" / "RGB", "RGB", off_table=off_table),
        "potsdam-irrg": make_potsdam_prepared(cache_dir / "potsdam" / "IRRG", "IRRG", off_table=off_table),
        "vaihingen-irrg": make_vaihingen_prepared(cache_dir / "vaihingen", off_table=off_table),
        "rescuenet": make_rescuenet(data_root / "RescueNet", off_table=off_table),
    }
    return out
