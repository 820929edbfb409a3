"""``kdbench data prepare``: ISPRS Potsdam/Vaihingen patches and Mapillary half-resolution copies from tiny raw
originals, checked against the tables and formulas of datasets.md §6, §9, §10 and mmseg's converters, typed in here
independently of the code; resumption after a crash, never writing under the data root, missing inputs."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdbench.data.real import prepare_io
from kdbench.data.real.prepare import (
    ALREADY,
    FAILED,
    FOUND_CONVERTED,
    NOTHING,
    PREPARED_NOW,
    PrepareSummary,
    is_prepared,
    prepare_datasets,
)
from kdbench.data.real.prepare_isprs import POTSDAM_SPLITS, VAIHINGEN_SPLITS, clip_boxes
from kdbench.data.real.prepare_mapillary import MAPILLARY_TO_CITYSCAPES, derive_lut
from kdbench.errors import UserError
from kdbench.testing import raw_fixtures as rf

CLIP = 32

# datasets.md §9: black 0, white 1, blue 2, cyan 3, green 4, yellow 5, red 6; anything else 0
ISPRS_TABLE = {(0, 0, 0): 0, (255, 255, 255): 1, (0, 0, 255): 2, (0, 255, 255): 3, (0, 255, 0): 4, (255, 255, 0): 5,
               (255, 0, 0): 6}

# datasets.md §6, the 66-entry LUT as printed
MAPILLARY_LUT = [255, 255, 1, 4, 255, 255, 3, 0, 0, 1, 0, 1, 255, 0, 0, 1, 255, 2, 255, 11, 12, 12, 12, 0, 0, 255,
                 255, 10, 255, 9, 8, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 5, 5, 7, 5, 6,
                 7, 7, 255, 18, 255, 15, 13, 255, 17, 16, 255, 255, 14, 255, 255, 255, 255]
# datasets.md §6, the same mapping as the per-class table
MAPILLARY_BY_CLASS = {0: [7, 8, 10, 13, 14, 23, 24], 1: [2, 9, 11, 15], 2: [17], 3: [6], 4: [3], 5: [44, 45, 47],
                      6: [48], 7: [46, 49, 50], 8: [30], 9: [29], 10: [27], 11: [19], 12: [20, 21, 22], 13: [55],
                      14: [61], 15: [54], 16: [58], 17: [57], 18: [52]}
MAPILLARY_NAMES = [
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane", "Crosswalk - Plain",
    "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road", "Service Lane", "Sidewalk", "Bridge", "Building",
    "Tunnel", "Person", "Bicyclist", "Motorcyclist", "Other Rider", "Lane Marking - Crosswalk",
    "Lane Marking - General", "Mountain", "Sand", "Sky", "Snow", "Terrain", "Vegetation", "Water", "Banner", "Bench",
    "Bike Rack", "Billboard", "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box", "Mailbox", "Manhole",
    "Phone Booth", "Pothole", "Street Light", "Pole", "Traffic Sign Frame", "Utility Pole", "Traffic Light",
    "Traffic Sign (Back)", "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat", "Bus", "Car", "Caravan",
    "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck", "Wheeled Slow", "Car Mount", "Ego Vehicle",
    "Unlabeled"]


def mmseg_boxes(w: int, h: int, clip: int, stride: int) -> set[tuple[int, int, int, int]]:
    """mmseg ``tools/dataset_converters/potsdam.py`` ``clip_big_image``, written out."""
    def count(n: int) -> int:
        k = math.ceil((n - clip) / stride)
        return k if k * stride + clip >= n else k + 1
    boxes = set()
    for y in range(count(h) + 1):
        for x in range(count(w) + 1):
            x0, y0 = x * clip, y * clip
            x0 += w - x0 - clip if x0 + clip > w else 0
            y0 += h - y0 - clip if y0 + clip > h else 0
            boxes.add((x0, y0, min(x * clip + clip, w), min(y * clip + clip, h)))
    return boxes


def expected_index(rgb: np.ndarray) -> np.ndarray:
    return np.array([[ISPRS_TABLE.get(tuple(int(v) for v in px), 0) for px in row] for row in rgb], np.uint8)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(prepare_io.TMP_SUFFIX)]


REAL_SAVE = prepare_io.save_atomic


class CountingSaver:
    """Wraps the atomic writer: counts writes and raises after ``fail_after`` of them (a simulated crash)."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[str] = []
        self.fail_after = fail_after

    def __call__(self, image, path, fmt, **params):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        REAL_SAVE(image, path, fmt, **params)
        self.calls.append(Path(path).name)


