"""The exact teacher-output cache (``train.teacher_cache``): the same results as running the teacher, computed once,
never read for other weights or inputs, refused in one line where inputs are not a fixed set."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import Config
from kdbench.data.domains import get_domain
from kdbench.data.loaders import INPUT_IDS, FixedInputs, StageData
from kdbench.data.synthetic import make_split
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.teacher_cache import TeacherCache, cached_stages
from kdbench.errors import UserError
from kdbench.method import METHODS, RunContext
from kdbench.models.heads import make_head
from kdbench.models.segmentor import Segmentor
from kdbench.models.zoo import MODELS
from kdbench.resolve import check_teacher_cache
from kdbench.suite import load_suite

# --device cpu: the claim is equality of cached and recomputed runs' records, which holds for CPU fp32 kernels; a GPU
# at its default bf16 runs kernels that are not bit-reproducible (docs/performance.md, "On a GPU")
BASE = ["run", "--suite", "smoke", "--device", "cpu", "--benchmarks", "game2real", "--pairs", "tiny-f2l",
        "--set", "train.steps=20", "--set", "train.log_every=1"]
#: every tap kind: logits (kd, cwd), tokens (gkd, proteus), blocks + tokens (vitkd), features (fitnet)
METHODS_ALL_TAPS = "kd,cwd,gkd,proteus,vitkd,fitnet"
TIMING = {"wall_s", "train_wall_s", "prepare_s", "created", "peak_memory_mb", "stages", "git_commit", "eval_s",
          "train_images_per_s"}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def runs(out: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in (out / "smoke" / "game2real" / "tiny-f2l").glob("*/seed0-*")}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cached_runs_match_uncached_runs_and_are_the_same_runs(tmp_path):
    for mode in ("on", "off"):
        methods = METHODS_ALL_TAPS.replace("gkd,", "") if mode == "on" else METHODS_ALL_TAPS
        result = invoke(*BASE, "--methods", methods, "--set", f"train.teacher_cache={mode}",
                        "--out", str(tmp_path / mode))
        assert result.exit_code == 0, result.output
    auto = invoke(*BASE, "--methods", "gkd", "--out", str(tmp_path / "on"))  # gkd's proxy stage is not a fixed set
    assert auto.exit_code == 0, auto.output
    cached, uncached = runs(tmp_path / "on"), runs(tmp_path / "off")
    assert set(cached) == set(uncached) == {"teacher", *METHODS_ALL_TAPS.split(",")}
    for method in METHODS_ALL_TAPS.split(","):
        assert cached[method].name == uncached[method].name, method  # same identity: the cache is not part of it
        a, b = lines(cached[method] / "metrics.jsonl"), lines(uncached[method] / "metrics.jsonl")
        assert len(a) == len(b) >= 20
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys()
            for key in (k for k in x if k.startswith("loss")):
                # the table's teacher pass batches its inputs otherwise than the run's steps do, so a logit may
                # differ in its last bits (seen on torch 2.6 at 1e-5 relative, logged values rounded to 6 decimals)
                assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (method, x["step"], key)
        rec_a, rec_b = lines(cached[method] / "records.jsonl"), lines(uncached[method] / "records.jsonl")
        assert [{k: v for k, v in r.items() if k not in TIMING} for r in rec_a] == \
            [{k: v for k, v in r.items() if k not in TIMING} for r in rec_b], method
        stages_a = {s["name"]: s["teacher_cached"] for s in rec_a[0]["stages"]}
        assert not any(s["teacher_cached"] for s in rec_b[0]["stages"])
        if method == "gkd":
            assert stages_a == {"task-agnostic": False, "domain-agnostic": True, "task": False}
        else:
            assert stages_a == {"train": True}, method
    again = invoke(*BASE, "--methods", "kd", "--set", "train.teacher_cache=off", "--out", str(tmp_path / "on"))
    assert again.exit_code == 0 and "kd seed 0: already done, skipped" in again.output


def test_batches_carry_ids_of_exactly_their_images():
    data = StageData(make_split(get_domain("game"), "train", 24, 16), "urban", 16, torch.device("cpu"))
    fixed = data.fixed_inputs("source")
    assert len(fixed) == 48 and data.fixed_inputs("source-images") is fixed and data.fixed_inputs("proxy") is None
    stream = data.batches("source", 8, seed=3)
    flips = 0
    for _ in range(6):  # two epochs
        batch = next(stream)
        ids = batch.meta[INPUT_IDS]
        flips += int((ids % 2).sum())
        assert torch.equal(fixed.batch(ids), batch.images)
    assert 0 < flips < 48  # both orientations were drawn
    assert INPUT_IDS not in next(data.batches("proxy", 8, seed=3)).meta


def tiny_teacher(seed: int = 0) -> Segmentor:
    torch.manual_seed(seed)
    backbone = MODELS.get("tiny-vit-b").build_backbone(16)
    return Segmentor(backbone, make_head("light", backbone, 5)).eval()


def test_table_rows_are_the_live_teachers_outputs_and_a_changed_teacher_never_reads_an_old_file(tmp_path):
    runtime = resolve_runtime("cpu", "off")
    inputs = FixedInputs(make_split(get_domain("game"), "train", 40, 16).images, torch.device("cpu"))
    teacher = tiny_teacher()
    cache = TeacherCache(tmp_path, runtime, notify=lambda _: None)
    identity = {"model": "tiny-vit-b", "weights": "a"}
    taps = frozenset({"logits", "tokens", "blocks", "features"})
    table = cache.table(teacher, identity, inputs, taps)
    ids = torch.tensor([0, 7, 79, 40, 41])
    with torch.inference_mode():
        live = teacher(inputs.batch(ids))
    got = table.lookup(ids)
    torch.testing.assert_close(got.logits, live.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.tokens, live.tokens, rtol=1e-5, atol=1e-6)
    for a, b in [*zip(got.blocks, live.blocks, strict=True), *zip(got.features, live.features, strict=True)]:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert got.grid == live.grid and got.num_prefix == live.num_prefix
    files = sorted(tmp_path.glob("teacher-outputs-*.pt"))
    assert len(files) == 4  # one file per tap

    # A fresh cache reads the files: poison them and the poison comes back...
    for f in files:
        saved = torch.load(f, weights_only=True)
        value = saved["value"]
        saved["value"] = [torch.zeros_like(v) for v in value] if isinstance(value, list) else torch.zeros_like(value)
        torch.save(saved, f)
    reread = TeacherCache(tmp_path, runtime, notify=lambda _: None).table(teacher, identity, inputs, taps)
    assert reread.lookup(ids).logits.abs().max() == 0
    # ...but other weights, other inputs or another precision never read them.
    other = tiny_teacher(seed=1)
    fresh = TeacherCache(tmp_path, runtime, notify=lambda _: None)
    changed = fresh.table(other, {**identity, "weights": "b"}, inputs, frozenset({"logits"}))
    with torch.inference_mode():
        torch.testing.assert_close(changed.lookup(ids).logits, other(inputs.batch(ids)).logits, rtol=1e-5, atol=1e-6)
    shifted = FixedInputs(make_split(get_domain("city"), "train", 40, 16).images, torch.device("cpu"))
    assert fresh.key(identity, shifted, "logits") != fresh.key(identity, inputs, "logits")
    bf16 = TeacherCache(tmp_path, resolve_runtime("cpu", "bf16"), notify=lambda _: None)
    assert bf16.key(identity, inputs, "logits") != fresh.key(identity, inputs, "logits")


def test_weights_change_through_the_cli_makes_a_new_cache_file(tmp_path, monkeypatch):
    """The teacher's weight digest keys the file: a sweep whose teacher was pretrained differently fills anew."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDBENCH_CACHE", str(cache))
    args = [*BASE, "--methods", "kd", "--out", str(tmp_path / "out")]
    assert invoke(*args).exit_code == 0
    first = set(cache.glob("teacher-outputs-*.pt"))
    assert len(first) == 1
    assert invoke(*args, "--set", "pretrain.head_steps=6", "--out", str(tmp_path / "other")).exit_code == 0
    assert len(set(cache.glob("teacher-outputs-*.pt")) - first) == 1


