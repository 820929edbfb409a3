"""Validation splits of the real datasets (issue 15, item 3): every dg5 dataset's training split cut once into
training images and a held-out slice (source-val of a source, target-val of a target), never in a test split and
never in a training stream, and scored in every dg5 run."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import Config
from kdbench.data.real.access import RealData
from kdbench.data.real.catalog import DATASETS
from kdbench.data.real.holdout import VAL_MAX, hold_out, val_count
from kdbench.engine.distributed import DistInfo
from kdbench.errors import UserError
from kdbench.launch import Workspace
from kdbench.suite import load_suite
from kdbench.testing.fixtures import make_all, random_image, stripes, write_grey, write_rgb
from kdbench.testing.weights import write_official_weights

DG5 = load_suite("dg5")
SOURCES = sorted({b.source for b in DG5.benchmarks.values()})
KINDS = ("source", "source-images")  # every kind a stream reads of the source's training split


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    make_all(root / "data", root / "prepared", off_table=False)
    return root / "data", root / "prepared"


def real_data(root: Path, cache: Path | None = None, **settings: int) -> RealData:
    cfg = Config()
    cfg.data.root, cfg.data.cache_dir, cfg.data.workers = str(root), str(cache or ""), 0
    cfg.data.train_images, cfg.eval.images = settings.get("train_images", 0), settings.get("eval_images", 0)
    return RealData(cfg, torch.device("cpu"), DistInfo())


def images(items) -> set[Path]:
    return {item.image for item in items}


def streamed_images(data: RealData, source: str, kind: str, batches: int, batch_size: int) -> list[Path]:
    """Every image file a training stream of ``kind`` reads while serving ``batches`` batches."""
    stream = data.stage_data(source).batches(kind, batch_size, seed=3)
    read, seen = stream.dataset.read_image, []

    def recording(path: Path) -> np.ndarray:
        seen.append(Path(path))
        return read(path)

    stream.dataset.read_image = recording
    for _ in range(batches):
        next(stream)
    return seen


# --- the rule --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "held"), [(0, 0), (1, 0), (2, 1), (10, 1), (11, 2), (344, 35), (400, 40),
                                         (2975, 298), (3456, 346), (7000, 500), (24966, 500)])
def test_val_count_is_a_tenth_rounded_up_at_most_500(n, held):
    assert val_count(n) == held
    assert VAL_MAX == 500


def test_hold_out_keeps_the_last_images_of_the_sorted_list():
    train, val = hold_out(list(range(23)))
    assert (train, val) == (list(range(20)), [20, 21, 22])
    assert hold_out(["only"]) == (["only"], [])


# --- on the dg5 fixtures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bench", sorted(DG5.benchmarks))
def test_no_image_is_in_two_of_train_val_test(data, bench):
    rd = real_data(*data)
    benchmark = DG5.benchmarks[bench]
    source = benchmark.source
    train = images(rd.train_items(source, "source"))
    val, test = images(rd.val_items(source)), images(rd.test_items(source))
    assert train and val and test
    assert not train & val and not val & test
    if DATASETS[source].eval_split == DATASETS[source].train_split:
        # a synthetic source (GTA5) has no held-out test split: its in-domain score is on its training images
        assert test <= train
    else:
        assert not train & test
    for target in benchmark.targets:
        target_test = images(rd.test_items(target))
        assert target_test and not target_test & (train | val)
        assert rd.has_val(target)
        target_val = images(rd.val_items(target))
        assert target_val and not target_val & target_test and not target_val & train
        if DATASETS[target].held_out:  # Mapillary: no image id in both its converted slice and its test split
            assert not {p.stem for p in target_val} & {p.stem for p in target_test}


def test_every_val_image_comes_from_its_datasets_training_split(data):
    rd = real_data(*data)
    for name in {d for b in DG5.benchmarks.values() for d in b.domains}:
        spec = DATASETS[name]
        split = images(rd.items(name, spec.val_split))
        if spec.held_out:  # converted from the held-out slice only: all of it, never cut again
            assert spec.val_split == "train" and spec.train_split is None, name
            assert images(rd.val_items(name)) == split and len(split) == 2, name
        else:
            assert spec.val_split == spec.train_split and images(rd.val_items(name)) < split, name
        for other in spec.split_names:
            if other != spec.val_split and spec.split(other).labelled:
                assert not images(rd.val_items(name)) & images(rd.items(name, other)), (name, other)


def test_cityscapes_has_one_slice_for_both_of_its_roles(data):
    # the citys2acdc source holds it out of training; the gtav target scores it as target-val
    rd = real_data(*data)
    assert {b.source for b in DG5.benchmarks.values()} >= {"cityscapes"}
    assert any("cityscapes" in b.targets for b in DG5.benchmarks.values())
    other = real_data(*data, train_images=1, eval_images=0)
    assert images(rd.val_items("cityscapes")) == images(other.val_items("cityscapes"))
    assert not images(rd.val_items("cityscapes")) & images(rd.train_items("cityscapes", "source"))


def test_potsdam_irrg_target_val_tiles_are_never_trained_on_in_rgb(data):
    rd = real_data(*data)
    keys = {name: {item.image.name for item in rd.val_items(name)} for name in ("potsdam-rgb", "potsdam-irrg")}
    assert keys["potsdam-rgb"] == keys["potsdam-irrg"]
    assert not keys["potsdam-irrg"] & {item.image.name for item in rd.train_items("potsdam-rgb", "source")}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_training_stream_never_yields_a_held_out_image(data, source, kind):
    rd = real_data(*data)
    seen = set(streamed_images(rd, source, kind, batches=2, batch_size=2))
    assert seen == images(rd.train_items(source, kind))
    assert not seen & images(rd.val_items(source))


def test_a_dataset_without_a_val_split_is_a_one_line_error(data):
    with pytest.raises(UserError, match="dataset rescuenet has no validation split") as err:
        real_data(*data).val_items("rescuenet")
    assert "\n" not in str(err.value)


def test_mapillary_target_val_is_its_converted_slice_read_in_full(data):
    rd = real_data(*data)
    val = [item.image for item in rd.val_items("mapillary")]
    assert [p.parent.name for p in val] == ["train_img", "train_img"]  # both, not val_count(2) = 1 of them
    assert len(val) == 2 and val_count(2) == 1
    assert not set(val) & images(rd.test_items("mapillary"))


def test_a_missing_training_folder_of_a_target_is_named(data, tmp_path):
    root, cache = data
    copy = real_data(root, cache)
    copy.cfg.data.paths = {"bdd100k": str(tmp_path)}
    with pytest.raises(UserError, match=r"bdd100k: folder .* not found .*eval\.validate=false"):
        copy.val_items("bdd100k")


def test_validation_is_off_with_eval_validate_false(data):
    rd = real_data(*data)
    for validate in (True, False):
        rd.cfg.eval.validate = validate
        ws = SimpleNamespace(cfg=rd.cfg, real=rd)
        assert Workspace.has_val(ws, "cityscapes") is validate
        assert Workspace.has_val(ws, "mapillary") is validate


# --- a larger split: the slice's place and size, the bounds ------------------------------------------------------

@pytest.fixture(scope="module")
def gta12(tmp_path_factory) -> Path:
    """A GTA5 folder of 12 frames (converted train-id labels): 2 held out."""
    folder = tmp_path_factory.mktemp("gta12")
    for i in range(12):
        name = f"{i + 1:05d}"
        write_rgb(folder / "images" / f"{name}.png", random_image(32, 64, 100 + i))
        write_grey(folder / "labels" / f"{name}_labelTrainIds.png", stripes(range(19), 32, 64, reverse=bool(i % 2)))
    return folder


def gta12_data(folder: Path, **settings: int) -> RealData:
    rd = real_data(folder.parent, **settings)
    rd.cfg.data.paths = {"gta5": str(folder)}
    return rd


@pytest.mark.parametrize("kind", KINDS)
def test_streams_over_several_epochs_read_every_training_frame_and_no_held_out_one(gta12, kind):
    rd = gta12_data(gta12)
    assert [p.image.name for p in rd.val_items("gta5")] == ["00011.png", "00012.png"]
    seen = streamed_images(rd, "gta5", kind, batches=6, batch_size=5)  # 3 epochs of the 10 training frames
    assert len(seen) == 30 and set(seen) == images(rd.train_items("gta5", kind))
    assert {p.name for p in seen} == {f"{i:05d}.png" for i in range(1, 11)}


def test_train_and_eval_limits_never_reach_into_the_slice(gta12):
    rd = gta12_data(gta12, train_images=4, eval_images=1)
    assert [p.image.name for p in rd.train_items("gta5", "source")] == [f"{i:05d}.png" for i in range(1, 5)]
    assert [p.image.name for p in rd.val_items("gta5")] == ["00011.png"]  # eval.images bounds val too
    assert [p.image.name for p in rd.test_items("gta5")] == ["00001.png"]
    everything = gta12_data(gta12)
    assert len(everything.test_items("gta5")) == 10 and len(everything.val_items("gta5")) == 2
    assert rd.stage_data("gta5").size("source") == 4


# --- end to end ----------------------------------------------------------------------------------------------------

def test_dg5_run_records_val_rows_for_source_and_targets(data, tmp_path):
    root, cache = data
    weights = [f"weights.{m}={write_official_weights(m, tmp_path / f'{m}.pth')}" for m in ("tiny-dinov2", "tiny-deit")]
    out = tmp_path / "results"
    sets = ["head=light", f"data.cache_dir={cache}", "data.workers=0", "train.steps=2", "train.batch_size=2",
            "pretrain.head_steps=2", "pretrain.batch_size=2", *weights]
    args = ["run", "--suite", "dg5", "--data-root", str(root), "--benchmarks", "potsdam,gtav", "--pairs",
            "tiny-real-f2l", "--methods", "cwd", "--seeds", "0", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for p in sorted(out.rglob("records.jsonl")) for line in p.read_text().splitlines()]
    rows = {(r["benchmark"], r["method"], r["domain"], r["role"], r["split"]) for r in records}
    expected = set()
    for bench in ("potsdam", "gtav"):
        b = DG5.benchmarks[bench]
        for method in ("teacher", "cwd"):
            for domain in b.domains:
                role = "source" if domain == b.source else "target"
                expected.add((bench, method, domain, role, "test"))
                expected.add((bench, method, domain, role, "val"))
    assert rows == expected
    val = [r for r in records if r["split"] == "val"]
    # one held-out image per fixture training split; Mapillary's converted slice of 2 is scored whole
    assert {r["images"] for r in val if r["domain"] != "mapillary"} == {1}
    assert {r["images"] for r in val if r["domain"] == "mapillary"} == {2}
    assert {r["benchmark"] for r in val if r["domain"] == "mapillary"} == {"gtav"}