def quiet(_: str) -> None:
    pass


def failure(summary: PrepareSummary, name: str, pattern: str) -> str:
    """The one-line reason ``name`` failed, checked to match ``pattern``."""
    result = summary[name]
    assert result.status == FAILED, result
    assert re.search(pattern, result.note), result.note
    assert "\n" not in result.line()
    return result.note


# --- patch geometry -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("w", "h", "clip", "stride"), [
    (6000, 6000, 512, 256), (1887, 2566, 512, 256), (2428, 1934, 512, 256), (513, 700, 512, 256),
    (512, 512, 512, 256), (70, 50, 32, 16), (64, 64, 32, 16)])
def test_boxes_match_mmseg(w, h, clip, stride):
    assert set(clip_boxes(w, h, clip)) == mmseg_boxes(w, h, clip, stride)
    assert len(clip_boxes(w, h, clip)) == len(mmseg_boxes(w, h, clip, stride))


def test_full_potsdam_counts():
    per_tile = len(clip_boxes(6000, 6000, 512))
    assert per_tile == 144
    assert sorted({b[0] for b in clip_boxes(6000, 6000, 512)})[-2:] == [5120, 5488]
    assert (len(POTSDAM_SPLITS["train"]) * per_tile, len(POTSDAM_SPLITS["val"]) * per_tile) == (3456, 2016)
    assert len(VAIHINGEN_SPLITS["train"]) == 16 and len(VAIHINGEN_SPLITS["val"]) == 17
    assert "area9" not in VAIHINGEN_SPLITS["train"] + VAIHINGEN_SPLITS["val"]


# --- Potsdam / Vaihingen --------------------------------------------------------------------------------------------

POTSDAM_NAMES = {"train": ["2_10_0_0_32_32.png", "2_10_0_32_32_64.png", "2_10_32_0_64_32.png", "2_10_32_32_64_64.png"],
                 "val": ["2_13_0_0_32_32.png", "2_13_0_32_32_64.png", "2_13_32_0_64_32.png", "2_13_32_32_64_64.png"]}
VAIHINGEN_NAMES = {
    "train": sorted(["area1_0_0_32_32.png", "area1_32_0_64_32.png", "area1_38_0_70_32.png", "area1_0_18_32_50.png",
                     "area1_32_18_64_50.png", "area1_38_18_70_50.png"]),
    "val": ["area2_0_0_32_32.png", "area2_0_32_32_64.png", "area2_32_0_64_32.png", "area2_32_32_64_64.png"]}


def check_patches(out: Path, names: dict[str, list[str]], raw: dict[str, dict[str, np.ndarray]], key: str) -> None:
    for split, expected in names.items():
        assert pngs(out / "img_dir" / split) == expected
        assert pngs(out / "ann_dir" / split) == expected
        for name in expected:
            tile, *box = name[:-4].rsplit("_", 4)
            x0, y0, x1, y1 = map(int, box)
            source = raw[tile]
            with Image.open(out / "ann_dir" / split / name) as ann:
                assert ann.mode == "L"
            np.testing.assert_array_equal(read(out / "img_dir" / split / name), source[key][y0:y1, x0:x1])
            np.testing.assert_array_equal(read(out / "ann_dir" / split / name),
                                          expected_index(source["label"][y0:y1, x0:x1]))


@pytest.mark.parametrize("zipped", [False, True])
def test_potsdam(tmp_path, zipped):
    raw = rf.write_potsdam(tmp_path / "data" / "potsdam", zipped=zipped)
    assert {(255, 0, 255), (254, 255, 255)} <= {tuple(p) for p in raw["2_10"]["label"].reshape(-1, 3).tolist()}
    lines: list[str] = []
    summary = prepare_datasets(["potsdam-rgb", "potsdam-irrg"], tmp_path / "data", tmp_path / "cache", {},
                               echo=lines.append, clip=CLIP)
    for name, modality in (("potsdam-rgb", "RGB"), ("potsdam-irrg", "IRRG")):
        check_patches(tmp_path / "cache" / "potsdam" / modality, POTSDAM_NAMES, raw, modality)
        assert summary[name].status == PREPARED_NOW
        assert summary[name].counts == {"train": 4, "val": 4}
        assert is_prepared(name, tmp_path / "cache")
    assert any(line.startswith("potsdam-rgb: converting 2 tiles") for line in lines)
    assert any(line.startswith("potsdam-irrg: prepared in ") and line.endswith("(train 4, val 4)")
               for line in summary.lines())