def test_on_where_inputs_are_not_a_fixed_set_is_one_line_before_any_work(tmp_path):
    result = invoke(*BASE, "--methods", "kd,gkd", "--set", "train.teacher_cache=on", "--out", str(tmp_path))
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert "train.teacher_cache=on" in message and "'task-agnostic'" in message and "gkd" in message
    assert "auto" in message and not any(tmp_path.iterdir())
    bad = invoke(*BASE, "--set", "train.teacher_cache=always", "--out", str(tmp_path))
    assert bad.exit_code == 1 and "auto, on, off" in bad.output.replace("'", "")


def test_on_with_real_data_is_refused_and_student_only_needs_no_cache():
    cfg, suite = Config(), load_suite("dg5")
    cfg.train.teacher_cache = "on"
    with pytest.raises(UserError, match="real dataset whose training crops are augmented"):
        check_teacher_cache(cfg, suite, ["gtav"], ["f2l-dinov2-b-deit-s"], ["cwd"])
    check_teacher_cache(cfg, suite, ["gtav"], ["f2l-dinov2-b-deit-s"], ["student-only"])


def test_auto_caches_exactly_the_fixed_set_stages():
    data = StageData(make_split(get_domain("game"), "train", 8, 16), "urban", 16, torch.device("cpu"))
    student = tiny_teacher()
    context = RunContext("F2L", 16, 5, torch.device("cpu"))
    gkd = METHODS.get("gkd")(tiny_teacher(), student, context)
    assert set(cached_stages(gkd, data, "auto")) == {"domain-agnostic"}
    assert cached_stages(gkd, data, "off") == {}
    with pytest.raises(UserError, match="proxy images"):
        cached_stages(gkd, data, "on")
    assert cached_stages(METHODS.get("student-only")(tiny_teacher(), student, context), data, "on") == {}


def test_local_workers_find_the_cache_filled_before_they_start(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDBENCH_CACHE", str(cache))
    result = invoke(*BASE, "--methods", "kd,vitkd", "--seeds", "0,1", "--launcher", "local", "--out",
                    str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.output.count("caching the teacher's") == 2  # logits; blocks + tokens: in this process, once each
    assert len(list(cache.glob("teacher-outputs-*.pt"))) == 3
    logs = "".join(p.read_text() for p in (tmp_path / "out" / ".submitit").rglob("*_log.out"))
    assert "kd seed 1: in-domain" in logs and "caching the teacher's" not in logs
