"""`kdbench cache list|clear` (kdbench/cache_folder.py): the cache folder a real run fills is listed by kind with
its sizes, `clear` removes the teacher-output tables (which the next run recomputes to the same records) and
removes pretrained weights only when named and confirmed."""

import json
from pathlib import Path

from click.testing import CliRunner

from kdbench.cache_folder import cache_files, classify
from kdbench.cli import cli

RUN = ["run", "--suite", "smoke", "--device", "cpu", "--benchmarks", "game2real", "--pairs", "tiny-f2l",
       "--methods", "kd", "--set", "train.steps=10"]
TIMING = {"wall_s", "train_wall_s", "prepare_s", "created", "peak_memory_mb", "stages", "git_commit", "eval_s",
          "train_images_per_s", "run_dir"}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def records(out: Path) -> list[dict]:
    (path,) = out.glob("smoke/game2real/tiny-f2l/kd/seed0-*/records.jsonl")
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def test_classify_reads_kdbench_names_only():
    assert classify("teacher-outputs-35e40ef0b2b8998c.pt") == ("teacher-outputs", "35e40ef0b2b8998c")
    assert classify("teacher-synth-vit-b-aerial-rgb-5d4f28a85bf8.pt") == ("teachers", "synth-vit-b-aerial-rgb")
    assert classify("backbone-synth-deit-s-3fe0196dca9d.pt") == ("backbones", "synth-deit-s")
    assert classify(".backbone-synth-deit-s-3fe0196dca9d.pt.x1y2.tmp") is None
    assert classify("notes.txt") is None and classify("backbone-x.pt") is None


def test_list_then_clear_removes_the_tables_and_the_next_run_recomputes_them_to_the_same_records(tmp_path,
                                                                                               monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDBENCH_CACHE", str(cache))
    assert invoke(*RUN, "--out", str(tmp_path / "first")).exit_code == 0
    (cache / "notes.txt").write_text("mine")
    files = cache_files(cache)
    kinds = {f.kind for f in files}
    assert kinds == {"teacher-outputs", "teachers", "backbones"}

    listed = invoke("cache", "list")
    assert listed.exit_code == 0, listed.output
    assert f"cache folder: {cache}" in listed.output
    for f in files:
        assert f.name in listed.output
    tables = [f for f in files if f.kind == "teacher-outputs"]
    assert f"teacher-outputs: {len(tables)} file(s), {sum(f.size for f in tables) / 2**20:.1f} MiB" in listed.output
    assert f"total: {len(files)} file(s)," in listed.output and "notes.txt" not in listed.output

    weights = {f.path: f.path.read_bytes() for f in files if f.kind != "teacher-outputs"}
    cleared = invoke("cache", "clear")
    assert cleared.exit_code == 0, cleared.output
    assert f"removed {len(tables)} file(s) (teacher-outputs)" in cleared.output
    assert not list(cache.glob("teacher-outputs-*.pt"))
    assert {p: p.read_bytes() for p in weights} == weights, "pretrained weights are kept"
    assert (cache / "notes.txt").read_text() == "mine"

    again = invoke(*RUN, "--out", str(tmp_path / "second"))
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in cache.glob("teacher-outputs-*.pt")) == sorted(f.path.name for f in tables)
    assert records(tmp_path / "second") == records(tmp_path / "first")


def test_weights_are_removed_only_when_named_and_confirmed(tmp_path):
    cache = tmp_path / "elsewhere"
    cache.mkdir()
    for name in ("backbone-synth-vit-s-deeb9118693f.pt", "teacher-synth-vit-b-city-b5761579f398.pt",
                 "teacher-outputs-f5c4701fd1f6137d.pt"):
        (cache / name).write_bytes(b"x" * 100)

    unconfirmed = invoke("cache", "clear", "--cache", str(cache), "--kind", "all")
    assert unconfirmed.exit_code == 1
    assert unconfirmed.output.count("\n") == 1 and "pass --yes to confirm (nothing was removed)" in unconfirmed.output
    assert len(list(cache.iterdir())) == 3

    bad = invoke("cache", "clear", "--cache", str(cache), "--kind", "backbone")
    assert bad.exit_code == 1 and bad.output.count("\n") == 1
    assert "unknown cache kind 'backbone'; did you mean 'backbones'?" in bad.output
    assert "valid: teacher-outputs, teachers, backbones" in bad.output

    only_backbones = invoke("cache", "clear", "--cache", str(cache), "--kind", "backbones", "--yes")
    assert only_backbones.exit_code == 0, only_backbones.output
    assert "removed 1 file(s) (backbones), 0.0 MiB freed" in only_backbones.output
    assert sorted(p.name for p in cache.iterdir()) == ["teacher-outputs-f5c4701fd1f6137d.pt",
                                                       "teacher-synth-vit-b-city-b5761579f398.pt"]

    assert invoke("cache", "clear", "--cache", str(cache), "--kind", "all", "--yes").exit_code == 0
    assert list(cache.iterdir()) == []
    empty = invoke("cache", "list", "--cache", str(tmp_path / "missing"))
    assert empty.exit_code == 0 and "total: 0 file(s), 0.0 MiB" in empty.output
