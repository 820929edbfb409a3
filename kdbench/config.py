"""Typed run configuration, built in layers with clear errors.

Layers, later wins: dataclass defaults, the suite's ``defaults``, the suite's preset (``quick``, ``full``,
``paper``: as the suite defines), the user's ``--config`` YAML, command-line options, then ``--set key=value``
overrides. Every key is checked against the dataclasses, every value against the field's type; a method's
hyper-parameters (``method.<name>.<key>``) are checked against that method's ``defaults`` when the methods are
resolved.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import UserError, did_you_mean


class Identity(enum.Enum):
    """Whether a setting enters a run's identity, the hash in its directory name (``kdbench.launch.run_identity``).
    Changing a setting that enters makes a new run; adding one renames every finished run unless it is ``LATER``."""

    #: what a run computes: its value enters
    YES = "yes"
    #: how a run is carried out or where its inputs lie: never enters
    NO = "no"
    #: added after runs were recorded: enters only where it differs from ``later_default``, the value those runs had
    LATER = "later"
    #: picks which runs a sweep makes; each run's identity names its own pick (suite, benchmark, pair, method, seed,
    #: hyper-parameters)
    RUN = "run"


YES, NO, LATER, RUN = Identity.YES, Identity.NO, Identity.LATER, Identity.RUN


@dataclass(frozen=True)
class Setting:
    """A config field's declaration (``setting``): its identity, its allowed values, whether files it names enter
    a run's identity by content."""

    identity: Identity
    #: the allowed values, or ``"module:NAME"`` of the registry whose names they are (imported when checked)
    choices: tuple[str, ...] | str | None = None
    later_default: Any = None
    #: the files it names enter a run's identity by SHA-256 (``files``): a path, the run's own entries of a mapping
    #: by model (``weights``), or the run's hyper-parameters (``method``)
    digest: bool = False

    def allowed(self) -> tuple[str, ...] | None:
        """The allowed values, a registry's names read now; None where any value of the type goes."""
        if not isinstance(self.choices, str):
            return self.choices
        module, name = self.choices.split(":")
        registry = getattr(importlib.import_module(module), name)
        return tuple(registry.names() if hasattr(registry, "names") else registry)


_SETTING = "kdbench.setting"
_UNSET: Any = object()


def setting(default: Any, *, identity: Identity, choices: tuple[str, ...] | str | None = None,
            later_default: Any = _UNSET, digest: bool = False) -> Any:
    """A config dataclass field with its declaration (``Setting``); a list or dict default is copied per config.
    ``identity=Identity.LATER`` needs ``later_default``, and nothing else takes one."""
    if (identity is Identity.LATER) != (later_default is not _UNSET):
        raise TypeError("later_default goes with identity=Identity.LATER, and a LATER setting needs one")
    declared = Setting(identity, choices, None if later_default is _UNSET else later_default, digest)
    metadata = {_SETTING: declared}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def is_section(f: dataclasses.Field) -> bool:
    """Whether a config field is a section of settings (``train``, ``eval``, ...) rather than a setting."""
    factory = f.default_factory
    return isinstance(factory, type) and dataclasses.is_dataclass(factory)


def declaration(f: dataclasses.Field, where: str) -> Setting:
    """The declaration of setting ``f`` (at dotted ``where``); a TypeError for a field declared without
    ``setting(...)``, so a new setting cannot silently change (or stay out of) every run's identity."""
    declared = f.metadata.get(_SETTING)
    if not isinstance(declared, Setting):
        raise TypeError(f"config setting {where} has no declaration: define it with setting(default, "
                        "identity=Identity.YES | NO | LATER | RUN, choices=...) (docs/architecture.md, 'Adding a "
                        "config setting')")
    return declared


def iter_settings(node: Any, prefix: str = "") -> Iterator[tuple[str, Setting, Any]]:
    """Every setting of a config or section ``node``, sections walked: (dotted name, declaration, value)."""
    for f in dataclasses.fields(node):
        dotted = f"{prefix}{f.name}"
        value = getattr(node, f.name)
        if is_section(f):
            yield from iter_settings(value, f"{dotted}.")
        else:
            yield dotted, declaration(f, dotted), value


def declared(dotted: str) -> Setting:
    """The declaration of the setting at ``dotted`` (``train.schedule``, ``device``)."""
    node: Any = Config
    *sections, name = dotted.split(".")
    for part in sections:
        node = {f.name: f for f in dataclasses.fields(node)}[part].default_factory
    return declaration({f.name: f for f in dataclasses.fields(node)}[name], dotted)


def choices_of(dotted: str) -> tuple[str, ...]:
    """The values the setting at ``dotted`` allows (for ``click.Choice`` and checks)."""
    allowed = declared(dotted).allowed()
    if allowed is None:
        raise TypeError(f"config setting {dotted} declares no choices")
    return allowed


