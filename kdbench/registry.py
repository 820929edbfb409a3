"""A small registry type fed by decorators and by Python entry points.

Built-in methods and third-party plugins register the same way: an entry point in the ``kdbench.methods`` group
that names the class (``name = "package.module:Class"``). Entry points are read lazily, on first lookup, so
listing or running one method does not import every plugin's dependencies up front.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from kdbench.errors import UserError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects. ``kind`` is used in messages ("unknown method 'x'; known methods: ...")."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, object] | None = None

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({existing!r} and {obj!r})")
            self._items[name] = obj
            if isinstance(obj, type):
                obj.registered_name = name
            return obj

        return decorate

    def _discover(self) -> dict[str, object]:
        if self._entry_points is None:
            self._entry_points = {}
            if self.group:
                for ep in entry_points(group=self.group):
                    first = self._entry_points.setdefault(ep.name, ep)
                    if first.value != ep.value:
                        warnings.warn(f"{self.kind} {ep.name!r} is offered by two packages ({first.value} and "
                                      f"{ep.value}); using {first.value}", stacklevel=2)
        return self._entry_points

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._discover()))

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._discover()

    def get(self, name: str) -> T:
        if name not in self._items:
            ep = self._discover().get(name)
            if ep is None:
                raise UserError(f"unknown {self.kind} {name!r};{did_you_mean(name, self.names())} known {self.kind}s: "
                                f"{', '.join(self.names())}")
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not take the whole tool down with a traceback
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise UserError(f"{self.kind} {name!r} failed to load from {ep.value}: {reason}") from exc
            self.register(name)(obj)
        return self._items[name]

    def resolve(self, names: list[str], all_names: list[str] | None = None) -> list[str]:
        """Expand ``all`` and check every name, so a typo fails before any work starts."""
        valid = all_names if all_names is not None else self.names()
        if names == ["all"]:
            return list(valid)
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise UserError(f"unknown {self.kind} {unknown[0]!r};{did_you_mean(unknown[0], valid)} known {self.kind}s: "
                            f"{', '.join(valid)}")
        return list(dict.fromkeys(names))