@pytest.mark.parametrize("zipped", [False, True])
def test_vaihingen(tmp_path, zipped):
    raw = rf.write_vaihingen(tmp_path / "data" / "vaihingen", zipped=zipped)
    summary = prepare_datasets(["vaihingen-irrg"], tmp_path / "data", tmp_path / "cache", {}, echo=quiet, clip=CLIP)
    check_patches(tmp_path / "cache" / "vaihingen", VAIHINGEN_NAMES, raw, "image")
    assert summary["vaihingen-irrg"].counts == {"train": 6, "val": 4}
    assert not list((tmp_path / "cache").rglob("area9*"))


def test_raw_folder_override_and_workers(tmp_path):
    raw = rf.write_potsdam(tmp_path / "elsewhere" / "isprs", tiles=("2_10", "2_13", "3_13"))
    summary = prepare_datasets(["potsdam-rgb"], tmp_path / "elsewhere", tmp_path / "cache",
                               {"potsdam-rgb": "isprs"}, echo=quiet, workers=2, clip=CLIP)
    names = dict(POTSDAM_NAMES, val=sorted(POTSDAM_NAMES["val"] + [n.replace("2_13", "3_13")
                                                                 for n in POTSDAM_NAMES["val"]]))
    check_patches(tmp_path / "cache" / "potsdam" / "RGB", names, raw, "RGB")
    assert summary.counts == {"potsdam-rgb": {"train": 4, "val": 8}}


# --- Mapillary ------------------------------------------------------------------------------------------------------

def test_mapillary_lut_against_datasets_md():
    assert list(MAPILLARY_TO_CITYSCAPES) == MAPILLARY_LUT
    by_class = [255] * 66
    for train_id, ids in MAPILLARY_BY_CLASS.items():
        for i in ids:
            by_class[i] = train_id
    assert by_class == MAPILLARY_LUT
    assert derive_lut(MAPILLARY_NAMES) == MAPILLARY_LUT
    assert list(rf.MAPILLARY_READABLE) == MAPILLARY_NAMES


@pytest.mark.parametrize("layout", ["v1.2", "v2.0"])
def test_mapillary_half_resolution(tmp_path, layout):
    raw = rf.write_mapillary(tmp_path / "data" / "mapillary", layout=layout, training=None)
    training = rf.write_mapillary_training(tmp_path / "data" / "mapillary", layout=layout)
    summary = prepare_datasets(["mapillary"], tmp_path / "data", tmp_path / "cache", {}, echo=quiet)
    half = tmp_path / "cache" / "mapillary" / "half"
    held_out = sorted(rf.MAPILLARY_TRAINING_IDS)[-2:]  # the last ceil(12/10) of the sorted training list
    for split, keys in (("val", rf.MAPILLARY_IDS), ("train", held_out)):
        assert sorted(p.name for p in (half / f"{split}_img").iterdir()) == sorted(f"{k}.jpg" for k in keys)
        assert sorted(p.name for p in (half / f"{split}_label").iterdir()) == sorted(f"{k}.png" for k in keys)
    lut = np.array(MAPILLARY_LUT + [255] * (256 - 66), np.uint8)
    converted = [("val", key, arrays) for key, arrays in raw.items()]
    converted += [("train", key, training[key]) for key in held_out]
    for split, key, arrays in converted:
        assert set(np.unique(arrays["ids"])) == set(range(66)) | {200}
        with Image.open(half / f"{split}_img" / f"{key}.jpg") as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 24))
            pixels = np.asarray(image).astype(float)
        with Image.open(half / f"{split}_label" / f"{key}.png") as label:
            assert (label.mode, label.size) == ("L", (32, 24))
            np.testing.assert_array_equal(np.asarray(label), lut[arrays["ids"][::2, ::2]])
        block_mean = arrays["image"].astype(float).reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
        assert np.abs(pixels - block_mean).mean() < 4
    assert summary["mapillary"].counts == {"train": 2, "val": 2}


def test_mapillary_config_checked(tmp_path):
    renamed = tuple("Kerb" if n == "Curb" else n for n in rf.MAPILLARY_READABLE)
    rf.write_mapillary(tmp_path / "data" / "mapillary", readable=renamed)
    failure(prepare_datasets(["mapillary"], tmp_path / "data", tmp_path / "cache", {}, echo=quiet), "mapillary",
            r"config\.json.*2 'Kerb' -> 255 \(expected 1\)")
    assert not (tmp_path / "cache" / "mapillary").exists()
    rf.write_mapillary(tmp_path / "data2" / "mapillary", readable=tuple(f"class {k}" for k in range(124)))
    failure(prepare_datasets(["mapillary"], tmp_path / "data2", tmp_path / "cache", {}, echo=quiet), "mapillary",
            "124 labels")
    rf.write_mapillary(tmp_path / "data3" / "mapillary", readable=None)
    lines: list[str] = []
    prepare_datasets(["mapillary"], tmp_path / "data3", tmp_path / "cache", {}, echo=lines.append)
    assert any("no config.json" in line for line in lines)


