"""Hyper-parameter search spaces and trial sampling (issue 15, "fair comparison").

A method declares, beside ``defaults``, a ``search_space``: hyper-parameter name -> distribution
(:class:`LogUniform`, :class:`Uniform`, :class:`IntUniform`, :class:`Choice`). :func:`draw_trials` turns it into
settings: trial 0 is always the method's defaults, trial k > 0 a draw from a generator seeded by
(seed, scope, k), so the first four of eight trials are the four trials of a four-trial sweep (random search as in
DomainBed's ``hparams_registry``, Gulrajani and Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021).

Sampled floats are rounded to :data:`SIGNIFICANT_DIGITS` significant digits (and kept inside the range) so that
settings read well in tables and can be retyped with ``--set``. Trials of one sweep are distinct settings; a finite
space (only :class:`Choice` and :class:`IntUniform`) smaller than the count gives every setting it has, no more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kdbench.config import coerce_scalar
from kdbench.data.synthetic import stable_seed
from kdbench.errors import UserError

if TYPE_CHECKING:
    from kdbench.method import Method

SIGNIFICANT_DIGITS = 3
#: draws per trial before a finite space counts as having no new setting left
MAX_ATTEMPTS = 1000


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _round(value: float, low: float, high: float) -> float:
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return min(max(rounded, low), high)


def _check_float_default(key: str, default: Any, kind: str) -> None:
    if not isinstance(default, float):
        hint = "; use IntUniform or Choice for an int" if _is_int(default) else ""
        raise UserError(f"{key}: a {kind} range needs a float default, but the default is {default!r}{hint}")


def _check_bounds(key: str, low: Any, high: Any, kind: str) -> None:
    if not (_is_number(low) and _is_number(high)):
        raise UserError(f"{key}: {kind} bounds must be numbers, got low={low!r}, high={high!r}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{key}: {kind} bounds must be finite, got low={low!r}, high={high!r}")
    if low >= high:
        raise UserError(f"{key}: impossible {kind} range: low={low!r} must be below high={high!r}")


@dataclass(frozen=True)
class LogUniform:
    """A float whose logarithm is uniform on [log low, log high): weights and temperatures, whose plausible values
    span orders of magnitude across codebases. Needs 0 < low < high and a float default."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return _round(value, self.low, self.high)

    def check(self, key: str, default: Any) -> None:
        """Raise a one-line ``UserError`` naming ``key`` (``method.<name>.<key>``) if the range is impossible."""
        _check_bounds(key, self.low, self.high, "log-uniform")
        if self.low <= 0:
            raise UserError(f"{key}: a log-uniform range needs low > 0, got low={self.low!r}")
        _check_float_default(key, default, "log-uniform")

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= value <= self.high

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform:
    """A float uniform on [low, high): ratios and probabilities. Needs low < high and a float default."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return _round(rng.uniform(self.low, self.high), self.low, self.high)

    def check(self, key: str, default: Any) -> None:
        """Raise a one-line ``UserError`` naming ``key`` (``method.<name>.<key>``) if the range is impossible."""
        _check_bounds(key, self.low, self.high, "uniform")
        _check_float_default(key, default, "uniform")

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= value <= self.high

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def describe(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntUniform:
    """An int uniform on {low, ..., high}, both ends included. Needs int bounds, low < high and an int default."""

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high, endpoint=True))

    def check(self, key: str, default: Any) -> None:
        """Raise a one-line ``UserError`` naming ``key`` (``method.<name>.<key>``) if the range is impossible."""
        if not (_is_int(self.low) and _is_int(self.high)):
            raise UserError(f"{key}: integer-uniform bounds must be ints, got low={self.low!r}, high={self.high!r}")
        _check_bounds(key, self.low, self.high, "integer-uniform")
        if not _is_int(default):
            raise UserError(f"{key}: an integer-uniform range needs an int default, but the default is {default!r}")

    def contains(self, value: Any) -> bool:
        return _is_int(value) and self.low <= value <= self.high

    def bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def size(self) -> int:
        return self.high - self.low + 1

    def describe(self) -> str:
        return f"integer {{{self.low}, ..., {self.high}}}"


@dataclass(frozen=True)
class Choice:
    """One of ``values``, each equally likely: modes, flags, coarse step budgets. Every value must have the
    default's type (an int counts as a float where the default is a float)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        values = (self.values,) if isinstance(self.values, str) else tuple(self.values)
        object.__setattr__(self, "values", values)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def check(self, key: str, default: Any) -> None:
        """Raise a one-line ``UserError`` naming ``key`` (``method.<name>.<key>``) if no value can be drawn or a
        value's type differs from the default's."""
        if not self.values:
            raise UserError(f"{key}: a choice needs at least one value, got none")
        for value in self.values:
            if not _same_kind(value, default):
                raise UserError(f"{key}: choice value {value!r} has type {type(value).__name__}, but the default "
                                f"{default!r} has type {type(default).__name__}")

    def contains(self, value: Any) -> bool:
        return value in self.values

    def bounds(self) -> tuple[Any, ...]:
        return self.values

    def size(self) -> int:
        return len(set(self.values))

    def describe(self) -> str:
        return "choice {" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.values) + "}"


