"""Resolve a run's configuration from its layers and check every name before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from kdbench.config import Config, apply_set, merge, read_yaml, validate
from kdbench.errors import UserError
from kdbench.method import METHODS, RunContext
from kdbench.models.zoo import PAIRS, ModelSpec, resolve_pairs
from kdbench.record import TEACHER
from kdbench.registry import Registry
from kdbench.suite import Suite, load_suite, suites_by_pair


def resolve_config(config_file: str | None = None, options: dict[str, Any] | None = None,
                   sets: tuple[str, ...] | list[str] = ()) -> tuple[Config, Suite]:
    """Defaults < suite defaults < suite preset < ``config_file`` < ``options`` (CLI flags) < ``sets``."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    user = read_yaml(config_file) if config_file else {}
    declared = user.pop("models", None) if isinstance(user, dict) else None
    probe = Config()
    merge(probe, {k: v for k, v in user.items() if k in ("suite", "preset")}, str(config_file))
    merge(probe, {k: v for k, v in options.items() if k in ("suite", "preset")}, "option")
    for assignment in sets:
        if assignment.split("=", 1)[0].strip() in ("suite", "preset"):
            apply_set(probe, assignment)
    suite = load_suite(probe.suite)
    if declared is not None:  # a --config file's models travel with the suite to every worker
        from dataclasses import replace

        from kdbench.models.declare import declare_models

        suite = replace(suite, models=suite.models + declare_models(declared, f"config {config_file}"))
    if probe.preset not in suite.presets:
        raise UserError(f"suite {suite.name!r} has no preset {probe.preset!r}; presets: {', '.join(suite.presets)}")

    cfg = Config()
    cfg.eval.protocol = suite.protocol
    merge(cfg, suite.defaults, f"suite {suite.name} defaults")
    merge(cfg, suite.presets[probe.preset], f"suite {suite.name} preset {probe.preset}")
    merge(cfg, user, str(config_file))
    merge(cfg, options, "option")
    for assignment in sets:
        apply_set(cfg, assignment)
    cfg.suite, cfg.preset = suite.name, probe.preset
    validate(cfg)
    return cfg, suite


def selections(cfg: Config, suite: Suite) -> tuple[list[str], list[str], list[str]]:
    """Benchmarks, pairs and methods by name, ``all`` expanded; an unknown name lists the valid ones."""
    for option, names in (("--benchmarks", cfg.benchmarks), ("--pairs", cfg.pairs), ("--methods", cfg.methods)):
        if not names:
            raise UserError(f"{option} names nothing; give at least one name or 'all'")
    benchmarks = Registry("benchmark").resolve(cfg.benchmarks, list(suite.benchmarks))
    pair_names = list(suite.pairs) if cfg.pairs == ["all"] else cfg.pairs
    pairs = resolve_pairs(pair_names)  # teacher:student pairs composed and registered
    foreign = [name for name in pairs if name not in suite.pairs]
    listed = suites_by_pair() if foreign else {}
    for name in foreign:
        owners = listed.get(name, [])
        if owners:
            raise UserError(f"--pairs: {name!r} is a pair of suite {', '.join(owners)}, not of {suite.name} "
                            f"(its pairs: {', '.join(suite.pairs)}); run it with --suite {owners[0]}")
    if TEACHER in cfg.methods:
        raise UserError("'teacher' is the teacher's own row, added to every sweep; it is not a method to select")
    methods = METHODS.resolve(cfg.methods)
    for name in dict.fromkeys([*methods, *cfg.method]):
        if name not in METHODS:
            raise UserError(f"method.{name}: unknown method {name!r}; known methods: {', '.join(METHODS.names())}")
        METHODS.get(name).resolve_hparams(cfg.method.get(name, {}))
    return benchmarks, pairs, methods


