"""A method is built with its run context and cannot lose it: GKD's proxy stage follows the pair kind it was built
with, a method built without a context fails at once, and ``teacher_taps`` is a classmethod of the
hyper-parameters that the pre-flight can ask before any model exists."""

from dataclasses import FrozenInstanceError
from types import SimpleNamespace

import pytest
import torch

from kdbench.config import Config
from kdbench.data.sources import domain_classes
from kdbench.launch import Job, build_method
from kdbench.method import METHODS, Method, RunContext
from kdbench.models.zoo import PAIRS
from kdbench.suite import load_suite
from kdbench.testing.methods import TINY_CNN_STUDENT, tiny_context, tiny_segmentor
from kdbench.testing.methods import build_method as build_tiny


def stage_names(method: Method) -> list[str]:
    return [stage.name for stage in method.stages()]


@pytest.mark.parametrize(("kind", "stages"), [
    ("F2L", ["task-agnostic", "domain-agnostic", "task"]),
    ("F2F", ["domain-agnostic", "task"]),
])
def test_gkd_runs_its_proxy_stage_for_the_pair_kind_it_was_built_with(kind, stages):
    gkd = METHODS.get("gkd")(tiny_segmentor("tiny-vit-b"), tiny_segmentor("tiny-deit-s"), tiny_context(kind))
    assert gkd.context.pair_kind == kind and stage_names(gkd) == stages


def test_a_method_built_without_its_context_fails_instead_of_losing_the_proxy_stage():
    teacher, student = tiny_segmentor("tiny-vit-b"), tiny_segmentor("tiny-deit-s")
    with pytest.raises(TypeError, match="context"):
        METHODS.get("gkd")(teacher, student)
    with pytest.raises(TypeError, match="context"):
        METHODS.get("gkd")(teacher, student, proxy_stage="auto")
    with pytest.raises(TypeError, match="context must be a RunContext, not dict"):
        METHODS.get("gkd")(teacher, student, {"pair_kind": "F2L"})


@pytest.mark.parametrize(("fields", "message"), [
    (("", 16, 6), "pair_kind must be one of F2F, F2L, not ''"),
    (("f2l", 16, 6), "pair_kind must be one of F2F, F2L"),
    (("F2L", 0, 6), "image_size must be a positive int"),
    (("F2L", 16, 6.0), "num_classes must be a positive int"),
])
def test_an_unknown_or_impossible_context_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        RunContext(*fields, torch.device("cpu"))


def test_the_context_is_frozen_and_its_device_a_torch_device():
    context = RunContext("F2F", 16, 6, "cpu")
    assert context.device == torch.device("cpu")
    with pytest.raises(FrozenInstanceError):
        context.pair_kind = "F2L"


def test_the_launcher_builds_each_method_with_its_jobs_context():
    bench = load_suite("smoke").benchmarks["game2real"]
    cfg = Config()
    ws = SimpleNamespace(cfg=cfg, runtime=SimpleNamespace(device=torch.device("cpu")))
    classes = len(domain_classes(bench.source))
    for pair_name, stages in (("tiny-f2l", ["task-agnostic", "domain-agnostic", "task"]),
                              ("tiny-f2f", ["domain-agnostic", "task"])):
        pair = PAIRS.get(pair_name)
        teacher = tiny_segmentor(pair.teacher, classes, cfg.data.image_size)
        student = tiny_segmentor(pair.student, classes, cfg.data.image_size)
        gkd = build_method(Job(bench, pair, "gkd", 0), teacher, student, ws)
        assert gkd.context == RunContext(pair.kind, cfg.data.image_size, classes, torch.device("cpu"))
        assert stage_names(gkd) == stages


def test_the_testing_helper_builds_with_the_kind_its_pair_has():
    assert build_tiny("gkd").context.pair_kind == PAIRS.get("tiny-f2f").kind == "F2F"  # tiny-vit-b -> tiny-vit-s
    assert build_tiny("gkd", student=TINY_CNN_STUDENT).context.pair_kind == PAIRS.get("tiny-f2l-cnn").kind == "F2L"
    assert build_tiny("gkd", student="tiny-deit-s").context.pair_kind == PAIRS.get("tiny-f2l").kind == "F2L"
    assert build_tiny("gkd", pair_kind="F2L").context.pair_kind == "F2L"
    assert build_tiny("gkd", pair_kind="F2L").context == tiny_context("F2L")


def test_teacher_taps_follow_the_hyperparameters_before_any_model_exists():
    cwd, fitnet = METHODS.get("cwd"), METHODS.get("fitnet")
    assert cwd.teacher_taps(cwd.resolve_hparams({"on": "features"})) == frozenset({"features"})
    cwd_kd = METHODS.get("cwd-kd")
    assert cwd_kd.teacher_taps(cwd_kd.resolve_hparams({"on": "features"})) == frozenset({"features", "logits"})
    assert fitnet.teacher_taps(fitnet.resolve_hparams({"target": "tokens"})) == frozenset({"tokens"})
    assert METHODS.get("student-only").teacher_taps({}) == frozenset()


def test_teacher_taps_declared_as_an_attribute_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="teacher_taps must be a classmethod teacher_taps"):
        class OldStyle(Method):
            teacher_taps = frozenset({"logits"})