Distribution = LogUniform | Uniform | IntUniform | Choice
DISTRIBUTIONS = (LogUniform, Uniform, IntUniform, Choice)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return _is_number(value)
    return type(value) is type(default)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """``value`` with the default's scalar type (an int drawn for a float default becomes a float)."""
    if isinstance(default, (bool, int, float, str)):
        return coerce_scalar(value, type(default), where)
    return value


def method_label(method_cls: type[Method]) -> str:
    """The name used in ``method.<name>.<key>`` messages: the registered name, else the lower-cased class name."""
    return method_cls.registered_name or method_cls.__name__.lower()


def check_space(method_cls: type[Method]) -> None:
    """Refuse, with one line naming ``method.<name>.<key>``, a space whose key is not a hyper-parameter of the
    method, whose entry is not a distribution, whose range is impossible, whose values do not have the default's
    type, or whose range reaches a value the method's own ``check_hparams`` refuses (the ends of a range, every
    value of a choice)."""
    name = method_label(method_cls)
    defaults = method_cls.defaults
    for key, dist in method_cls.search_space.items():
        where = f"method.{name}.{key}"
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "none"
            raise UserError(f"{where}: the search space names a hyper-parameter {name!r} does not have; valid: {valid}")
        if not isinstance(dist, DISTRIBUTIONS):
            raise UserError(f"{where}: a search-space entry must be LogUniform, Uniform, IntUniform or Choice, "
                            f"got {dist!r}")
        dist.check(where, defaults[key])
        for value in dist.bounds():
            setting = {**defaults, key: _coerce(value, defaults[key], where)}
            try:
                method_cls.check_hparams(setting)
            except UserError as exc:
                raise UserError(f"{where}: the search range {dist.describe()} reaches {value!r}, which the method "
                                f"refuses ({exc})") from None


def tunable(method_cls: type[Method]) -> bool:
    """Whether the method has anything to tune; a method without a space is run at its defaults only."""
    return bool(method_cls.search_space)


def check_trial_count(count: object) -> int:
    """``count`` (an int, or a string of one, as ``--trials`` gives it) as a positive int, or a one-line error."""
    value: Any = count
    if isinstance(count, str):
        try:
            value = int(count.strip())
        except ValueError:
            value = count
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"--trials must be a positive integer, got {count!r}")
    return value


def space_size(space: Mapping[str, Distribution]) -> float:
    """How many distinct settings a space holds: a count for a finite space, ``math.inf`` once a float range is
    in it (rounded floats are finite in principle, but far more than any sweep draws)."""
    size = 1.0
    for dist in space.values():
        if not isinstance(dist, (Choice, IntUniform)):
            return math.inf
        size *= dist.size()
    return size


def draw_trials(method_cls: type[Method], count: object, seed: int, scope: str) -> list[dict[str, Any]]:
    """``count`` settings (full hyper-parameter dicts) for one (benchmark, pair, method), named by ``scope``
    (e.g. ``"synth5/f2l/gkd"``).

    Trial 0 is the method's defaults. Trial k > 0 starts from the defaults and replaces every key of the space
    (in sorted key order) by a draw from ``numpy.random.default_rng(stable_seed("trial", seed, scope, k, a))``,
    ``a`` = 0 normally and counting up only when that draw repeats an earlier trial; so trial k depends on
    (seed, scope, k) and the trials before it, never on ``count`` (prefix-stable). Values keep the default's
    type. A method without a space gives the defaults alone, whatever ``count``.
    """
    count = check_trial_count(count)
    method_cls.check_search_space()
    defaults = dict(method_cls.defaults)
    space = method_cls.search_space
    trials = [defaults]
    defaults_in_space = all(dist.contains(defaults[key]) for key, dist in space.items())
    count = int(min(count, space_size(space) + (0 if defaults_in_space else 1)))
    name = method_label(method_cls)
    for k in range(1, count):
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng(stable_seed("trial", seed, scope, k, attempt))
            trial = dict(defaults)
            for key in sorted(space):
                trial[key] = _coerce(space[key].sample(rng), defaults[key], f"method.{name}.{key}")
            if trial not in trials:
                trials.append(trial)
                break
        else:
            break  # the space has no setting left that is new
    return trials


def describe_space(method_cls: type[Method]) -> str:
    """One line: ``key: distribution; ...``, or a note that the method is tuned over nothing."""
    if not tunable(method_cls):
        return "no search space (run at its defaults only)"
    return "; ".join(f"{key}: {dist.describe()}" for key, dist in method_cls.search_space.items())
