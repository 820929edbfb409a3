"""``kdbench data check`` on the RAW downloads of the datasets ``data prepare`` converts (issue 19, point 2): a
correct raw download is a note, not an error; seeded faults (a truncated label, an off-table ISPRS colour, an
off-table Mapillary id, a label of another size, a missing label, a truncated tile inside an official zip) are each
named, and the decoys (a correct file with an alarming name, files prepare never reads) are not."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kdbench.cli import cli
from kdbench.data.real.check import check_datasets
from kdbench.testing import fixtures as fx
from kdbench.testing import raw_fixtures as rf

RAW = ["mapillary", "potsdam-rgb", "potsdam-irrg", "vaihingen-irrg"]
DECOY_ID = "corrupt-truncated-bad00"  # a correct image and label, named to look broken
NO_LABEL_ID = "nolabel-image-000000001"
MAPILLARY_IDS = (*rf.MAPILLARY_IDS, DECOY_ID, NO_LABEL_ID)
TRAINING = sorted(rf.MAPILLARY_TRAINING_IDS)  # the held-out slice of these 12: the last 2


def check(data: Path, cache: Path, *extra: str):
    return CliRunner().invoke(cli, ["data", "check", "--datasets", ",".join(RAW), "--data-root", str(data),
                                    "--cache", str(cache), *extra])


def write_clean(data: Path) -> None:
    """Correct raw downloads: Mapillary v1.2, Potsdam in the official zips, Vaihingen extracted."""
    rf.write_mapillary(data / "mapillary", ids=MAPILLARY_IDS, out_of_range=False)
    rf.write_potsdam(data / "potsdam", zipped=True, off_table=False)
    rf.write_vaihingen(data / "vaihingen", off_table=False)


def tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


def replace_member(archive: Path, member: str, data: bytes) -> None:
    """Rewrites ``archive`` with ``member`` holding ``data`` (every other member as it was)."""
    with zipfile.ZipFile(archive) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    assert member in members
    members[member] = data
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)


def seed_faults(data: Path) -> dict[str, list[str]]:
    """Breaks the clean downloads; returns, per dataset, the names of the faulty files ``check`` must print."""
    mapillary = data / "mapillary" / "validation"
    truncated = mapillary / "labels" / f"{rf.MAPILLARY_IDS[0]}.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    off_ids = rf.mapillary_ids_map(64, 48, out_of_range=False)
    off_ids[5, 7] = 77  # v1.2 has ids 0..65
    fx.write_palette(mapillary / "labels" / f"{rf.MAPILLARY_IDS[1]}.png", off_ids, rf.MAPILLARY_COLOURS)
    (mapillary / "labels" / f"{NO_LABEL_ID}.png").unlink()
    training = data / "mapillary" / "training" / "labels"
    off_ids[5, 7] = 99
    fx.write_palette(training / f"{TRAINING[-1]}.png", off_ids, rf.MAPILLARY_COLOURS)  # in the held-out slice
    before_slice = training / f"{TRAINING[-3]}.png"  # prepare never reads it: broken, it must not be reported
    before_slice.write_bytes(before_slice.read_bytes()[:200])

    label_zip = data / "potsdam" / "5_Labels_all_noBoundary.zip"
    small = rf.isprs_label(64, 40, off_table=False)
    replace_member(label_zip, "5_Labels_all_noBoundary/top_potsdam_2_13_label_noBoundary.tif", tiff(small))
    irrg_zip = data / "potsdam" / "3_Ortho_IRRG.zip"
    with zipfile.ZipFile(irrg_zip) as zf:
        whole = zf.read("3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif")
    replace_member(irrg_zip, "3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif", whole[:len(whole) // 3])

    vaihingen = data / "vaihingen"
    colours = rf.isprs_label(64, 64, off_table=False)
    colours[10:12, 20:22] = (255, 0, 255)
    (vaihingen / "top_mosaic_09cm_area2_noBoundary.tif").write_bytes(tiff(colours))
    # area9 has no image, so prepare never reads its ground truth: broken, it must still not be reported
    (vaihingen / "top_mosaic_09cm_area9_noBoundary.tif").write_bytes(tiff(rf.isprs_label(40, 40)))
    size_detail = ("2_Ortho_RGB.zip:2_Ortho_RGB/top_potsdam_2_13_RGB.tif is 64×64, 5_Labels_all_noBoundary.zip:"
                   "5_Labels_all_noBoundary/top_potsdam_2_13_label_noBoundary.tif is 64×40")
    return {
        "mapillary": [f"validation/labels/{rf.MAPILLARY_IDS[0]}.png",
                      f"validation/labels/{rf.MAPILLARY_IDS[1]}.png: values 77",
                      f"validation/images/{NO_LABEL_ID}.jpg", f"training/labels/{TRAINING[-1]}.png: values 99"],
        "potsdam-rgb": [size_detail],
        "potsdam-irrg": [size_detail.replace("2_Ortho_RGB", "3_Ortho_IRRG").replace("_RGB.tif", "_IRRG.tif"),
                         "3_Ortho_IRRG.zip:3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif"],
        "vaihingen-irrg": ["top_mosaic_09cm_area2_noBoundary.tif: colours (255,0,255)"],
    }


def test_correct_raw_downloads_are_a_note_not_an_error(tmp_path):
    write_clean(tmp_path / "data")
    result = check(tmp_path / "data", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert result.output.count("raw OK; run kdbench data prepare") == len(RAW)
    assert "error:" not in result.output and "Traceback" not in result.output
    assert "train 1/24 tiles" in result.output and "val 4/2000 images, 4 labels" in result.output
    assert "train 2/500 images, 2 labels" in result.output  # Mapillary's held-out training slice, its target-val
    assert "the last 2 of the 12 images in training/images are its target-val" in result.output
    assert "Raw downloads OK, not converted yet: " + ", ".join(RAW) in result.output
    assert not (tmp_path / "cache").exists()  # check never writes


def test_every_seeded_fault_is_named_and_no_decoy(tmp_path):
    data = tmp_path / "data"
    write_clean(data)
    faults = seed_faults(data)
    result = check(data, tmp_path / "cache")
    assert result.exit_code == 1 and "Traceback" not in result.output
    for name, files in faults.items():
        for text in files:
            assert text in result.output, (name, text, result.output)
    for decoy in (DECOY_ID, "area9", "area1", TRAINING[-3], "v2.0", "top_potsdam_2_10_RGB", "2_10_label"):
        assert decoy not in result.output, decoy
    assert "raw OK" not in result.output
    assert "kdbench data prepare refuses them" in result.output  # what to do about the image without a label

    kinds = {r.name: sorted(p.kind for p in r.errors) for r in check_datasets(RAW, data, tmp_path / "cache", {})}
    assert kinds == {"mapillary": ["no-label", "off-table", "off-table", "unreadable"],
                     "potsdam-rgb": ["size-mismatch"], "potsdam-irrg": ["size-mismatch", "unreadable"],
                     "vaihingen-irrg": ["off-table"]}


@pytest.mark.parametrize("workers", ["2", "5"])
def test_workers_give_the_same_report_in_the_same_order(tmp_path, workers):
    data = tmp_path / "data"
    write_clean(data)
    seed_faults(data)
    serial = check(data, tmp_path / "cache")
    threaded = check(data, tmp_path / "cache", "--workers", workers)
    assert threaded.exit_code == serial.exit_code == 1
    assert threaded.output == serial.output


def test_prepared_data_is_checked_instead_of_the_raw_download(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_clean(data)
    seed_faults(data)
    fx.make_mapillary_prepared(cache / "mapillary", off_table=False)
    result = CliRunner().invoke(cli, ["data", "check", "--datasets", "mapillary", "--data-root", str(data),
                                      "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert f"mapillary at {cache / 'mapillary'}" in result.output and "raw" not in result.output


def test_interrupted_conversion_checks_the_raw_download(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_potsdam(data / "potsdam", size=1024, off_table=False)
    args = ["--datasets", "potsdam-rgb", "--data-root", str(data), "--cache", str(cache)]
    assert CliRunner().invoke(cli, ["data", "prepare", *args]).exit_code == 0
    (cache / "potsdam" / "RGB" / ".kdbench-prepare" / "done.json").unlink()
    result = CliRunner().invoke(cli, ["data", "check", *args])
    assert result.exit_code == 0, result.output
    assert "potsdam-rgb (raw download)" in result.output and "was interrupted; kdbench data prepare finishes it" in (
        result.output)


def test_no_raw_download_and_nothing_prepared_is_one_error(tmp_path):
    result = CliRunner().invoke(cli, ["data", "check", "--datasets", "vaihingen-irrg", "--data-root",
                                      str(tmp_path / "data"), "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not prepared (nothing in" in result.output and "raw download was not found" in result.output
