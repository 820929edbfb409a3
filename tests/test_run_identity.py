"""Run identity. The committed runs under results/ keep their directory hashes when rebuilt from the config they
stored, so a change to what enters a run's identity cannot silently rename (and re-run) finished work; and every
config setting declares whether it enters (``kdbench.config.setting``), which the hash follows."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import kdbench.launch
from kdbench.config import (
    LATER,
    NO,
    RUN,
    YES,
    Config,
    TrainConfig,
    apply_set,
    choices_of,
    declared,
    is_section,
    iter_settings,
    merge,
    setting,
    validate,
)
from kdbench.errors import UserError
from kdbench.launch import Job, expand, run_dir, run_identity
from kdbench.models.heads import HEADS
from kdbench.resolve import TEACHER
from kdbench.results import CONFIG, DONE
from kdbench.suite import Suite, load_suite

RESULTS = Path(__file__).resolve().parents[1] / "results"
#: committed result trees and the kinds of run each must hold
ROOTS = {
    "synth5-quick": {"teacher", "default"},
    "synth5-stage2": {"files"},
    "synth5-budget": {"teacher", "default"},
    "synth5-tuned-first-teacher": {"teacher", "trial", "gkd-stage-steps"},
}


@functools.cache
def _suite(name: str) -> Suite:
    return load_suite(name)


@functools.cache
def _config(stored: str) -> Config:
    cfg = Config()
    merge(cfg, json.loads(stored), "stored config")
    return cfg


def _finished_runs(root: Path) -> list[Path]:
    """``<root>/<suite>/<benchmark>/<pair>/<method>/seed<k>-<hash>`` with a ``done`` file."""
    return sorted(done.parent for done in root.glob(f"*/*/*/*/seed*-*/{DONE}"))


def _file_setting(cfg: Config, identity: dict[str, Any], key: str) -> str:
    """The path a ``files`` key of a stored identity digested (``method.<hp>``, ``pretrain.teacher_weights`` or
    ``weights.<model>``)."""
    section, name = key.split(".", 1)
    if section == "method":
        return identity["hparams"][name]
    return cfg.pretrain.teacher_weights if section == "pretrain" else cfg.weights[name]


def _rebuilt(run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[dict[str, Job], dict[str, Any]]:
    """Every run the stored config of ``run`` expands to, by directory under its results root; and what was
    stored. Files a run digested (a stage-1 checkpoint, not committed) stand in as empty placeholders under
    ``tmp_path`` whose digest is the stored one."""
    stored = yaml.load((run / CONFIG).read_text(), Loader=yaml.CSafeLoader)
    identity = stored["identity"]
    cfg = _config(json.dumps(stored["config"], sort_keys=True))
    digests = {}
    for key, digest in identity.get("files", {}).items():
        path = _file_setting(cfg, identity, key)
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
        digests[path] = digest
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(kdbench.launch, "file_digest", lambda path: digests[str(path)])
    suite = _suite(cfg.suite)
    methods = [] if identity["method"] == TEACHER else [identity["method"]]
    jobs = [job for job in expand(cfg, suite, [identity["benchmark"]], [identity["pair"]], methods)
            if job.method == identity["method"] and job.seed == identity["seed"]]
    rebuilt = {str(run_dir(Path(), job, cfg, suite).path): job for job in jobs}
    return rebuilt, {"identity": identity, "cfg": cfg, "suite": suite, "jobs": jobs}


def _kinds(job: Job, identity: dict[str, Any]) -> set[str]:
    """The kinds of run ``job`` is: a teacher row, trial 0 or a later trial, one reading a file, a GKD run with its
    stages' steps set."""
    return {name for name, present in {
        "teacher": job.method == TEACHER, "default": job.method != TEACHER and job.trial == 0,
        "trial": job.trial > 0, "files": bool(identity.get("files")),
        "gkd-stage-steps": any(job.hparams.get(k) for k in ("proxy_steps", "distill_steps"))}.items() if present}


@pytest.mark.parametrize("name", list(ROOTS))
def test_committed_runs_keep_their_directory_hash(name, monkeypatch, tmp_path):
    root = RESULTS / name
    runs = _finished_runs(root)
    assert runs, f"no finished runs under {root}"
    covered: set[str] = set()
    for run in runs:
        with monkeypatch.context() as patch:
            rebuilt, stored = _rebuilt(run, patch, tmp_path)
            relative = str(run.relative_to(root))
            if relative not in rebuilt:
                now = [run_identity(job, stored["cfg"], stored["suite"]) for job in stored["jobs"]]
                pytest.fail(f"{run}: its stored config no longer rebuilds its directory; stored identity "
                            f"{json.dumps(stored['identity'], sort_keys=True)}, rebuilt "
                            f"{json.dumps(now, sort_keys=True, default=str)}")
        covered |= _kinds(rebuilt[relative], stored["identity"])
    assert ROOTS[name] <= covered, f"{name}: no runs of kinds {sorted(ROOTS[name] - covered)}"


