"""The real-data path used as a researcher would, through the CLI, on fixture copies of the datasets: `kdbench data
check`, `kdbench data prepare`, and `kdbench run --suite dg5` with tiny models in the official weight formats."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.errors import UserError
from kdbench.testing.fixtures import make_all
from kdbench.testing.raw_fixtures import write_potsdam
from kdbench.testing.weights import write_official_weights

ISPRS = ["impervious_surface", "building", "low_vegetation", "tree", "car", "clutter"]  # mmseg names


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    make_all(root / "data", root / "prepared", off_table=False)
    return root / "data", root / "prepared"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("weights")
    return [f"weights.{m}={write_official_weights(m, folder / f'{m}.pth')}" for m in ("tiny-dinov2", "tiny-deit")]


def test_data_check_reports_every_dg5_dataset(data):
    root, cache = data
    result = invoke("data", "check", "--data-root", str(root), "--cache", str(cache))
    assert result.exit_code == 0, result.output
    for name in ("gta5", "cityscapes", "bdd100k", "mapillary", "acdc-night", "acdc-snow", "acdc-fog", "acdc-rain",
                 "potsdam-rgb", "potsdam-irrg", "vaihingen-irrg"):
        assert name in result.output
    assert "synthia" not in result.output  # not a dg5 dataset


def test_data_check_names_a_broken_dataset_and_fails(tmp_path):
    make_all(tmp_path / "data", tmp_path / "prepared", off_table=True)
    result = invoke("data", "check", "--datasets", "gta5", "--data-root", str(tmp_path / "data"),
                    "--cache", str(tmp_path / "prepared"))
    assert result.exit_code == 1
    assert "gta5" in result.output and "Traceback" not in result.output


def test_data_check_without_a_root_is_a_one_line_error():
    result = invoke("data", "check")
    assert result.exit_code == 1 and "Error: give --data-root" in result.output


def test_data_prepare_converts_raw_potsdam_into_the_cache_only(tmp_path):
    raw = tmp_path / "data"
    write_potsdam(raw / "potsdam", size=1024)  # 2×2 patches of 512 per tile
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    args = ("data", "prepare", "--datasets", "potsdam-rgb,potsdam-irrg", "--data-root", str(raw),
            "--cache", str(tmp_path / "cache"))
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == before
    for modality in ("RGB", "IRRG"):
        for split, tile in (("train", "2_10"), ("val", "2_13")):
            folder = tmp_path / "cache" / "potsdam" / modality / "ann_dir" / split
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                f"{tile}_{x}_{y}_{x + 512}_{y + 512}.png" for x in (0, 512) for y in (0, 512))
    again = invoke(*args)
    assert again.exit_code == 0 and "already prepared" in again.output


def test_an_interrupted_conversion_is_refused_by_name(data, tmp_path):
    from kdbench.config import Config
    from kdbench.data.real.access import RealData
    from kdbench.engine.distributed import DistInfo

    raw = tmp_path / "data"
    write_potsdam(raw / "potsdam", size=1024)
    assert invoke("data", "prepare", "--datasets", "potsdam-rgb", "--data-root", str(raw), "--cache",
                  str(tmp_path / "cache")).exit_code == 0
    (tmp_path / "cache" / "potsdam" / "RGB" / ".kdbench-prepare" / "done.json").unlink()
    cfg = Config()
    cfg.data.root, cfg.data.cache_dir = str(raw), str(tmp_path / "cache")
    with pytest.raises(UserError, match="potsdam-rgb: the conversion .* was interrupted"):
        RealData(cfg, torch.device("cpu"), DistInfo()).items("potsdam-rgb", "train")


def test_dg5_run_trains_and_scores_every_domain_under_gkd_512(data, weights, tmp_path):
    root, cache = data
    out = tmp_path / "results"
    sets = ["head=mask2former-tiny", f"data.cache_dir={cache}", "data.workers=0", "train.steps=2",
            "train.batch_size=2", "pretrain.head_steps=2", "pretrain.batch_size=2", "train.log_every=1",
            "train.stages.domain-agnostic.epochs=null", "train.stages.domain-agnostic.steps=2",
            "train.stages.domain-agnostic.batch_size=2", *weights]
    args = ["run", "--suite", "dg5", "--preset", "paper", "--data-root", str(root), "--benchmarks", "potsdam",
            "--pairs", "tiny-real-f2l", "--methods", "gkd", "--seeds", "0", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    args += ["--set", "method.gkd.proxy_stage=off"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for p in sorted(out.rglob("records.jsonl")) for line in p.read_text().splitlines()]
    assert {(r["method"], r["domain"], r["role"]) for r in records} == {
        (m, d, role) for m in ("teacher", "gkd") for d, role in (
            ("potsdam-rgb", "source"), ("potsdam-irrg", "target"), ("vaihingen-irrg", "target"))}
    gkd = [r for r in records if r["method"] == "gkd"]
    assert all(r["protocol"] == "gkd-512" and list(r["per_class_iou"]) == ISPRS for r in gkd)
    assert "each dataset's test resize" in gkd[0]["protocol_caption"]
    assert [s["name"] for s in gkd[0]["stages"]] == ["domain-agnostic", "task"]
    assert all(r["images"] >= 1 for r in records)
    # the paper preset's stage 2 settings reached the run, the override of stage 1's length too
    config = yaml.safe_load(next(out.rglob("gkd/*/config.yaml")).read_text())["config"]
    assert config["train"]["schedule"] == "poly" and config["train"]["backbone_lr_mult"] == 0.1
    assert config["train"]["stages"]["domain-agnostic"] == {"steps": 2, "batch_size": 2, "lr": 1.25e-4,
                                                             "schedule": "cosine", "warmup": 0.0,
                                                             "backbone_lr_mult": 1.0}


def test_dg5_run_without_weights_or_data_is_a_one_line_error(data, tmp_path):
    root, _ = data
    missing = invoke("run", "--suite", "dg5", "--data-root", str(root), "--pairs", "tiny-real-f2l", "--out",
                     str(tmp_path))
    assert missing.exit_code == 1 and "set weights.tiny-dinov2=PATH" in missing.output
    wrong = invoke("run", "--suite", "dg5", "--data-root", str(root), "--pairs", "tiny-real-f2l", "--out",
                   str(tmp_path), "--set", "weights.tiny-dinov2=/nonexistent.pth")
    assert wrong.exit_code == 1 and "weights file /nonexistent.pth does not exist" in wrong.output


def test_dg5_run_without_a_data_root_stops_before_any_work(weights, tmp_path):
    args = ["run", "--suite", "dg5", "--pairs", "tiny-real-f2l", "--out", str(tmp_path / "out")]
    for s in weights:
        args += ["--set", s]
    result = invoke(*args)
    assert result.exit_code == 1 and "give --data-root DIR" in result.output
    assert not (tmp_path / "out" / "dg5").exists()


@pytest.mark.parametrize("launcher", ["inline", "local"])
def test_a_teacher_file_that_cannot_be_read_fails_its_runs_not_the_sweep(data, weights, tmp_path, launcher):
    root, cache = data
    good = dict(w.split("=", 1) for w in weights)
    broken = tmp_path / "truncated.pth"
    broken.write_bytes(Path(good["weights.tiny-dinov2"]).read_bytes()[:500])
    out = tmp_path / "results"
    result = invoke("run", "--suite", "dg5", "--data-root", str(root), "--benchmarks", "potsdam", "--pairs",
                    "tiny-real-f2l", "--methods", "student-only,cwd", "--seeds", "0", "--out", str(out),
                    "--set", "head=light", "--set", f"data.cache_dir={cache}", "--set", "data.workers=0",
                    "--set", "train.steps=2", "--set", "train.batch_size=2", "--set", "pretrain.head_steps=2",
                    "--set", f"weights.tiny-dinov2={broken}", "--set", f"weights.tiny-deit={good['weights.tiny-deit']}",
                    "--launcher", launcher)
    assert result.exit_code == 1 and "Traceback" not in result.output
    failed = [line for line in result.output.splitlines() if ": FAILED: " in line]
    tried = sorted(line.split("] ", 1)[1].split(": FAILED")[0] for line in failed)  # every run was tried
    assert tried == ["potsdam/tiny-real-f2l/cwd seed 0", "potsdam/tiny-real-f2l/student-only seed 0",
                     "potsdam/tiny-real-f2l/teacher"]
    assert all(f"weights file {broken} could not be read" in line for line in failed)
    assert "0 run(s) done, 0 skipped, 3 failed" in result.output
    report = invoke("report", str(out))
    assert report.exit_code == 0, report.output
    listed = (out / "report.md").read_text()
    assert "No finished runs, 3 failed." in listed
    assert listed.count(f"weights file {broken} could not be read") == 3
    without_md = invoke("report", str(out), "--format", "csv")
    assert without_md.exit_code == 1 and "no finished runs" in without_md.output
    assert "3 failed (first:" in without_md.output


def test_images_without_labels_are_skipped_on_request_and_counted_in_the_record(data, weights, tmp_path):
    import shutil

    root, cache = data
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    missing = sorted((copy / "bdd100k" / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))[0]
    missing.unlink()
    args = ["run", "--suite", "dg5", "--data-root", str(copy), "--benchmarks", "gtav", "--pairs", "tiny-real-f2l",
            "--methods", "student-only", "--seeds", "0", "--out", str(tmp_path / "out")]
    for s in ["head=mask2former-tiny", f"data.cache_dir={cache}", "data.workers=0", "train.steps=2",
              "train.batch_size=2", "pretrain.head_steps=2", "pretrain.batch_size=2", *weights]:
        args += ["--set", s]
    refused = invoke(*args)
    assert refused.exit_code != 0 or "FAILED" in refused.output
    assert "data.missing_labels=skip" in refused.output
    skipped = invoke(*args, "--set", "data.missing_labels=skip", "--out", str(tmp_path / "skip"))
    assert skipped.exit_code == 0, skipped.output
    records = [json.loads(line) for p in sorted((tmp_path / "skip").rglob("records.jsonl"))
               for line in p.read_text().splitlines()]
    bdd = [r for r in records if r["domain"] == "bdd100k" and r["split"] == "test"]
    assert bdd and all(r["images_without_labels"] == {"bdd100k/val": 1} for r in bdd)
    assert all(r["images"] == 1 for r in bdd)  # the fixture's two val images, less the one without a label
