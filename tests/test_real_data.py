"""Real-dataset layer: label tables against the literal tables of datasets.md, every loader on fixtures in the real
on-disk formats (§15), the committed golden labels, and ``data check`` on good and broken data. CPU only, no network.

Expected train ids are computed here from tables typed in from datasets.md, never from kdbench's own tables.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdbench.data.real import labels
from kdbench.data.real.catalog import DATASETS, get_dataset
from kdbench.data.real.check import check_dataset, check_datasets, format_reports
from kdbench.data.real.files import dataset_root, list_samples, read_image, read_label, read_raw_label
from kdbench.errors import UserError
from kdbench.testing import fixtures as fx

GOLDEN = Path(__file__).parent / "fixtures" / "real_golden"

# --- datasets.md, typed in --------------------------------------------------------------------------------------

CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle"]
CITYSCAPES_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32)]
# §0.1 34-entry list, and §3's dict form of the same mapping
CS_LUT = [255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12,
          13, 14, 15, 255, 255, 16, 17, 18]
CS_DICT = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
           27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# §4
SYNTHIA_LUT = [255, 10, 2, 0, 1, 4, 8, 5, 13, 7, 11, 18, 17, 255, 255, 6, 9, 12, 14, 15, 16, 3, 255]
SYNTHIA_PAIRS = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13,
                 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
# §6
MAPILLARY_LUT = [255, 255, 1, 4, 255, 255, 3, 0, 0, 1, 0, 1, 255, 0, 0, 1, 255, 2, 255, 11, 12, 12, 12, 0, 0, 255, 255,
                 10, 255, 9, 8, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 5, 5, 7, 5, 6, 7, 7,
                 255, 18, 255, 15, 13, 255, 17, 16, 255, 255, 14, 255, 255, 255, 255]
MAPILLARY_GROUPS = {0: [7, 8, 10, 13, 14, 23, 24], 1: [2, 9, 11, 15], 2: [17], 3: [6], 4: [3], 5: [44, 45, 47],
                    6: [48], 7: [46, 49, 50], 8: [30], 9: [29], 10: [27], 11: [19], 12: [20, 21, 22], 13: [55],
                    14: [61], 15: [54], 16: [58], 17: [57], 18: [52]}
# §9 converter colour table (index: colour) and the classes after reduce_zero_label
ISPRS_COLOURS = [(0, 0, 0), (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
ISPRS_CLASSES = ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"]
# §11
RESCUENET11 = {"background": (0, 0, 0), "water": (61, 230, 250), "building-no-damage": (180, 120, 120),
               "building-minor-damage": (235, 255, 7), "building-major-damage": (255, 184, 6),
               "building-total-destruction": (255, 0, 0), "vehicle": (255, 0, 245), "road-clear": (140, 140, 140),
               "road-blocked": (160, 150, 20), "tree": (4, 250, 7), "pool": (255, 235, 0)}
RESCUE5 = ["impervious_surface", "building", "vegetation", "car", "clutter"]

OFFICIAL = {"gta5": {"train": 24966}, "synthia": {"train": 9400}, "urbansyn": {"train": 7539},
            "cityscapes": {"train": 2975, "val": 500}, "bdd100k": {"train": 7000, "val": 1000},
            "mapillary": {"val": 2000, "train": 500}, "acdc-night": {"train": 400, "val": 106, "test": 500},
            "acdc-snow": {"train": 400, "val": 100, "test": 500}, "acdc-fog": {"train": 400, "val": 100, "test": 500},
            "acdc-rain": {"train": 400, "val": 100, "test": 500}, "potsdam-rgb": {"train": 3456, "val": 2016},
            "potsdam-irrg": {"train": 3456, "val": 2016}, "vaihingen-irrg": {"train": 344, "val": 398},
            "rescuenet": {"test": 450}}
TEST_SCALES = {"gta5": (1280, 720), "cityscapes": (1024, 512), "bdd100k": (1280, 720), "mapillary": (1024, 512),
               "acdc-night": (960, 540), "acdc-snow": (960, 540), "acdc-fog": (960, 540), "acdc-rain": (960, 540),
               "potsdam-rgb": (512, 512), "potsdam-irrg": (512, 512), "vaihingen-irrg": (512, 512),
               "rescuenet": (512, 512)}
#: the off-table raw values each fixture writes (see kdbench.testing.fixtures)
OFF_TABLE = {"gta5": [34, 250], "synthia": [23, 259], "urbansyn": [20, 250], "cityscapes": [34, 250],
             "bdd100k": [19, 200], "mapillary": [19, 200], "acdc-night": [34, 250], "acdc-snow": [34, 250],
             "acdc-fog": [34, 250], "acdc-rain": [34, 250], "potsdam-rgb": [7, 200], "potsdam-irrg": [7, 200],
             "vaihingen-irrg": [7, 200], "rescuenet": [6, 200]}


def lut_map(raw: np.ndarray, lut: list[int]) -> np.ndarray:
    return np.vectorize(lambda v: lut[v] if 0 <= v < len(lut) else 255, otypes=[np.uint8])(raw)


def rzl_map(raw: np.ndarray, num_raw: int) -> np.ndarray:
    """reduce_zero_label on raw codes 0..num_raw-1 (datasets.md §0): 0 and off-table -> 255, v -> v-1."""
    return np.vectorize(lambda v: v - 1 if 1 <= v < num_raw else 255, otypes=[np.uint8])(raw)


def expected_train_ids(name: str, raw: np.ndarray) -> np.ndarray:
    if name in ("gta5", "cityscapes") or name.startswith("acdc-"):
        return lut_map(raw, CS_LUT)
    if name == "synthia":
        return lut_map(raw, SYNTHIA_LUT)
    if name == "urbansyn":
        return lut_map(raw, [*range(19), 255])
    if name in ("bdd100k", "mapillary"):
        return np.vectorize(lambda v: v if 0 <= v <= 18 else 255, otypes=[np.uint8])(raw)
    if name in ("potsdam-rgb", "potsdam-irrg", "vaihingen-irrg"):
        return rzl_map(raw, 7)
    if name == "rescuenet":
        return rzl_map(raw, 6)
    raise AssertionError(name)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    return base / "data", base / "cache", fx.make_all(base / "data", base / "cache", off_table=True)


@pytest.fixture
def fresh(tmp_path):
    """A data root and cache of this test's own, free to break."""
    return tmp_path / "data", tmp_path / "cache", fx.make_all(tmp_path / "data", tmp_path / "cache", off_table=False)