@dataclass
class TrainConfig:
    steps: int = setting(300, identity=YES)
    batch_size: int = setting(32, identity=YES)
    lr: float = setting(1e-3, identity=YES)
    backbone_lr_mult: float = setting(1.0, identity=YES)
    weight_decay: float = setting(0.05, identity=YES)
    warmup: float = setting(0.05, identity=YES)
    schedule: str = setting("cosine", identity=YES, choices=("cosine", "poly", "constant"))
    grad_clip: float = setting(1.0, identity=YES)
    amp: str = setting("auto", identity=YES, choices=("auto", "off", "bf16", "fp16"))
    threads: int = setting(0, identity=NO)
    log_every: int = setting(10, identity=NO)
    checkpoint_every: int = setting(100, identity=NO)
    #: compile and channels-last change speed, not results (``tests/test_speed_options.py``)
    compile: bool = setting(False, identity=NO)
    channels_last: bool = setting(False, identity=NO)
    #: the frozen teacher's outputs on a fixed input set computed once and looked up (``auto``: exactly where a
    #: stage's inputs are a fixed set; ``on``: refuse a sweep where one is not; ``off``: the teacher runs every step)
    teacher_cache: str = setting("auto", identity=NO, choices="kdbench.engine.teacher_cache:MODES")
    #: TensorBoard event files of every logged step and the final mIoU, in each run's ``tensorboard/``
    #: (``kdbench.engine.tensorboard``; the ``tb`` extra): watching changes no result
    tensorboard: bool = setting(False, identity=NO)
    #: per-stage overrides by stage name: ``steps`` or ``epochs`` (passes over the stage's data), ``batch_size``,
    #: ``lr``, ``schedule``, ``warmup``, ``backbone_lr_mult`` (the paper's stage 1 and stage 2 differ in all of them)
    stages: dict[str, dict[str, Any]] = setting({}, identity=LATER, later_default={})


@dataclass
class EvalConfig:
    #: images per evaluated domain: rendered (synthetic), or the first N of the split (real data; 0 = all)
    images: int = setting(128, identity=YES)
    batch_size: int = setting(64, identity=YES)
    protocol: str = setting("whole", identity=YES, choices="kdbench.engine.evaluator:PROTOCOLS")
    #: also score every domain's validation split (source-val, target-val: for model selection, never for the
    #: test tables) where the suite has one
    validate: bool = setting(True, identity=LATER, later_default=True)


@dataclass
class DataConfig:
    """``image_size``: the training crop (synthetic: the rendered size). ``train_images``: synthetic images
    rendered per source, or on real data the first N of the source split (0 = all). ``root``: the real datasets'
    root folder (``--data-root``); ``paths``: per-dataset folders overriding ``root/<default folder>``;
    ``cache_dir``: where ``kdbench data prepare`` writes converted datasets; ``proxy_root``: a folder of unlabelled
    images standing in for ImageNet (GKD's stage 1a on real data); ``workers``: data-loading processes;
    ``missing_labels``: what a real labelled split does with images that have no label file (BDD100K's pre-2021
    image zip has val images without masks): ``error`` refuses the split, ``skip`` leaves them out with a warning
    (counted per split: ``RealData.images_without_labels``)."""

    image_size: int = setting(32, identity=YES)
    train_images: int = setting(1024, identity=YES)
    #: in the identity as it always was: moving the data re-runs
    root: str = setting("", identity=YES)
    paths: dict[str, str] = setting({}, identity=NO)
    cache_dir: str = setting("", identity=NO)
    proxy_root: str = setting("", identity=LATER, later_default="")
    workers: int = setting(4, identity=NO)
    missing_labels: str = setting("error", identity=LATER, later_default="error", choices=("error", "skip"))


@dataclass
class PretrainConfig:
    """Backbone pretraining of the synthetic model zoo and the teacher's task head, cached by content hash."""

    foundation_steps: int = setting(600, identity=YES)
    proxy_steps: int = setting(300, identity=YES)
    head_steps: int = setting(150, identity=YES)
    batch_size: int = setting(32, identity=YES)
    lr: float = setting(1e-3, identity=YES)
    cache_dir: str = setting("", identity=NO)
    teacher_weights: str = setting("", identity=YES, digest=True)


