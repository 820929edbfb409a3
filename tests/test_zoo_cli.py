"""The open zoo through the CLI: models declared in YAML, pairs composed on the command line, weights from a file
or a fake offline Hugging Face cache, and every user mistake a one-line error before any work."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.models.declare import declare_models
from kdbench.models.zoo import MODELS, get_pair
from kdbench.testing.zoo_weights import write_hub_cache, write_weights

#: two tiny families for the smoke suite (16 px, patch 4): DINOv3 (RoPE, registers) from the Hugging Face cache,
#: EVA02 (RoPE, MIM) from an official-layout file
MODELS_YAML = """\
models:
  zoo-tiny-dinov3:
    timm: vit_small_patch16_dinov3.lvd1689m
    role: foundation
    patch: 4
    kwargs: {embed_dim: 32, depth: 2, num_heads: 2}
  zoo-tiny-eva02:
    timm: eva02_small_patch14_224.mim_in22k
    role: foundation
    patch: 4
    weights: WEIGHTS
    kwargs: {embed_dim: 16, depth: 2, num_heads: 2}
"""
BUILT_IN_FAMILIES = ["dinov2-s", "dinov2-b", "dinov2-l", "dinov2-g", "dinov2-s-reg4", "dinov2-b-reg4",
                     "dinov2-l-reg4", "dinov2-g-reg4", "dinov3-s", "dinov3-s-plus", "dinov3-b", "dinov3-l",
                     "dinov3-l-sat", "eva02-s", "eva02-b", "eva02-l", "dino-s16", "dino-b16", "deit-s", "deit-b",
                     "convnext-t", "convnext-s", "convnext-b", "resnet50", "resnet101"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    """The models config, the EVA02 file, a hub cache holding the DINOv3 model, an empty hub cache."""
    root = tmp_path_factory.mktemp("zoo")
    eva_file = root / "eva02_S_pt_in21k_p14.pt"
    config = root / "models.yaml"
    config.write_text(MODELS_YAML.replace("WEIGHTS", str(eva_file)))
    import yaml

    specs = {s.name: s for s in declare_models(yaml.safe_load(config.read_text())["models"], f"config {config}")}
    write_weights(specs["zoo-tiny-eva02"], eva_file)
    write_hub_cache(root / "hub", specs["zoo-tiny-dinov3"])
    (root / "empty-hub").mkdir()
    return {"config": config, "hub": root / "hub", "empty": root / "empty-hub", "eva": eva_file, "root": root}


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_list_models_shows_every_family_and_where_it_comes_from():
    result = invoke("list", "models")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()}
    for name in BUILT_IN_FAMILIES:
        assert name in rows and rows[name].endswith("[built-in]"), name
    assert rows["dinov3-l"].split()[1:4] == ["vit", "foundation", "file|hub"]
    assert rows["convnext-t"].split()[1:3] == ["cnn", "local"]
    assert "timm eva02_large_patch14_224.mim_m38m" in rows["eva02-l"]
    pairs = invoke("list", "pairs").output
    assert "f2f-eva02-l-b" in pairs and "[dg5]" in pairs.split("f2f-eva02-b-s", 1)[1].splitlines()[0]


def test_composed_pairs_take_their_kind_from_the_student_role():
    assert get_pair("dinov3-l:deit-s").kind == "F2L"
    assert get_pair("eva02-l:eva02-b").kind == "F2F"
    assert get_pair("dinov3-l:deit-s:f2f").name == "dinov3-l:deit-s:F2F"
    assert get_pair("dinov3-l:deit-s:F2L").name == "dinov3-l:deit-s"  # the derived kind is not spelt out


def test_a_run_on_a_composed_pair_of_two_families(zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(zoo["hub"]))
    out = tmp_path / "out"
    result = invoke("run", "--suite", "smoke", "--config", str(zoo["config"]), "--pairs",
                    "zoo-tiny-dinov3:zoo-tiny-eva02", "--methods", "gkd,cwd", "--benchmarks", "game2real",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "3 run(s) done, 0 skipped, 0 failed" in result.output
    runs = out / "smoke" / "game2real" / "zoo-tiny-dinov3:zoo-tiny-eva02"
    assert sorted(p.name for p in runs.iterdir()) == ["cwd", "gkd", "teacher"]
    records = [json.loads(line) for line in next((runs / "gkd").rglob("records.jsonl")).read_text().splitlines()]
    assert records and all(r["pair"] == "zoo-tiny-dinov3:zoo-tiny-eva02" for r in records)
    again = invoke("run", "--suite", "smoke", "--config", str(zoo["config"]), "--pairs",
                   "zoo-tiny-dinov3:zoo-tiny-eva02", "--methods", "gkd,cwd", "--benchmarks", "game2real",
                   "--out", str(out))
    assert "0 run(s) done, 3 skipped" in again.output  # the cache file found is part of the identity, stably


@pytest.mark.parametrize(("pairs", "methods", "fragments"), [
    ("nope:tiny-vit-s", "gkd", ("unknown model 'nope'", "known models:")),
    ("tiny-vit-b:tiny-vit-s:F3F", "gkd", ("pair kind 'F3F' is not one of F2F, F2L",)),
    ("tiny-vit-b:", "gkd", ("must be TEACHER:STUDENT",)),
    ("convnext-t:tiny-vit-s", "proteus", ("does not support cnn teachers", "convnext-t")),
    # patch 4 against patch 16 at 16 px: 4×4 teacher tokens against 1×1 student tokens (kd reads logits: no grid)
    ("tiny-vit-b:tiny-deit", "kd,gkd", ("method 'gkd' pairs student and teacher tokens one for one",
                                        "student tiny-deit 1×1, teacher tiny-vit-b 4×4", "data.image_size=16")),
    ("tiny-vit-b:tiny-deit", "proteus", ("method 'proteus' pairs", "student tiny-deit 1×1")),
])
def test_impossible_pairs_fail_in_the_pre_flight(pairs, methods, fragments, tmp_path):
    result = invoke("run", "--suite", "smoke", "--pairs", pairs, "--methods", methods, "--out", str(tmp_path / "o"))
    one_line_error(result, *fragments)
    assert not (tmp_path / "o").exists()


def test_token_grids_are_known_before_any_weights():
    from kdbench.models.grid import token_grid

    assert token_grid(MODELS.get("dinov2-l"), 512) == (32, 32)  # patch 14 resampled to the protocol's 16
    assert token_grid(MODELS.get("tiny-vit-b"), 16) == (4, 4) and token_grid(MODELS.get("resnet50"), 512) is None


def test_a_missing_cache_entry_names_the_repo_and_the_command(zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(zoo["empty"]))
    result = invoke("run", "--suite", "smoke", "--config", str(zoo["config"]), "--pairs",
                    "zoo-tiny-dinov3:zoo-tiny-eva02", "--methods", "cwd", "--out", str(tmp_path / "o"))
    one_line_error(result, "timm/vit_small_patch16_dinov3.lvd1689m is not in the Hugging Face cache",
                   "hf download timm/vit_small_patch16_dinov3.lvd1689m", "weights.zoo-tiny-dinov3=FILE")
    assert not (tmp_path / "o").exists()


def test_a_file_of_another_family_fails_before_any_work(zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(zoo["hub"]))
    wrong = write_weights(MODELS.get("zoo-tiny-dinov3"), tmp_path / "dinov3.pth")
    result = invoke("run", "--suite", "smoke", "--config", str(zoo["config"]), "--pairs",
                    "zoo-tiny-dinov3:zoo-tiny-eva02", "--methods", "cwd", "--out", str(tmp_path / "o"),
                    "--set", f"weights.zoo-tiny-eva02={wrong}")
    one_line_error(result, f"weights file {wrong}", "for model zoo-tiny-eva02 does not fit the model",
                   "missing keys", "unexpected keys")
    assert not (tmp_path / "o").exists()


def test_bad_declarations_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    for body, fragment in [
        ("zoo-bad: {timm: vit_nope_patch16, role: local}", "timm has no model 'vit_nope_patch16'"),
        ("zoo-bad: {timm: vit_small_patch16_dinov3.nope, role: local}", "no pretrained tag 'nope'"),
        ("zoo-bad: {timm: vit_small_patch16_dinov3, role: teacher}", "role must be one of foundation, local"),
        ("zoo-bad: {timm: vit_small_patch16_dinov3, role: local, size: 3}", "unknown field 'size'"),
        ("deit-s: {timm: vit_small_patch16_dinov3, role: local}", "already declared by built-in"),
    ]:
        bad.write_text(f"models:\n  {body}\n")
        one_line_error(invoke("run", "--suite", "smoke", "--config", str(bad), "--dry-run"), fragment)


def test_a_suite_declares_models_and_takes_them_to_its_workers(tmp_path):
    suite = tmp_path / "zoo-suite.yaml"
    suite.write_text(textwrap.dedent("""\
        name: zoo-suite
        benchmarks:
          game2real: {source: game, targets: [city]}
        pairs: [tiny-vit-b:zoo-suite-dino]
        models:
          zoo-suite-dino:
            timm: vit_small_patch16_224.dino
            role: local
            patch: 4
            kwargs: {embed_dim: 16, depth: 2, num_heads: 2}
        presets: {quick: {}}
        """))
    from kdbench.suite import load_suite

    loaded = load_suite(str(suite))
    assert loaded.pairs == ("tiny-vit-b:zoo-suite-dino",) and get_pair(loaded.pairs[0]).kind == "F2L"
    assert MODELS.get("zoo-suite-dino").origin == "suite zoo-suite"
    blob = pickle.dumps(loaded)
    del MODELS._items["zoo-suite-dino"]  # as a fresh worker process: only the built-ins
    assert pickle.loads(blob).models[0].name == "zoo-suite-dino" and "zoo-suite-dino" in MODELS


def test_a_plugin_model_comes_through_the_entry_point_group(tmp_path):
    """A package declaring ``[kdbench.models]`` (a mapping of the YAML fields, or a ModelSpec) is listed and
    composable, marked with where it comes from; the plugin is a module plus a dist-info on PYTHONPATH."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "my_zoo.py").write_text(textwrap.dedent("""\
        from kdbench.models.timm_specs import timm_spec

        TINY = {"timm": "convnext_tiny.fb_in1k", "role": "local", "description": "a plugin ConvNeXt",
                "kwargs": {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}}
        SPEC = timm_spec("zoo-plugin-spec", "resnet101.tv_in1k", "local", "a plugin ResNet")
        """))
    info = site / "my_zoo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-zoo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kdbench.models]\nzoo-plugin-tiny = my_zoo:TINY\n"
                                           "zoo-plugin-spec = my_zoo:SPEC\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KDBENCH_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-m", "kdbench", "list", "models"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert rows["zoo-plugin-tiny"].split()[1:3] == ["cnn", "local"]
    assert rows["zoo-plugin-tiny"].endswith("[plugin my-zoo (my_zoo:TINY)]")
    assert rows["zoo-plugin-spec"].endswith("[plugin my-zoo (my_zoo:SPEC)]")
    assert "zoo-plugin-tiny" not in MODELS  # not installed here: it came from the subprocess's PYTHONPATH
