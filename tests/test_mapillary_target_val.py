"""Mapillary's target-val: ``data prepare`` converts the held-out slice of its *raw* training list (the last
``val_count(n)`` of the n sorted raw images) beside its validation copies, the loaders read that slice in full and
never cut it again, ``data check`` reports it, a download without a training folder keeps what worked before (one
line, no target-val), an earlier conversion gains the slice without redoing its validation images, and only the
runs that score Mapillary change identity."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import Config
from kdbench.data.real import holdout, prepare_io
from kdbench.data.real.access import RealData
from kdbench.data.real.catalog import get_dataset
from kdbench.data.real.check import check_datasets
from kdbench.data.real.prepare import ALREADY, FAILED, PREPARED_NOW, prepare_datasets
from kdbench.engine.distributed import DistInfo
from kdbench.launch import expand, holdout_identity, run_identity
from kdbench.suite import load_suite
from kdbench.testing import raw_fixtures as rf

TRAINING = sorted(rf.MAPILLARY_TRAINING_IDS)


def quiet(_: str) -> None:
    pass


def real_data(data: Path, cache: Path) -> RealData:
    cfg = Config()
    cfg.data.root, cfg.data.cache_dir, cfg.data.workers = str(data), str(cache), 0
    return RealData(cfg, torch.device("cpu"), DistInfo())


def converted(cache: Path, split: str) -> list[str]:
    return sorted(p.stem for p in (cache / "mapillary" / "half" / f"{split}_img").glob("*.jpg"))


def test_prepare_converts_the_slice_of_the_raw_list_and_the_loader_reads_it_whole(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_mapillary(data / "mapillary")
    summary = prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)
    assert summary["mapillary"].counts == {"train": 2, "val": 2}
    assert converted(cache, "train") == TRAINING[-2:]  # val_count(12) = 2: the last two of the sorted raw list
    assert sorted(p.stem for p in (cache / "mapillary" / "half" / "train_label").glob("*.png")) == TRAINING[-2:]
    rd = real_data(data, cache)
    assert rd.has_val("mapillary")
    val = [item.image.stem for item in rd.val_items("mapillary")]
    assert val == TRAINING[-2:]  # re-cut from the converted 2 it would be val_count(2) = 1
    assert not set(val) & {item.image.stem for item in rd.test_items("mapillary")}
    assert [item.image.stem for item in rd.test_items("mapillary")] == sorted(rf.MAPILLARY_IDS)
    (report,) = check_datasets(["mapillary"], data, cache, {})
    assert report.ok and not report.raw
    assert {(s.split, s.images, s.labels, s.official) for s in report.splits} == {("val", 2, 2, 2000),
                                                                                   ("train", 2, 2, 500)}


def test_the_slice_follows_the_rule_on_the_raw_list_length(tmp_path, monkeypatch):
    counted: list[int] = []

    def five(n: int) -> int:
        counted.append(n)
        return 5

    monkeypatch.setattr(holdout, "val_count", five)
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_mapillary(data / "mapillary")
    prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)
    assert counted == [12]  # the raw training list's length, never a converted subset's
    assert converted(cache, "train") == TRAINING[-5:]
    assert len(real_data(data, cache).val_items("mapillary")) == 5


def test_a_download_without_a_training_folder_keeps_what_worked(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_mapillary(data / "mapillary", training=None)
    lines: list[str] = []
    summary = prepare_datasets(["mapillary"], data, cache, {}, echo=lines.append)
    assert summary["mapillary"].status == PREPARED_NOW and summary["mapillary"].counts == {"val": 2}
    notes = [line for line in lines if "no training/images" in line]
    assert len(notes) == 1 and "no target-val" in notes[0]
    assert not (cache / "mapillary" / "half" / "train_img").exists()
    again = prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)["mapillary"]
    assert again.status == ALREADY and "no target-val" in again.line() and "\n" not in again.line()

    rd = real_data(data, cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not rd.has_val("mapillary") and not rd.has_val("mapillary")
    assert len(caught) == 1 and "mapillary: no validation images" in str(caught[0].message)
    assert "\n" not in str(caught[0].message)
    assert len(rd.test_items("mapillary")) == 2

    result = CliRunner().invoke(cli, ["data", "check", "--datasets", "mapillary", "--data-root", str(data),
                                      "--cache", str(cache)])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "warning: no target-val: " in result.output and "half/train_img not found" in result.output


def test_a_broken_training_folder_is_one_line_naming_it(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_mapillary(data / "mapillary")
    shutil.rmtree(data / "mapillary" / "training" / "labels")
    failed = prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)["mapillary"]
    assert failed.status == FAILED and "no label folder for" in failed.note and "training/images" in failed.note
    assert "\n" not in failed.line()
    rf.write_mapillary(data / "mapillary")
    (data / "mapillary" / "training" / "labels" / f"{TRAINING[-1]}.png").unlink()
    (data / "mapillary" / "training" / "labels" / f"{TRAINING[0]}.png").unlink()  # not held out: never looked up
    failed = prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)["mapillary"]
    assert failed.status == FAILED and f"{TRAINING[-1]}.png" in failed.note and TRAINING[0] not in failed.note


def test_an_earlier_conversion_gains_the_slice_without_redoing_validation(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    rf.write_mapillary(data / "mapillary")
    aside = tmp_path / "training"
    shutil.move(data / "mapillary" / "training", aside)
    # the validation-only conversion is what the previous version wrote: the same unit keys, records and marker
    assert prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)["mapillary"].counts == {"val": 2}
    before = {p: p.stat().st_mtime_ns for p in (cache / "mapillary" / "half").rglob("*") if p.is_file()}
    shutil.move(aside, data / "mapillary" / "training")

    read = prepare_io.Source.read_image

    def training_only(self):
        assert "validation" not in self.path.parts, f"validation image re-read: {self.path}"
        return read(self)

    monkeypatch.setattr(prepare_io.Source, "read_image", training_only)
    summary = prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)["mapillary"]
    assert summary.status == PREPARED_NOW and (summary.converted, summary.written) == (2, 4)
    assert summary.counts == {"train": 2, "val": 2}
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the validation copies untouched
    assert converted(cache, "train") == TRAINING[-2:]
    assert prepare_datasets(["mapillary"], data, cache, {}, echo=quiet)["mapillary"].status == ALREADY


def test_only_runs_scoring_mapillary_change_identity():
    suite = load_suite("dg5")
    assert get_dataset("mapillary").held_out == "train"
    for bench in suite.benchmarks.values():
        rule = holdout_identity(bench.domains)
        if "mapillary" in bench.domains:
            assert rule != holdout.RULE and rule.startswith(holdout.RULE) and "mapillary" in rule
        else:  # nothing they train on or score changed: same identity as before the Mapillary slice
            assert rule == holdout.RULE
    for job in expand(Config(), suite, ["gtav", "citys2acdc"], ["f2l-dinov2-b-deit-s"], ["cwd"]):
        identity = run_identity(job, Config(), suite)
        assert identity["data"]["holdout"] == holdout_identity(job.benchmark.domains)