@dataclass
class LauncherConfig:
    """Where a sweep's runs execute: ``auto`` (the fastest layout measured for this machine: one worker per GPU,
    or on CPU one single-threaded worker per core; ``kdbench.launchers.auto_layout``), ``inline`` (this process,
    one after another), ``local`` (``workers`` processes of this machine, through submitit) or ``slurm`` (one
    SLURM job per run, through submitit).
    ``processes`` (set by ``--nproc``): each run trains on that many DDP processes inside its job, one GPU each."""

    kind: str = setting("auto", identity=NO, choices=("auto", "inline", "local", "slurm"))
    workers: int = setting(2, identity=NO)
    #: DDP at a fixed global batch follows the one-process trajectory (``tests/test_ddp.py``)
    processes: int = setting(1, identity=NO)
    partition: str = setting("", identity=NO)
    timeout_min: int = setting(240, identity=NO)
    gpus_per_job: int = setting(1, identity=NO)
    cpus_per_job: int = setting(8, identity=NO)
    mem_gb: int = setting(32, identity=NO)
    array_parallelism: int = setting(64, identity=NO)


@dataclass
class SearchConfig:
    """Hyper-parameter search (issue 15, ``kdbench.search``): ``trials`` settings per (benchmark, pair, method).
    Trial 0 is the method's defaults with any ``method.<name>.<key>`` the config sets; trials 1.. are drawn from
    the method's ``search_space`` from ``seed`` (prefix-stable: 8 trials after 4 reuse the 4). A key the config
    sets is held at that value in every trial, not tuned. Every trial runs on every seed."""

    trials: int = setting(1, identity=RUN)
    seed: int = setting(0, identity=RUN)