def _config_classes(cls: type = Config) -> list[type]:
    return [cls, *(c for f in dataclasses.fields(cls) if is_section(f) for c in _config_classes(f.default_factory))]


def test_every_setting_of_every_config_section_declares_itself():
    sections = _config_classes()
    assert {c.__name__ for c in sections} >= {"Config", "TrainConfig", "EvalConfig", "DataConfig", "LauncherConfig"}
    for cls in sections:
        for f in dataclasses.fields(cls):
            if not is_section(f):
                assert f.metadata.get("kdbench.setting"), f"{cls.__name__}.{f.name}: define it with setting(...)"
    for dotted, declared_as, value in iter_settings(Config()):
        if declared_as.identity is RUN:  # picking runs is the sweep's job: no setting hides in RUN from the hash
            assert dotted in {"suite", "methods", "pairs", "benchmarks", "seeds", "method", "search.trials",
                              "search.seed"}, dotted
        allowed = declared_as.allowed()
        if allowed is not None:
            assert allowed and value in allowed, f"{dotted}: default {value!r} not among {allowed}"
        if declared_as.digest:
            assert isinstance(value, (str, dict)), dotted


def test_a_setting_added_without_its_declaration_fails_loudly():
    @dataclasses.dataclass
    class WithFoo(TrainConfig):
        foo: int = 0

    cfg = Config()
    cfg.train = WithFoo()
    with pytest.raises(TypeError, match=r"train\.foo has no declaration"):
        list(iter_settings(cfg))
    job = expand(Config(), load_suite("synth5"), ["game2real"], ["f2l"], ["kd"])[1]
    with pytest.raises(TypeError, match=r"train\.foo has no declaration"):
        run_identity(job, cfg, load_suite("synth5"))


def test_setting_takes_later_default_with_later_only():
    with pytest.raises(TypeError, match="later_default"):
        setting("", identity=LATER)
    with pytest.raises(TypeError, match="later_default"):
        setting("", identity=YES, later_default="")
    a, b = (dataclasses.make_dataclass("M", [("m", dict, setting({}, identity=NO))])() for _ in range(2))
    a.m["x"] = 1
    assert b.m == {}


def _changed(dotted: str, value: Any) -> Any:
    """A valid value other than ``value`` for the setting at ``dotted``."""
    allowed = declared(dotted).allowed()
    if allowed:
        return next(v for v in allowed if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if dotted == "train.stages":
        return {"distill": {"steps": 5}}
    if isinstance(value, dict):
        return {"somewhere": "/nonexistent/file"}
    return f"{value}-changed" if isinstance(value, str) else [*value, *value]


def test_the_run_hash_follows_each_settings_declaration():
    suite = load_suite("synth5")
    teacher, student = expand(Config(), suite, ["game2real"], ["f2l"], ["kd"])[:2]
    base = {job.method: run_dir(Path(), job, Config(), suite).path for job in (teacher, student)}
    checked = 0
    for dotted, declared_as, value in iter_settings(Config()):
        if declared_as.identity is RUN:  # picks other runs; each names its own pick
            continue
        cfg = Config()
        *sections, name = dotted.split(".")
        node = cfg
        for part in sections:
            node = getattr(node, part)
        setattr(node, name, _changed(dotted, value))
        moved = {job.method for job in (teacher, student)
                 if run_dir(Path(), job, cfg, suite).path != base[job.method]}
        if declared_as.identity is NO:
            assert not moved, f"{dotted} is declared NO, yet it renamed the {moved} run"
        else:
            assert student.method in moved, f"{dotted} is declared {declared_as.identity.name}, yet did not enter"
            assert (teacher.method in moved) == (sections != ["train"]), dotted  # a teacher row trains nothing
        if declared_as.identity is LATER:  # at its later default it is not even named
            entered = run_identity(student, Config(), suite)
            for part in sections:
                entered = entered.get(part, {})
            assert name not in entered, dotted
        checked += 1
    assert checked > 30


def test_choices_come_from_the_declaration_and_its_registry():
    assert choices_of("head") == tuple(HEADS)
    assert "slide-24" in choices_of("eval.protocol")
    for assignment, message in [("head=nope", "head must be one of light, mask2former"),
                                ("eval.protocol=nope", "eval.protocol must be one of whole, slide-24"),
                                ("train.teacher_cache=sometimes", "train.teacher_cache must be one of auto, on, off"),
                                ("train.stages.distill.schedule=linear", "train.stages.distill.schedule must be one of "
                                                                         "cosine, poly, constant")]:
        cfg = Config()
        apply_set(cfg, assignment)
        with pytest.raises(UserError, match=message):
            validate(cfg)