# --- tables -------------------------------------------------------------------------------------------------------

def test_cityscapes_table_and_labelid_lut():
    table = labels.class_table("cityscapes19")
    assert list(table.classes) == CITYSCAPES_CLASSES
    assert list(table.palette) == CITYSCAPES_PALETTE
    enc = labels.encoding("cityscapes-labelids")
    assert list(enc.lut) == CS_LUT
    assert {i: v for i, v in enumerate(CS_LUT) if v != 255} == CS_DICT
    assert len(enc.raw_names) == 34 and enc.raw_names[7] == "road" and enc.raw_names[33] == "bicycle"
    assert enc.table == "cityscapes19" and not enc.reduce_zero_label
    assert enc.to_train_ids(np.arange(256, dtype=np.uint8)).tolist() == CS_LUT + [255] * (256 - 34)


def test_synthia_lut():
    enc = labels.encoding("synthia-ids")
    assert list(enc.lut) == SYNTHIA_LUT
    assert {i: v for i, v in enumerate(SYNTHIA_LUT) if v != 255} == SYNTHIA_PAIRS
    assert enc.raw_names[21] == "wall" and enc.raw_names[22] == "lanemarking"


def test_mapillary_names_colours_and_lut():
    enc = labels.encoding("mapillary-v12")
    assert list(enc.lut) == MAPILLARY_LUT
    assert {t: [i for i, v in enumerate(MAPILLARY_LUT) if v == t] for t in range(19)} == MAPILLARY_GROUPS
    assert len(enc.raw_names) == len(enc.raw_colours) == 66
    assert enc.raw_names[0] == "Bird" and enc.raw_names[46] == "Traffic Sign Frame" and enc.raw_names[65] == "Unlabeled"
    assert enc.raw_colours[0] == (165, 42, 42) and enc.raw_colours[13] == (128, 64, 128)
    assert enc.raw_colours[65] == (0, 0, 0) and len(set(enc.raw_colours)) == 66

    # §6's rule on the readable names re-derives the LUT, so the 66 names and the LUT agree
    def rule(readable: str) -> int:
        key = readable.lower().replace(" ", "").replace("-", "")
        exact = {c.replace(" ", ""): i for i, c in enumerate(CITYSCAPES_CLASSES)}
        if key in exact:
            return exact[key]
        for words, train_id in ((("trafficsign", "front", "back"), 7), (("onrail",), 16),
                                (("cyclist", "rider"), 12), (("pole", "streetlight"), 5),
                                (("curb", "pedestrianarea"), 1),
                                (("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking"), 0)):
            if any(w in key for w in words):
                return train_id
        return 255

    assert [rule(n) for n in enc.raw_names] == MAPILLARY_LUT
    assert enc.to_train_ids(np.arange(70, dtype=np.uint8)).tolist() == MAPILLARY_LUT + [255] * 4


