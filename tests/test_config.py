"""Config layering: defaults < suite < preset < file < options < --set, with types checked."""

import pytest

from kdbench.config import Config, apply_set
from kdbench.errors import UserError
from kdbench.resolve import resolve_config, selections


def test_suite_preset_file_options_and_set_layer_in_order(tmp_path):
    cfg, suite = resolve_config(None, {"suite": "smoke"}, [])
    assert suite.name == "smoke" and cfg.train.steps == 4 and cfg.data.image_size == 16
    full, _ = resolve_config(None, {"suite": "smoke", "preset": "full"}, [])
    assert full.train.steps == 20
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 7, lr: 0.01}\nseeds: [1, 2]\n")
    cfg, _ = resolve_config(str(path), {"suite": "smoke", "seeds": [5]}, ["train.steps=9", "method.kd.temperature=2"])
    assert cfg.train.steps == 9 and cfg.train.lr == 0.01 and cfg.seeds == [5]
    assert cfg.method == {"kd": {"temperature": 2}}


def test_preset_can_come_from_set_and_file(tmp_path):
    cfg, _ = resolve_config(None, {"suite": "smoke"}, ["preset=full"])
    assert cfg.preset == "full" and cfg.train.steps == 20
    path = tmp_path / "c.yaml"
    path.write_text("suite: smoke\npreset: full\n")
    cfg, _ = resolve_config(str(path), {}, [])
    assert cfg.suite == "smoke" and cfg.train.steps == 20


def test_set_parses_yaml_values_and_lists():
    cfg = Config()
    apply_set(cfg, "train.lr=3e-4")
    apply_set(cfg, "seeds=0,1,2")
    apply_set(cfg, "train.steps=12")
    assert cfg.train.lr == 3e-4 and cfg.seeds == [0, 1, 2] and cfg.train.steps == 12


@pytest.mark.parametrize("assignment, message", [
    ("train.nope=1", "unknown config key 'nope'"),
    ("train.steps=abc", "steps must be int"),
    ("train=3", "train is a section"),
    ("out.x=1", "out is a value"),
    ("method.kd.a.b=1", "method.<name>.<key>"),
])
def test_bad_set_names_the_key(assignment, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        apply_set(Config(), assignment)


def test_choices_and_method_hparams_checked():
    with pytest.raises(UserError, match="train.schedule must be one of"):
        resolve_config(None, {"suite": "smoke"}, ["train.schedule=linear"])
    cfg, suite = resolve_config(None, {"suite": "smoke"}, ["method.nope.x=1"])
    with pytest.raises(UserError, match="unknown method 'nope'"):
        selections(cfg, suite)


def test_all_expands_to_the_suites_names():
    cfg, suite = resolve_config(None, {"suite": "smoke", "methods": ["all"]}, [])
    benchmarks, pairs, methods = selections(cfg, suite)
    assert benchmarks == ["game2real", "clear2adverse", "rgb2irrg"]
    assert pairs == ["tiny-f2f", "tiny-f2l"]
    assert {"student-only", "kd"} <= set(methods)