def check_compatible(methods: list[str], pairs: list[str]) -> None:
    """Every selected method must support every selected pair's student and teacher kinds, checked before any
    work; the error names the first combination that does not fit."""
    from kdbench.models.zoo import MODELS

    for method in methods:
        cls = METHODS.get(method)
        for pair_name in pairs:
            pair = PAIRS.get(pair_name)
            for role, model in (("student", pair.student), ("teacher", pair.teacher)):
                problem = cls.kind_problem(role, MODELS.get(model).arch)
                if problem:
                    raise UserError(f"{problem} (pair {pair_name!r} has {model})")


def check_token_grids(methods: list[str], pairs: list[str], image_size: int) -> None:
    """A method that pairs tokens one for one (``Method.same_grid``) on a pair of ViTs whose token grids differ at
    ``image_size`` (another patch size, say) is refused before any work, naming both grids."""
    from kdbench.models.grid import token_grid
    from kdbench.models.zoo import MODELS

    paired = [m for m in methods if METHODS.get(m).same_grid]
    for pair_name in pairs if paired else ():
        pair = PAIRS.get(pair_name)
        student, teacher = (token_grid(MODELS.get(m), image_size) for m in (pair.student, pair.teacher))
        if student and teacher and student != teacher:
            raise UserError(f"method {paired[0]!r} pairs student and teacher tokens one for one, but pair "
                            f"{pair_name!r} puts them on different grids at data.image_size={image_size}: "
                            f"student {pair.student} {student[0]}×{student[1]}, teacher {pair.teacher} "
                            f"{teacher[0]}×{teacher[1]}; choose models with the same patch size")


def check_search_spaces(methods: list[str]) -> None:
    """Every selected method's search space must name its own hyper-parameters with possible ranges (checked
    whatever ``search.trials``: a plugin's broken space is found on its first sweep, not its first search)."""
    for method in methods:
        METHODS.get(method).check_search_space()


def check_teacher_weights(cfg: Config, pairs: list[str]) -> None:
    """Before any work: every selected real model has its ``weights.<model>`` file (a timm-built one: or its
    offline Hugging Face cache entry, its keys checked), and a ``pretrain.teacher_weights`` file loads into every
    selected pair's (synthetic) teacher."""
    from kdbench.models.checkpoints import load_weights
    from kdbench.models.zoo import MODELS

    for model in dict.fromkeys(m for p in pairs for m in (PAIRS.get(p).teacher, PAIRS.get(p).student)):
        if MODELS.get(model).pretrain != "file":
            continue
        if MODELS.get(model).backend == "timm":
            cfg.weights[model] = str(_timm_weights(MODELS.get(model), cfg))
            continue
        path = cfg.weights.get(model, "")
        if not path:
            raise UserError(f"model {model} loads its weights from a file: set weights.{model}=PATH (e.g. --set "
                            f"weights.{model}=/weights/<official checkpoint>)")
        if not Path(path).is_file():
            raise UserError(f"weights.{model}: weights file {path} does not exist")
    unknown = sorted(set(cfg.weights) - set(MODELS.names()))
    if unknown:
        raise UserError(f"weights.{unknown[0]}: unknown model; models: {', '.join(MODELS.names())}")
    if not cfg.pretrain.teacher_weights:
        return
    for teacher in dict.fromkeys(PAIRS.get(p).teacher for p in pairs):
        load_weights(MODELS.get(teacher).build_backbone(cfg.data.image_size), cfg.pretrain.teacher_weights)


def _timm_weights(spec: ModelSpec, cfg: Config) -> Path:
    """A timm-built model's weight file (``weights.<model>``, its declared file, or its offline Hugging Face cache
    entry), its keys fitted to the model on the meta device: a file of another family fails here, naming keys.
    The file found is what the runs read and what their identity digests (set as ``weights.<model>``)."""
    from kdbench.models.hub import weights_path
    from kdbench.models.timm_weights import check_timm_weights

    path = weights_path(spec, cfg.weights)
    check_timm_weights(spec, path, cfg.data.image_size)
    return path