def test_mapillary_label_must_be_indexed(tmp_path):
    rf.write_mapillary(tmp_path / "data" / "mapillary")
    label = tmp_path / "data" / "mapillary" / "validation" / "labels" / f"{rf.MAPILLARY_IDS[0]}.png"
    with Image.open(label) as image:
        image.convert("RGB").save(label)
    failure(prepare_datasets(["mapillary"], tmp_path / "data", tmp_path / "cache", {}, echo=quiet), "mapillary",
            "palettised")


# --- originals untouched, missing inputs ----------------------------------------------------------------------------

def test_never_writes_under_data_root(tmp_path):
    data = tmp_path / "data"
    rf.write_potsdam(data / "potsdam")
    rf.write_vaihingen(data / "vaihingen", zipped=True)
    rf.write_mapillary(data / "mapillary")
    before = listing(data)
    names = ["potsdam-rgb", "potsdam-irrg", "vaihingen-irrg", "mapillary", "cityscapes"]
    summary = prepare_datasets(names, data, tmp_path / "cache", {}, echo=quiet, clip=CLIP)
    prepare_datasets(names, data, tmp_path / "cache", {}, echo=quiet, clip=CLIP)
    assert listing(data) == before
    assert summary["cityscapes"].status == NOTHING
    with pytest.raises(UserError, match="inside the data root"):
        prepare_datasets(names, data, data / "cache", {}, echo=quiet, clip=CLIP)
    failure(prepare_datasets(["potsdam-rgb"], data, tmp_path / "c2", {"potsdam-rgb": str(tmp_path / "c2")},
                             echo=quiet), "potsdam-rgb", "overlap")
    assert listing(data) == before


