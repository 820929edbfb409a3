"""Suites: named sets of benchmarks (a source domain and its targets), pairs, an evaluation protocol, presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from kdbench.config import read_yaml
from kdbench.data.sources import check_domain
from kdbench.errors import UserError, did_you_mean
from kdbench.models.declare import declare_models, register_specs
from kdbench.models.zoo import ModelSpec, resolve_pairs


@dataclass(frozen=True)
class Benchmark:
    """Train on ``source``, score on ``source`` (in-domain) and each of ``targets`` (out-of-domain)."""

    name: str
    source: str
    targets: tuple[str, ...]
    description: str = ""

    @property
    def domains(self) -> tuple[str, ...]:
        return (self.source, *self.targets)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    protocol: str
    benchmarks: dict[str, Benchmark]
    pairs: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the models the suite (or a ``--config`` file) declares; registered again wherever the suite is unpickled
    #: (a launcher's worker), so its jobs find them
    models: tuple[ModelSpec, ...] = ()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        register_specs(self.models)

    @property
    def target_domains(self) -> list[str]:
        return sorted({t for b in self.benchmarks.values() for t in b.targets})


def suite_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("kdbench.suites").iterdir()
                  if p.name.endswith(".yaml"))


def suites_by_pair() -> dict[str, list[str]]:
    """Pair name -> the shipped suites whose ``pairs`` name it (each suite read once)."""
    owners: dict[str, list[str]] = {}
    for name in suite_names():
        for pair in load_suite(name).pairs:
            owners.setdefault(pair, []).append(name)
    return owners


def load_suite(name: str) -> Suite:
    """A shipped suite by name, or a suite YAML by path."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    elif name in suite_names():
        path = Path(str(resources.files("kdbench.suites") / f"{name}.yaml"))
    else:
        raise UserError(f"unknown suite {name!r};{did_you_mean(name, suite_names())} known suites: "
                        f"{', '.join(suite_names())}")
    return parse_suite(read_yaml(path, "suite"), str(path))


def parse_suite(data: dict[str, Any], where: str) -> Suite:
    def need(key: str, kind: type) -> Any:
        if key not in data:
            raise UserError(f"suite {where} has no {key!r}")
        if not isinstance(data[key], kind):
            raise UserError(f"suite {where}: {key!r} must be a {kind.__name__}")
        return data[key]

    benchmarks = {}
    for name, spec in need("benchmarks", dict).items():
        if not isinstance(spec, dict) or "source" not in spec or not spec.get("targets"):
            raise UserError(f"suite {where}: benchmark {name!r} needs a source and a list of targets")
        bench = Benchmark(name, spec["source"], tuple(spec["targets"]), spec.get("description", ""))
        for domain in bench.domains:
            check_domain(domain)
        benchmarks[name] = bench
    name = need("name", str)
    models = declare_models(data.get("models"), f"suite {name}")
    pairs = tuple(resolve_pairs([str(p) for p in need("pairs", list)]))
    return Suite(name=name, description=" ".join(str(data.get("description", "")).split()),
                 protocol=data.get("protocol", "whole"), benchmarks=benchmarks, pairs=pairs,
                 defaults=data.get("defaults") or {}, presets=data.get("presets") or {}, models=models)