@dataclass
class Config:
    suite: str = setting("synth5", identity=RUN)
    #: a bundle of other settings' values: those enter as themselves
    preset: str = setting("quick", identity=NO)
    methods: list[str] = setting(["student-only", "kd"], identity=RUN)
    pairs: list[str] = setting(["all"], identity=RUN)
    benchmarks: list[str] = setting(["all"], identity=RUN)
    seeds: list[int] = setting([0], identity=RUN)
    out: str = setting("runs", identity=NO)
    device: str = setting("auto", identity=NO, choices=("auto", "cpu", "cuda"))
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    #: a run's own method's hyper-parameters enter (``Job.hparams``), trial draws included
    method: dict[str, dict[str, Any]] = setting({}, identity=RUN, digest=True)
    #: the decode head of students and teachers: ``light`` (synthetic suites), ``mask2former`` (the paper's) or
    #: ``mask2former-tiny`` (a CPU-sized Mask2Former for tests)
    head: str = setting("light", identity=LATER, later_default="light", choices="kdbench.models.heads:HEADS")
    #: weight files of models that load from a file, by model name (``weights.dinov2-l=/w/dinov2_vitl14_pretrain.pth``)
    weights: dict[str, str] = setting({}, identity=NO, digest=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_declarations() -> None:
    """A TypeError for any setting defined without ``setting(...)``; run on import, so such a field fails at once."""
    for _ in iter_settings(Config()):
        pass


check_declarations()

def read_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML mapping from ``path``, or a UserError naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise UserError(f"malformed YAML in {path}{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must be a mapping of keys to values, not {type(data).__name__}")
    return data


def merge(config: Config, overrides: dict[str, Any], source: str) -> None:
    """Apply a nested mapping of overrides to ``config`` in place, checking keys and types."""
    for key, value in overrides.items():
        _assign(config, [str(key)], value, source)


def apply_set(config: Config, assignment: str) -> None:
    """Apply one ``--set a.b=value`` (value parsed as YAML: numbers, booleans, lists)."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r} must look like key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # YAML 1.1 reads on/off/yes/no as booleans; keep the word (e.g. proxy_stage=off)
    _assign(config, key.split("."), value, "--set")


#: mapping-valued config keys: what each maps a name to
MAPPINGS = {"method": "hyper-parameters", "train.stages": "stage settings", "weights": "file", "data.paths": "folder"}
STAGE_KEYS = {"steps": int, "epochs": float, "batch_size": int, "lr": float, "schedule": str, "warmup": float,
              "backbone_lr_mult": float}


def _assign(node: Any, path: list[str], value: Any, source: str, dotted_node: str = "") -> None:
    fields = {f.name: f for f in dataclasses.fields(node)}
    name = path[0]
    if name not in fields:
        raise UserError(f"{source}: unknown config key {name!r};{did_you_mean(name, fields)} valid keys here: "
                        f"{', '.join(fields)}")
    current = getattr(node, name)
    dotted = f"{dotted_node}.{name}" if dotted_node else name
    if isinstance(current, dict):
        _assign_mapping(current, dotted, path[1:], value, source)
        return
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise UserError(f"{source}: {name} is a value, not a section, so {'.'.join(path)} does not exist")
        _assign(current, path[1:], value, f"{source}: {name}", dotted)
        return
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise UserError(f"{source}: {name} is a section; set its keys, e.g. {name}.<key>=<value>")
        for key, sub in value.items():
            _assign(current, [str(key)], sub, f"{source}: {name}", dotted)
        return
    hint = typing.get_type_hints(type(node))[name]
    setattr(node, name, _check_type(value, hint, f"{source}: {name}"))


def _assign_mapping(mapping: dict[str, Any], dotted: str, path: list[str], value: Any, source: str) -> None:
    """``method.<name>.<key>`` and ``train.stages.<stage>.<key>`` (nested mappings, checked later or here), or
    ``weights.<model>`` and ``data.paths.<dataset>`` (a string each)."""
    nested = MAPPINGS[dotted] in ("hyper-parameters", "stage settings")
    if not path:
        if not isinstance(value, dict):
            raise UserError(f"{source}: {dotted} must be a mapping of names to {MAPPINGS[dotted]}")
        for key, sub in value.items():
            _assign_mapping(mapping, dotted, [str(key)], sub, source)
        return
    head, rest = path[0], path[1:]
    if not nested:
        if rest or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{source}: {dotted}.{head} must be a {MAPPINGS[dotted]} path")
        mapping[head] = str(value)
        return
    if not rest:
        if not isinstance(value, dict):
            raise UserError(f"{source}: {dotted}.{head} must be a mapping of {MAPPINGS[dotted]}")
        for key, sub in value.items():
            _assign_mapping(mapping, dotted, [head, str(key)], sub, source)
        return
    if len(rest) > 1:
        raise UserError(f"{source}: keys here look like {dotted}.<name>.<key>, not {dotted}.{'.'.join(path)}")
    if dotted == "train.stages":
        if rest[0] not in STAGE_KEYS:
            raise UserError(f"{source}: {dotted}.{head}.{rest[0]} is not a stage setting; valid: "
                            f"{', '.join(STAGE_KEYS)}")
        if value is None:  # null removes a setting a preset made (e.g. epochs, to give steps instead)
            mapping.get(head, {}).pop(rest[0], None)
            return
        value = coerce_scalar(value, STAGE_KEYS[rest[0]], f"{source}: {dotted}.{head}.{rest[0]}")
    mapping.setdefault(head, {})[rest[0]] = value


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, str):  # "0,1,2" or "kd,cwd"
            value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            value = [value]
        return [_check_type(v, item, where) for v in value]
    if origin in (typing.Union, types.UnionType):
        return value
    return coerce_scalar(value, hint, where)


_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def coerce_scalar(value: Any, expected: type, where: str) -> Any:
    """``value`` as a bool, int, float or str, or a UserError naming ``where``. Numeric strings count as floats,
    since YAML 1.1 reads ``3e-4`` as a string."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is bool and isinstance(value, bool):
        return value
    if expected is bool and isinstance(value, str) and value.lower() in _WORDS:
        return _WORDS[value.lower()]
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is float and numeric:
        return float(value)
    if expected is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if expected is str and (numeric or isinstance(value, str)):
        return str(value)
    raise UserError(f"{where} must be {getattr(expected, '__name__', expected)}, got {value!r}")


def validate(config: Config) -> None:
    """Checks that need the whole config: choices and positive sizes."""
    for dotted, declared_as, value in iter_settings(config):
        allowed = declared_as.allowed()
        if allowed is not None and value not in allowed:
            raise UserError(f"{dotted} must be one of {', '.join(allowed)}, got {value!r}")
    positive = {"train.steps": config.train.steps, "train.batch_size": config.train.batch_size,
                "eval.batch_size": config.eval.batch_size, "data.image_size": config.data.image_size,
                "launcher.workers": config.launcher.workers, "launcher.timeout_min": config.launcher.timeout_min,
                "launcher.processes": config.launcher.processes, "search.trials": config.search.trials}
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"{key} must be positive, got {value}")
    for key, value in {"eval.images": config.eval.images, "data.train_images": config.data.train_images,
                       "data.workers": config.data.workers}.items():
        if value < 0:
            raise UserError(f"{key} must be 0 or more, got {value}")
    for stage, settings in config.train.stages.items():
        for key in ("steps", "epochs", "batch_size", "lr"):
            if key in settings and settings[key] <= 0:
                raise UserError(f"train.stages.{stage}.{key} must be positive, got {settings[key]}")
        if settings.get("schedule", "cosine") not in choices_of("train.schedule"):
            raise UserError(f"train.stages.{stage}.schedule must be one of {', '.join(choices_of('train.schedule'))}")
        if "steps" in settings and "epochs" in settings:
            raise UserError(f"train.stages.{stage} sets both steps and epochs; give one")
    if 0 < config.data.train_images < config.train.batch_size:
        raise UserError(f"data.train_images ({config.data.train_images}) must be at least train.batch_size "
                        f"({config.train.batch_size})")
    if not config.seeds:
        raise UserError("seeds must name at least one seed")