def test_missing_inputs(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"

    def fails(name: str, pattern: str, **kw) -> None:
        failure(prepare_datasets([name], data, cache, {}, echo=quiet, **kw), name, pattern)

    fails("potsdam-rgb", r"raw folder .*data/potsdam not found")
    (data / "potsdam").mkdir(parents=True)
    fails("potsdam-rgb", r"no Potsdam RGB tiles in .*potsdam.*2_Ortho_RGB/.*2_Ortho_RGB\.zip")
    rf.write_potsdam(data / "potsdam")
    (data / "potsdam" / "5_Labels_all_noBoundary" / "top_potsdam_2_13_label_noBoundary.tif").unlink()
    fails("potsdam-rgb", "top_potsdam_2_13_label_noBoundary.tif", clip=CLIP)
    (data / "vaihingen").mkdir()
    fails("vaihingen-irrg", r"Vaihingen tiles.*top/.*ISPRS_semantic_labeling_Vaihingen\.zip")
    (data / "mapillary" / "validation").mkdir(parents=True)
    fails("mapillary", r"validation/labels.*config\.json")
    assert not cache.exists()
    rf.write_mapillary(data / "mapillary")
    lines: list[str] = []  # every input is located before any writing; a failure is echoed at once
    summary = prepare_datasets(["mapillary", "potsdam-rgb"], None, cache, {"mapillary": str(data / "mapillary")},
                               echo=lines.append)
    failure(summary, "potsdam-rgb", "data.paths.potsdam-rgb")
    assert lines[0].startswith("potsdam-rgb: FAILED: ") and summary["mapillary"].status == PREPARED_NOW


def test_gkd_layout_under_raw_folder_accepted(tmp_path):
    (tmp_path / "data" / "potsdam" / "RGB" / "img_dir" / "val").mkdir(parents=True)
    summary = prepare_datasets(["potsdam-rgb"], tmp_path / "data", tmp_path / "cache", {}, echo=quiet)
    assert summary["potsdam-rgb"].status == FOUND_CONVERTED
    assert not (tmp_path / "cache").exists()


# --- resumption ----------------------------------------------------------------------------------------------------

def test_interrupted_run_resumes_without_redoing_work(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    raw = rf.write_potsdam(data / "potsdam")
    out = cache / "potsdam" / "RGB"
    crashing = CountingSaver(fail_after=11)  # tile 2_10 (8 files) done, 3 files of tile 2_13
    monkeypatch.setattr(prepare_io, "save_atomic", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    assert len(crashing.calls) == 11
    assert not is_prepared("potsdam-rgb", cache)
    assert not leftovers(out)
    for path in out.rglob("*.png"):
        read(path)  # complete, decodable
    stray = out / "img_dir" / "val" / f".2_13_32_32_64_64.png.0badf00d{prepare_io.TMP_SUFFIX}"
    stray.write_bytes(b"\x89PNG half")  # what a killed process leaves behind

    counting = CountingSaver()
    monkeypatch.setattr(prepare_io, "save_atomic", counting)
    summary = prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    assert sorted(counting.calls) == sorted(POTSDAM_NAMES["val"] * 2)  # only the unfinished tile, img + ann
    assert (summary["potsdam-rgb"].converted, summary["potsdam-rgb"].written) == (1, 8)
    assert not leftovers(out)
    check_patches(out, POTSDAM_NAMES, raw, "RGB")

    monkeypatch.setattr(prepare_io, "save_atomic", CountingSaver(fail_after=0))
    monkeypatch.setattr(prepare_io.Source, "read_image", lambda self: pytest.fail("finished data was re-read"))
    summary = prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    assert (summary["potsdam-rgb"].status, summary["potsdam-rgb"].counts) == (ALREADY, {"train": 4, "val": 4})
    shutil.rmtree(data / "potsdam")
    summary = prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    assert summary["potsdam-rgb"].status == ALREADY and "originals not found" in summary["potsdam-rgb"].line()


def test_failed_replace_leaves_no_temporary(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    target = tmp_path / "a.png"
    with pytest.raises(OSError, match="disk full"):
        prepare_io.save_atomic(Image.new("L", (4, 4)), target, "PNG")
    assert list(tmp_path.iterdir()) == []


def test_changed_or_removed_tile_is_redone(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_potsdam(data / "potsdam")
    prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    out = cache / "potsdam" / "RGB"
    # tile 2_13 replaced by a 64×40 one: its patches change, stale ones must go
    image = data / "potsdam" / "2_Ortho_RGB" / "top_potsdam_2_13_RGB.tif"
    label = data / "potsdam" / "5_Labels_all_noBoundary" / "top_potsdam_2_13_label_noBoundary.tif"
    Image.new("RGB", (64, 40), (9, 9, 9)).save(image, format="TIFF")
    Image.new("RGB", (64, 40), (0, 0, 255)).save(label, format="TIFF")
    monkeypatch.setattr(prepare_io, "save_atomic", CountingSaver(fail_after=1))
    with pytest.raises(RuntimeError):
        prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    assert not is_prepared("potsdam-rgb", cache)  # the old done marker no longer stands
    counting = CountingSaver()
    monkeypatch.setattr(prepare_io, "save_atomic", counting)
    summary = prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    assert summary["potsdam-rgb"].status == PREPARED_NOW and len(counting.calls) == 8
    new_names = ["2_13_0_0_32_32.png", "2_13_0_8_32_40.png", "2_13_32_0_64_32.png", "2_13_32_8_64_40.png"]
    assert pngs(out / "img_dir" / "val") == new_names and pngs(out / "ann_dir" / "val") == new_names
    assert all((read(out / "ann_dir" / "val" / n) == 2).all() for n in new_names)
    assert pngs(out / "img_dir" / "train") == POTSDAM_NAMES["train"]
    for path in (data / "potsdam").rglob("*2_13*"):
        path.unlink()
    summary = prepare_datasets(["potsdam-rgb"], data, cache, {}, echo=quiet, clip=CLIP)
    assert summary["potsdam-rgb"].counts == {"train": 4}
    assert pngs(out / "img_dir" / "val") == [] and pngs(out / "ann_dir" / "val") == []


def test_pixel_limit_raised_only_while_preparing(tmp_path, monkeypatch):
    rf.write_potsdam(tmp_path / "data" / "potsdam", tiles=("2_10",))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 64² test tile then counts as a decompression bomb
    tile = tmp_path / "data" / "potsdam" / "2_Ortho_RGB" / "top_potsdam_2_10_RGB.tif"
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tile)
    summary = prepare_datasets(["potsdam-rgb"], tmp_path / "data", tmp_path / "cache", {}, echo=quiet, clip=CLIP)
    assert summary["potsdam-rgb"].counts == {"train": 4}
    assert Image.MAX_IMAGE_PIXELS == 1000
