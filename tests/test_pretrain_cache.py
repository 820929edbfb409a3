"""The pretraining cache keeps a teacher's trained head alone (its frozen backbone has a cache file of its own), and
still reads the files written before, which hold the whole segmentor."""

import json
from pathlib import Path

from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.models.checkpoints import atomic_save, read_state_dict

ARGS = ["run", "--suite", "smoke", "--device", "cpu", "--benchmarks", "game2real", "--pairs", "tiny-f2l",
        "--methods", "student-only", "--seeds", "0"]


def teacher_digest(out: Path) -> tuple[str, float]:
    (records,) = out.rglob("teacher/*/records.jsonl")
    first = json.loads(records.read_text().splitlines()[0])
    return first["teacher_digest"], first["miou"]


def run(out: Path, cache: Path, monkeypatch) -> tuple[str, float]:
    monkeypatch.setenv("KDBENCH_CACHE", str(cache))
    result = CliRunner().invoke(cli, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return teacher_digest(out)


def test_a_teacher_is_cached_as_its_head_and_old_whole_files_still_load(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    trained = run(tmp_path / "first", cache, monkeypatch)
    (teacher_file,) = cache.glob("teacher-*.pt")
    model = teacher_file.name.removeprefix("teacher-").split("-game-")[0]
    (backbone_file,) = cache.glob(f"backbone-{model}-*.pt")
    head = read_state_dict(teacher_file)
    assert head and not any(k.startswith(("backbone.", "head.")) for k in head)
    assert run(tmp_path / "again", cache, monkeypatch) == trained  # loaded: the same teacher, the same scores

    whole = {**{f"backbone.{k}": v for k, v in read_state_dict(backbone_file).items()},
             **{f"head.{k}": v for k, v in head.items()}}
    atomic_save(whole, teacher_file)  # as the cache wrote teachers before
    assert run(tmp_path / "old", cache, monkeypatch) == trained