def test_urbansyn_isprs_and_rescue_tables():
    assert list(labels.encoding("urbansyn-ss").lut) == [*range(19), 255]
    isprs = labels.encoding("isprs-ann")
    assert list(isprs.raw_colours) == ISPRS_COLOURS and list(isprs.lut) == list(range(7)) and isprs.reduce_zero_label
    assert list(labels.class_table("isprs6").classes) == ISPRS_CLASSES
    assert list(labels.class_table("isprs6").palette) == ISPRS_COLOURS[1:]
    r11 = labels.class_table("rescuenet11")
    assert dict(zip(r11.classes, r11.palette, strict=True)) == RESCUENET11
    assert list(labels.encoding("rescuenet11-lab").raw_colours) == list(RESCUENET11.values())
    r5 = labels.class_table("rescue5")
    assert list(r5.classes) == RESCUE5
    assert list(r5.palette) == [(255, 255, 255), (0, 0, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
    assert labels.encoding("rescue5-lab").reduce_zero_label


def test_every_encoding_maps_inside_its_table():
    for name in labels.encoding_names():
        enc = labels.encoding(name)
        k = labels.class_table(enc.table).num_classes
        for raw, train_id in enumerate(enc.lut):
            if train_id is None or train_id == 255:
                continue
            final = train_id - 1 if enc.reduce_zero_label else train_id
            assert 0 <= final < k or (enc.reduce_zero_label and train_id == 0), (name, raw, train_id)


def test_label_functions():
    assert labels.reduce_zero_label(np.array([0, 1, 2, 6, 254, 255], np.uint8)).tolist() == [255, 0, 1, 5, 253, 255]
    lut = np.array([3, 255, 7], np.uint8)
    assert labels.apply_lut(np.array([0, 1, 2, 3, 200], np.uint8), lut).tolist() == [3, 255, 7, 255, 255]
    assert labels.apply_lut(np.array([-1, 2, 300, 70000], np.int64), lut).tolist() == [255, 7, 255, 255]
    rgb = np.array([[[255, 255, 255], [0, 0, 255], [1, 2, 3], [0, 0, 0]]], np.uint8)
    assert labels.colours_to_index(rgb, tuple(ISPRS_COLOURS)).tolist() == [[1, 2, -1, 0]]
    trainids = labels.encoding("cityscapes19-trainids")
    assert trainids.off_table_values(np.array([0, 18, 19, 200, 255])) == [19, 200]
    assert trainids.to_train_ids(np.array([0, 18, 19, 255], np.uint8)).tolist() == [0, 18, 255, 255]


# --- catalog ------------------------------------------------------------------------------------------------------

def test_catalog_facts():
    assert sorted(DATASETS) == sorted(OFFICIAL)
    for name, sizes in OFFICIAL.items():
        spec = get_dataset(name)
        assert spec.official_sizes == sizes, name
        assert spec.test_scale == TEST_SCALES.get(name), name
        assert spec.train_scale_base == (540 if name.startswith("acdc-") else 512), name
        assert spec.num_classes == len(spec.classes)
        assert spec.eval_split in spec.split_names
    assert get_dataset("cityscapes").classes == tuple(CITYSCAPES_CLASSES)
    assert get_dataset("potsdam-irrg").classes == tuple(ISPRS_CLASSES)
    assert get_dataset("rescuenet").classes == tuple(RESCUE5) and get_dataset("rescuenet").eval_split == "test"
    assert {n for n, s in DATASETS.items() if s.prepared} == {"potsdam-rgb", "potsdam-irrg", "vaihingen-irrg",
                                                              "mapillary"}
    assert get_dataset("gta5").train_split == "train" and get_dataset("cityscapes").eval_split == "val"
    assert get_dataset("gta5").folder == "GTA5" and "gta" in get_dataset("gta5").folders
    assert get_dataset("synthia").folder == "SYNTHIA_RAND_CITYSCAPES/RAND_CITYSCAPES"
    with pytest.raises(UserError, match="unknown dataset 'gta'.*cityscapes"):
        get_dataset("gta")
    with pytest.raises(UserError, match="no split 'val'.*train"):
        get_dataset("gta5").split("val")
    with pytest.raises(UserError, match="mapillary has no training split"):
        get_dataset("mapillary").split(get_dataset("mapillary").train_split)


# --- loaders ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_loader_pairs_decodes_and_maps(name, written):
    data_root, cache, fixtures = written
    spec, fixture = get_dataset(name), fixtures[name]
    root = dataset_root(spec, data_root, {}, cache)
    assert root == fixture.root
    for split in dict.fromkeys(s.split for s in fixture.samples):
        samples = list_samples(spec, root, split)
        want = fixture.split(split)  # written in sorted order
        assert [s.image for s in samples] == [w.image for w in want]
        assert [s.label for s in samples] == [w.label for w in want]
        assert len({s.key for s in samples}) == len(samples)
        for sample, w in zip(samples, want, strict=True):
            image = read_image(sample.image)
            assert image.dtype == np.uint8 and image.shape == w.pixels.shape
            if sample.image.suffix == ".png":
                np.testing.assert_array_equal(image, w.pixels)
            else:
                assert np.abs(image.astype(int) - w.pixels).mean() < 4
            if w.label is None:
                continue
            label = read_label(spec, sample.label)
            assert label.dtype == np.uint8 and label.shape == image.shape[:2]
            np.testing.assert_array_equal(label, expected_train_ids(name, w.raw))
            assert set(np.unique(label)) <= {*range(spec.num_classes), 255}


def test_every_lut_entry_is_exercised(written):
    """The stripes hold every raw id of each table, so the test above checked each LUT entry."""
    fixtures = written[2]
    assert set(np.unique(fixtures["gta5"].samples[0].raw)) >= set(range(34))
    assert set(np.unique(fixtures["synthia"].samples[0].raw)) >= set(range(23))
    assert set(np.unique(fixtures["urbansyn"].samples[0].raw)) >= set(range(20))
    assert set(np.unique(fixtures["potsdam-rgb"].samples[0].raw)) >= set(range(7))


def test_cityscapes_prefers_trainids_then_labelids(tmp_path):
    spec = get_dataset("cityscapes")
    fixture = fx.make_cityscapes(tmp_path, trainid_lut=CS_LUT)
    samples = list_samples(spec, tmp_path, "val")
    assert all(s.label.name.endswith("_gtFine_labelTrainIds.png") for s in samples)
    np.testing.assert_array_equal(read_label(spec, samples[0].label),
                                  lut_map(fixture.split("val")[0].raw, CS_LUT))
    # the trainIds file is what is read: a constant one reads as that constant
    fx.write_grey(samples[0].label, np.full((32, 64), 5))
    assert (read_label(spec, samples[0].label) == 5).all()
    # without trainIds files, the labelIds ones (+ LUT)
    samples[1].label.unlink()
    again = list_samples(spec, tmp_path, "val")
    assert again[1].label.name.endswith("_gtFine_labelIds.png")
    # decoys are never labels
    with pytest.raises(UserError, match="not a label file of dataset cityscapes"):
        read_label(spec, next(p for p in fixture.decoys if p.name.endswith("_color.png")))


def test_gta5_palette_label_read_by_index_and_converted_labels_preferred(tmp_path):
    spec = get_dataset("gta5")
    fixture = fx.make_gta5(tmp_path, trainid_lut=CS_LUT, palette=CITYSCAPES_PALETTE)
    sample = fixture.samples[0]
    assert Image.open(sample.label).mode == "P"
    np.testing.assert_array_equal(read_label(spec, sample.label), lut_map(sample.raw, CS_LUT))
    listed = list_samples(spec, tmp_path, "train")
    assert [s.label.name for s in listed] == ["00001_labelTrainIds.png", "00002_labelTrainIds.png"]
    np.testing.assert_array_equal(read_label(spec, listed[1].label), lut_map(fixture.samples[1].raw, CS_LUT))
    # a colour-converted GTA label cannot be read as ids
    Image.open(sample.label).convert("RGB").save(tmp_path / "labels" / "00003.png")
    with pytest.raises(UserError, match="colour image"):
        read_label(spec, tmp_path / "labels" / "00003.png")


def test_synthia_label_is_16bit_rgb_read_from_red_channel(written):
    spec, sample = get_dataset("synthia"), written[2]["synthia"].samples[0]
    width, height, depth, colour_type = struct.unpack(">IIBB", sample.label.read_bytes()[16:26])
    assert (width, height, depth, colour_type) == (64, 32, 16, 2)
    raw = read_raw_label(spec, sample.label).raw
    np.testing.assert_array_equal(raw, sample.raw)  # 259 survives: a 16-bit read of R, not G (300) or B (0)
    assert read_label(spec, sample.label)[0, -1] == 255  # raw 259 would be 3 (road -> 0) if read as 8 bits


def test_synthia_converted_labels(tmp_path):
    spec = get_dataset("synthia")
    fixture = fx.make_synthia(tmp_path, trainid_lut=SYNTHIA_LUT)
    listed = list_samples(spec, tmp_path, "train")
    assert [s.label.name for s in listed] == ["0000000_labelTrainIds.png", "0000001_labelTrainIds.png"]
    np.testing.assert_array_equal(read_label(spec, listed[0].label), lut_map(fixture.samples[0].raw, SYNTHIA_LUT))


def test_golden_gta5_palette_label():
    label = read_label(get_dataset("gta5"), GOLDEN / "gta5_label_P.png")
    row = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255,
                       16, 17, 18, 255, 255]
    assert label.shape == (2, 36) and label.tolist() == [row, row]
    assert Image.open(GOLDEN / "gta5_label_P.png").mode == "P"


def test_golden_synthia_16bit_label(tmp_path):
    label = read_label(get_dataset("synthia"), GOLDEN / "synthia_label_16bit.png")
    row = [255, 10, 2, 0, 1, 4, 8, 5, 13, 7, 11, 18, 17, 255, 255, 6, 9, 12, 14, 15, 16, 3, 255, 255, 255]
    assert label.shape == (2, 25) and label.tolist() == [row, row]
    # the fixture writer still produces the committed bytes
    raw = fx.stripes([*range(23), 23, 259], 2, 25)
    rewritten = fx.write_png16_rgb(tmp_path / "s.png", np.stack([raw, np.full_like(raw, 300), 0 * raw], -1))
    assert rewritten.read_bytes() == (GOLDEN / "synthia_label_16bit.png").read_bytes()


def test_urbansyn_pairs_by_number(tmp_path):
    spec = get_dataset("urbansyn")
    fx.make_urbansyn(tmp_path)
    (tmp_path / "ss" / "ss_0002.png").rename(tmp_path / "ss" / "rgb_0002.png")  # GKD's renamed layout
    fx.write_rgb(tmp_path / "rgb" / "rgb_0003.png", fx.random_image(32, 64, 3))  # no label
    fx.write_rgb(tmp_path / "rgb" / "notes.png", fx.random_image(32, 64, 4))  # not a frame
    listed = list_samples(spec, tmp_path, "train", missing_labels="keep")
    assert [(s.image.name, s.label.name if s.label else None) for s in listed] == [
        ("rgb_0001.png", "ss_0001.png"), ("rgb_0002.png", "rgb_0002.png"), ("rgb_0003.png", None)]
    assert [s.image.name for s in list_samples(spec, tmp_path, "train", missing_labels="skip")] == [
        "rgb_0001.png", "rgb_0002.png"]
    with pytest.raises(UserError, match=r"urbansyn: 1 train image\(s\) have no label file, e\.g\. .*rgb_0003\.png "
                                        r"\(expected ss/ss_0003\.png or ss/rgb_0003\.png\)"):
        list_samples(spec, tmp_path, "train")


def test_bdd_decoys_and_old_layout(tmp_path, written):
    spec = get_dataset("bdd100k")
    listed = list_samples(spec, written[2]["bdd100k"].root, "val")
    assert all("/masks/" in s.label.as_posix() for s in listed)
    old = tmp_path / "bdd100k"
    pixels = fx.random_image(27, 48, 1)
    fx.write_rgb(old / "seg" / "images" / "val" / "7d2f7975-e0c1c5a7.jpg", pixels, "JPEG")
    fx.write_grey(old / "seg" / "labels" / "val" / "7d2f7975-e0c1c5a7_train_id.png", np.full((27, 48), 4))
    fx.write_rgb(old / "seg" / "color_labels" / "val" / "7d2f7975-e0c1c5a7_train_color.png", pixels)
    assert dataset_root(spec, tmp_path, {}) == old
    (sample,) = list_samples(spec, old, "val")
    assert sample.label.name == "7d2f7975-e0c1c5a7_train_id.png" and (read_label(spec, sample.label) == 4).all()


def test_acdc_conditions_test_split_and_refs(written):
    data_root, _, fixtures = written
    for cond in ("fog", "night", "rain", "snow"):
        spec = get_dataset(f"acdc-{cond}")
        root = dataset_root(spec, data_root, {})
        for split in ("train", "val", "test"):
            listed = list_samples(spec, root, split)
            assert len(listed) == 2 and all(f"/{cond}/{split}/" in s.image.as_posix() for s in listed)
            assert all((s.label is None) == (split == "test") for s in listed)
            assert not any("_ref" in s.image.name for s in listed)


def test_prepared_datasets_cache_first_then_data_root(tmp_path):
    spec = get_dataset("potsdam-irrg")
    cache_fx = fx.make_potsdam_prepared(tmp_path / "cache" / "potsdam" / "IRRG", "IRRG")
    root_fx = fx.make_potsdam_prepared(tmp_path / "data" / "potsdam" / "IRRG", "IRRG")
    assert dataset_root(spec, tmp_path / "data", {}, tmp_path / "cache") == cache_fx.root
    shutil.rmtree(cache_fx.root)
    assert dataset_root(spec, tmp_path / "data", {}, tmp_path / "cache") == root_fx.root
    # an override naming the raw folder (for data prepare) does not count; one holding the converted layout does
    raw = tmp_path / "raw_potsdam"
    raw.mkdir()
    assert dataset_root(spec, tmp_path / "data", {"potsdam-irrg": str(raw)}, tmp_path / "cache") == root_fx.root
    assert dataset_root(spec, tmp_path / "x", {"potsdam-irrg": str(root_fx.root)}, tmp_path / "cache") == root_fx.root
    shutil.rmtree(root_fx.root)
    root = dataset_root(spec, tmp_path / "data", {}, tmp_path / "cache")
    with pytest.raises(UserError, match=r"potsdam-irrg: folder .*img_dir/val not found.*kdbench data prepare "
                                        r"--suite dg5 --data-root DIR"):
        list_samples(spec, root, "val")


def test_converted_layouts_under_the_data_root(tmp_path):
    fixtures = fx.make_all(tmp_path, off_table=False)
    for name in ("potsdam-rgb", "potsdam-irrg", "vaihingen-irrg", "mapillary"):
        spec = get_dataset(name)
        root = dataset_root(spec, tmp_path, {}, tmp_path / "empty-cache")
        assert root == tmp_path / spec.folder == fixtures[name].root
        assert len(list_samples(spec, root, spec.eval_split)) == 2


def test_roots_alternatives_and_overrides(tmp_path):
    gta = get_dataset("gta5")
    fx.make_gta5(tmp_path / "data" / "gta")
    assert dataset_root(gta, tmp_path / "data", {}) == tmp_path / "data" / "gta"
    fx.make_gta5(tmp_path / "data" / "GTA5")
    assert dataset_root(gta, tmp_path / "data", {}) == tmp_path / "data" / "GTA5"  # GKD's name first
    assert dataset_root(gta, tmp_path / "data", {"gta5": "gta"}) == tmp_path / "data" / "gta"  # relative to the root
    with pytest.raises(UserError, match=r"data.paths.gta5: folder .*nowhere does not exist"):
        dataset_root(gta, tmp_path / "data", {"gta5": str(tmp_path / "nowhere")})
    synthia = get_dataset("synthia")
    fx.make_synthia(tmp_path / "data" / "synthia" / "RAND_CITYSCAPES")
    assert dataset_root(synthia, tmp_path / "data", {}) == tmp_path / "data" / "synthia" / "RAND_CITYSCAPES"
    acdc = fx.make_acdc(tmp_path / "elsewhere")
    assert dataset_root(get_dataset("acdc-fog"), tmp_path / "data", {"acdc": str(tmp_path / "elsewhere")}) == \
        acdc["acdc-fog"].root


def test_missing_folders_name_folder_and_dataset(tmp_path, written):
    spec = get_dataset("cityscapes")
    with pytest.raises(UserError, match=r"dataset cityscapes: folder .*leftImg8bit/val not found.*does not exist"):
        list_samples(spec, dataset_root(spec, tmp_path, {}), "val")
    root = tmp_path / "cityscapes"
    fx.make_cityscapes(root)
    shutil.rmtree(root / "gtFine" / "val")
    with pytest.raises(UserError, match=r"dataset cityscapes: label folder .*gtFine/val not found"):
        list_samples(spec, root, "val")
    rescue = get_dataset("rescuenet")
    fx.make_rescuenet(tmp_path / "RescueNet", official=True)
    with pytest.raises(UserError, match=r"rescuenet: folder .*test-org-img not found.*not published"):
        list_samples(rescue, dataset_root(rescue, tmp_path, {}), "test")


def test_hidden_files_are_skipped(tmp_path):
    spec = get_dataset("gta5")
    fx.make_gta5(tmp_path)
    (tmp_path / "images" / "._00001.png").write_bytes(b"\x00\x05\x16\x07")
    assert [s.image.name for s in list_samples(spec, tmp_path, "train")] == ["00001.png", "00002.png"]


def test_unreadable_files_are_user_errors(tmp_path):
    bad = tmp_path / "labels" / "00001.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="00001.png"):
        read_image(bad)
    with pytest.raises(UserError, match="00001.png"):
        read_label(get_dataset("gta5"), bad)
    with pytest.raises(UserError, match="0000000.png"):
        read_label(get_dataset("synthia"), bad.with_name("0000000.png"))
    with pytest.raises(UserError, match="has no label file"):
        read_label(get_dataset("gta5"), None)


def test_isprs_colour_labels_with_off_table_colour(tmp_path):
    """An ISPRS annotation stored as colours decodes through the §9 colour table; other colours read as 255 and
    ``data check`` names them."""
    spec = get_dataset("vaihingen-irrg")
    fixture = fx.make_vaihingen_prepared(tmp_path, off_table=False)
    path = fixture.split("val")[0].label
    codes = fx.stripes(range(8), 32, 32)  # 7 = an off-table colour
    fx.write_rgb(path, np.array([*ISPRS_COLOURS, (12, 34, 56)], np.uint8)[codes])
    np.testing.assert_array_equal(read_label(spec, path), rzl_map(codes, 7))
    raw = read_raw_label(spec, path)
    assert raw.encoding.off_table_values(raw.raw) == [-1]
    report = check_dataset(spec, tmp_path, "val")
    assert [p.kind for p in report.errors] == ["off-table"]
    assert report.errors[0].detail == "ann_dir/val/area2_0_0_32_32.png: colours (12,34,56)"


def test_read_image_formats(tmp_path):
    pixels = fx.random_image(16, 24, 9)
    for fmt, suffix in (("PNG", ".png"), ("TIFF", ".tif"), ("JPEG", ".jpg")):
        path = fx.write_rgb(tmp_path / f"x{suffix}", pixels, fmt)
        image = read_image(path)
        assert image.shape == (16, 24, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - pixels).mean() < (4 if fmt == "JPEG" else 1e-9)
    grey = tmp_path / "g.png"
    fx.write_grey(grey, pixels[..., 0])
    assert (read_image(grey) == pixels[..., :1]).all()


# --- data check ---------------------------------------------------------------------------------------------------

def test_check_clean_data_is_ok_with_count_warnings(fresh):
    data_root, cache, _ = fresh
    reports = check_datasets(sorted(OFFICIAL), data_root, cache, {})
    assert [r.name for r in reports] == sorted(OFFICIAL)
    assert all(r.ok for r in reports), format_reports(reports)
    assert all(p.kind == "count" and p.severity == "warning" for r in reports for p in r.problems)
    text = format_reports(reports)
    assert "14 dataset(s) checked: 14 OK" in text and "a subset is fine" in text
    assert "cityscapes at" in text and "val 2/500 images, 2 labels" in text


def test_check_reports_off_table_raw_values(written):
    data_root, cache, _ = written
    reports = {r.name: r for r in check_datasets(sorted(OFFICIAL), data_root, cache, {})}
    for name, values in OFF_TABLE.items():
        report = reports[name]
        assert not report.ok
        off = [p for p in report.errors if p.kind == "off-table"]
        labelled = sum(s.labels for s in report.splits)
        assert len(off) == labelled == len(report.errors), name
        assert all(p.detail.endswith("values " + ", ".join(map(str, values))) for p in off), (name, off[0].detail)
    assert "label values outside the table" in format_reports(list(reports.values()))


def test_check_finds_each_problem_kind(fresh):
    data_root, cache, fixtures = fresh
    spec = get_dataset("cityscapes")
    val = fixtures["cityscapes"].split("val")
    val[0].label.unlink()  # image without label
    fx.write_grey(val[1].label, np.zeros((10, 10)))  # size mismatch
    train = fixtures["cityscapes"].split("train")
    train[0].image.write_bytes(b"garbage")  # unreadable image
    train[1].label.write_bytes(b"garbage")  # unreadable label
    report = check_dataset(spec, fixtures["cityscapes"].root)
    kinds = sorted(p.kind for p in report.errors)
    assert kinds == ["no-label", "size-mismatch", "unreadable", "unreadable"]
    assert not report.ok
    text = format_reports([report])
    assert "image without label: 1 file(s)" in text and "frankfurt/frankfurt_000000_000294_leftImg8bit.png" in text
    assert "image/label size mismatch" in text and "64×32" in text and "10×10" in text
    assert "unreadable file: 2 file(s)" in text and "aachen_000000_000019_leftImg8bit.png" in text


def test_check_missing_prepared_dataset_tells_to_prepare(fresh):
    data_root, cache, _ = fresh
    shutil.rmtree(cache / "vaihingen")
    (report,) = check_datasets(["vaihingen-irrg"], data_root, cache, {})
    assert not report.ok and {p.kind for p in report.errors} == {"missing-folder"}
    assert "kdbench data prepare --suite dg5 --data-root DIR" in format_reports([report])


def test_check_missing_override_and_unknown_names(fresh):
    data_root, cache, _ = fresh
    (report,) = check_datasets(["gta5"], data_root, cache, {"gta5": "/no/such/folder"})
    assert not report.ok and "data.paths.gta5" in report.errors[0].detail
    with pytest.raises(UserError, match="unknown dataset"):
        check_datasets(["nope"], data_root, cache, {})
    with pytest.raises(UserError, match="no split 'val'"):
        check_dataset(get_dataset("gta5"), data_root / "GTA5", "val")


def test_check_limit_and_workers(written):
    data_root, cache, _ = written
    spec = get_dataset("cityscapes")
    root = dataset_root(spec, data_root, {}, cache)
    limited = check_dataset(spec, root, ["val"], limit=1)
    assert limited.splits[0].checked == 1 and limited.splits[0].images == 2
    assert len([p for p in limited.errors if p.kind == "off-table"]) == 1
    assert "1 decoded" in format_reports([limited])
    threaded = check_dataset(spec, root, limit=None, workers=2)
    serial = check_dataset(spec, root)
    assert threaded.problems == serial.problems


def test_fixture_files_are_tiny(written):
    data_root, cache, _ = written
    sizes = [p.stat().st_size for base in (data_root, cache) for p in base.rglob("*") if p.is_file()]
    assert max(sizes) < 20_000 and sum(sizes) < 1_000_000


# --- images without labels (data.missing_labels) -------------------------------------------------------------------

BDD_VAL = ["7d06fefd-f7be05a6", "7d128593-0ccfea4c", "7d15b18b-1e0d6e3f", "7d2f7975-e0c1c5a7", "7d4a9094-0455564b"]


@pytest.fixture
def bdd_without_some_labels(tmp_path) -> Path:
    """A BDD100K val split of 5 images whose masks for 2 are missing, as in the pre-2021 image zip
    (bdd100k/bdd100k#103)."""
    root = tmp_path / "data"
    for i, name in enumerate(BDD_VAL):
        fx.write_rgb(root / "bdd100k" / "images" / "10k" / "val" / f"{name}.jpg", fx.random_image(27, 48, i), "JPEG")
        if i not in (1, 3):
            fx.write_grey(root / "bdd100k" / "labels" / "sem_seg" / "masks" / "val" / f"{name}.png",
                          fx.stripes(fx.TRAIN_IDS, 27, 48))
    return root


def bdd_real_data(root: Path, **data: str):
    import torch

    from kdbench.config import Config
    from kdbench.data.real.access import RealData
    from kdbench.engine.distributed import DistInfo

    cfg = Config()
    cfg.data.root = str(root)
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return RealData(cfg, torch.device("cpu"), DistInfo())


def test_images_without_labels_refuse_the_split_by_default(bdd_without_some_labels):
    with pytest.raises(UserError) as err:
        bdd_real_data(bdd_without_some_labels).items("bdd100k", "val")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("dataset bdd100k: 2 val image(s) have no label file, e.g. ")
    assert f"{BDD_VAL[1]}.jpg" in message and "data.missing_labels=skip" in message


def test_missing_labels_skip_leaves_them_out_and_counts_them(bdd_without_some_labels):
    data = bdd_real_data(bdd_without_some_labels, missing_labels="skip")
    assert data.images_without_labels(["bdd100k"]) == {}
    with pytest.warns(UserWarning, match=r"bdd100k: 2 val image\(s\) without a label file left out "
                                         rf"\(data.missing_labels=skip\), e.g. .*{BDD_VAL[1]}\.jpg"):
        items = data.items("bdd100k", "val")
    assert [item.image.stem for item in items] == [BDD_VAL[0], BDD_VAL[2], BDD_VAL[4]]
    assert all(item.label is not None for item in items)
    assert data.images_without_labels(["bdd100k", "cityscapes"]) == {"bdd100k/val": 2}
    assert data.images_without_labels(["cityscapes"]) == {}


def test_missing_labels_setting_is_checked():
    from kdbench.config import Config, apply_set, validate

    cfg = Config()
    assert cfg.data.missing_labels == "error"
    apply_set(cfg, "data.missing_labels=skip")
    validate(cfg)
    apply_set(cfg, "data.missing_labels=ignore")
    with pytest.raises(UserError, match="data.missing_labels must be one of error, skip, got 'ignore'"):
        validate(cfg)


def test_check_names_images_without_labels_and_the_setting(bdd_without_some_labels):
    from click.testing import CliRunner

    from kdbench.cli import cli

    result = CliRunner().invoke(cli, ["data", "check", "--datasets", "bdd100k", "--path",
                                      f"bdd100k={bdd_without_some_labels / 'bdd100k'}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "image without label: 2 file(s)" in result.output
    assert f"images/10k/val/{BDD_VAL[1]}.jpg" in result.output and f"images/10k/val/{BDD_VAL[3]}.jpg" in result.output
    assert "--set data.missing_labels=skip leaves these images out" in result.output
