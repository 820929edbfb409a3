"""``kdbench data prepare`` goes on after a dataset fails (issue 19, point 3): the others are converted, the run
ends with one readable line per dataset and exits 1; ``--workers`` reaches the conversion and changes nothing in
what is written."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.data.real import prepare
from kdbench.data.real.prepare import is_prepared
from kdbench.testing import raw_fixtures as rf

NAMES = ["mapillary", "potsdam-irrg", "potsdam-rgb", "vaihingen-irrg", "cityscapes"]


def prepare_cli(data: Path, cache: Path, *extra: str):
    return CliRunner().invoke(cli, ["data", "prepare", "--datasets", ",".join(NAMES), "--data-root", str(data),
                                    "--cache", str(cache), *extra])


def write_raw(data: Path) -> None:
    """Mapillary with a truncated label (fails while converting), Potsdam without its IRRG tiles (potsdam-irrg
    fails while locating its inputs), Potsdam RGB and Vaihingen correct, at the 512 px patch size."""
    rf.write_mapillary(data / "mapillary")
    label = data / "mapillary" / "validation" / "labels" / f"{rf.MAPILLARY_IDS[1]}.png"
    label.write_bytes(label.read_bytes()[:150])
    rf.write_potsdam(data / "potsdam", size=1024)
    shutil.rmtree(data / "potsdam" / "3_Ortho_IRRG")
    rf.write_vaihingen(data / "vaihingen", areas={"area1": (600, 512), "area2": (512, 512)})


def test_a_failure_does_not_stop_the_others(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_raw(data)
    result = prepare_cli(data, cache)
    assert result.exit_code == 1
    out = result.output
    assert "Traceback" not in out and "PrepareSummary(" not in out and "DatasetResult(" not in out
    summary = out[out.index("Summary (prepared data in"):].splitlines()[1:]
    assert [line.split(":")[0].strip() for line in summary[:len(NAMES)]] == NAMES
    lines = dict(zip(NAMES, summary, strict=False))
    assert lines["mapillary"].startswith("  mapillary: FAILED: cannot read ") and rf.MAPILLARY_IDS[1] in (
        lines["mapillary"])
    assert lines["potsdam-irrg"].startswith("  potsdam-irrg: FAILED: no Potsdam IRRG tiles in ")
    assert lines["potsdam-rgb"] == (f"  potsdam-rgb: prepared in {cache / 'potsdam' / 'RGB'}: 2 tiles converted, "
                                    "0 skipped (done before) (train 4, val 4); the full official data gives train "
                                    "3456, val 2016")
    assert lines["vaihingen-irrg"].startswith(f"  vaihingen-irrg: prepared in {cache / 'vaihingen'}: 2 tiles "
                                              "converted, 0 skipped (done before) (train 2, val 1)")
    assert lines["cityscapes"] == "  cityscapes: nothing to prepare (read as it is from the data root)"
    assert out.rstrip().splitlines()[-1].startswith(
        "Error: 2 of 5 dataset(s) failed to prepare: mapillary, potsdam-irrg")
    assert is_prepared("potsdam-rgb", cache) and is_prepared("vaihingen-irrg", cache)
    assert not is_prepared("mapillary", cache) and not is_prepared("potsdam-irrg", cache)

    again = prepare_cli(data, cache)  # the finished ones are skipped, the broken ones tried again
    assert again.exit_code == 1
    assert "potsdam-rgb: already prepared in" in again.output and "skipped (2 tiles done before)" in again.output
    assert "mapillary: FAILED" in again.output


def test_all_good_exits_zero(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_mapillary(data / "mapillary")
    result = CliRunner().invoke(cli, ["data", "prepare", "--datasets", "mapillary,gta5", "--data-root", str(data),
                                      "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert "  mapillary: prepared in" in result.output and "4 images converted" in result.output
    assert "(train 2, val 2)" in result.output  # the 2 validation images and the held-out 2 of 12 training images


def test_workers_reach_the_conversion_and_change_nothing(tmp_path, monkeypatch):
    data = tmp_path / "data"
    rf.write_potsdam(data / "potsdam", tiles=("2_10", "2_11", "2_13", "3_13"), size=1024)
    seen: list[int] = []
    convert_all = prepare._convert_all

    def recording(plan, records, todo, workers):
        seen.append(workers)
        return convert_all(plan, records, todo, workers)

    monkeypatch.setattr(prepare, "_convert_all", recording)
    outputs = {}
    for workers in ("1", "3"):
        cache = tmp_path / f"cache{workers}"
        result = CliRunner().invoke(cli, ["data", "prepare", "--datasets", "potsdam-rgb", "--data-root", str(data),
                                          "--cache", str(cache), "--workers", workers])
        assert result.exit_code == 0, result.output
        folder = cache / "potsdam" / "RGB"
        outputs[workers] = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.png"))}
    assert seen == [1, 3]
    assert len(outputs["1"]) == 4 * 4 * 2 and outputs["1"] == outputs["3"]