def check_data_root(cfg: Config, suite: Suite, benchmarks: list[str]) -> None:
    """A sweep over real datasets needs to know where they are, checked before any work."""
    from kdbench.data.sources import is_real

    real = [d for b in benchmarks for d in suite.benchmarks[b].domains if is_real(d)]
    if real and not cfg.data.root and not cfg.data.paths:
        raise UserError(f"suite {suite.name} reads real datasets ({', '.join(dict.fromkeys(real))}): give "
                        f"--data-root DIR (or data.root / data.paths.<dataset>)")


def check_tensorboard(cfg: Config) -> None:
    """``train.tensorboard=true`` needs the tensorboard package, looked up (not imported) before any work."""
    from kdbench.engine.tensorboard import available

    if cfg.train.tensorboard and not available():
        raise UserError("train.tensorboard=true needs the tensorboard package: pip install 'kdbench[tb]'")


def check_writable(out: Path) -> None:
    """Create ``out`` if needed and prove a file can be written there, or fail naming the folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".kdbench-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"output directory {out} is not writable: {exc.strerror or exc}") from exc


class _FixedKinds:
    """Stand-in for a source's stage data in the pre-flight: which data kinds are a fixed set, nothing loaded."""

    def __init__(self, real: bool):
        self.real = real

    def fixed_inputs(self, kind: str) -> bool | None:
        from kdbench.data.loaders import FIXED_KINDS

        return None if self.real or kind not in FIXED_KINDS else True


def check_teacher_cache(cfg: Config, suite: Suite, benchmarks: list[str], pairs: list[str], methods: list[str]
                        ) -> None:
    """``train.teacher_cache=on`` holds only where every teacher-using stage of every selected run reads a fixed
    input set; the first stage that does not is named, before any work. A method's taps are asked of its class
    (``Method.teacher_taps(hp)``); its stages of a method built with random weights and each run's context."""
    if cfg.train.teacher_cache != "on":
        return
    import torch

    from kdbench.data.sources import domain_classes, is_real
    from kdbench.engine.teacher_cache import cached_stages
    from kdbench.models.heads import make_head
    from kdbench.models.segmentor import Segmentor
    from kdbench.models.zoo import MODELS

    sources = {suite.benchmarks[b].source for b in benchmarks}
    for pair_name in pairs:
        pair = PAIRS.get(pair_name)
        models: dict[int, dict[str, Segmentor]] = {}  # per class count
        for method in methods:
            cls = METHODS.get(method)
            hp = cls.resolve_hparams(cfg.method.get(method, {}))
            taps = cls.teacher_taps(hp)
            for source in sorted(sources):
                if is_real(source) and taps:
                    raise UserError(f"train.teacher_cache=on: {source} is a real dataset whose training crops are "
                                    f"augmented at every draw, so method {method!r}'s teacher outputs cannot be "
                                    f"cached; use train.teacher_cache=auto (caches exactly where inputs are a fixed "
                                    f"set) or off")
            if any(is_real(s) for s in sources) or not taps:
                continue
            for classes in sorted({len(domain_classes(s)) for s in sources}):
                if classes not in models:  # random weights on the CPU: only the method's stages are asked for
                    models[classes] = {}
                    for role, name in (("teacher", pair.teacher), ("student", pair.student)):
                        backbone = MODELS.get(name).build_backbone(cfg.data.image_size)
                        models[classes][role] = Segmentor(backbone, make_head(cfg.head, backbone, classes))
                context = RunContext(pair.kind, cfg.data.image_size, classes, torch.device("cpu"))
                built = cls(models[classes]["teacher"], models[classes]["student"], context, **hp)
                try:
                    cached_stages(built, _FixedKinds(real=False), "on")
                except UserError as exc:
                    raise UserError(f"{exc} (pair {pair_name})") from None
