"""A name -> class registry: built-in classes, entry points of installed packages, and
``package.module:ClassName`` loading of user code.

Spaces, strategies and evaluators each have one; see ``epnas.spaces.register``. A
package makes its classes known to every command by entry points in the registry's
group (``epnas.spaces``, ``epnas.strategies``, ``epnas.evaluators``), e.g. in its
``pyproject.toml``::

    [project.entry-points."epnas.spaces"]
    macro = "my_package.spaces:MacroSpace"

Entry points are looked up when a name is first needed and imported only when used.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from epnas.errors import EpnasError

T = TypeVar("T")

BUILT_IN = "built-in"


class Registry(Generic[T]):
    """Classes of one kind (``base``) by name, with where each name came from."""

    def __init__(self, kind: str, base: type[T], error: type[EpnasError] = EpnasError, *,
                 group: str) -> None:
        self.kind, self.base, self.error, self.group = kind, base, error, group
        self._classes: dict[str, type[T]] = {}
        self._origins: dict[str, str] = {}
        self._scanned: tuple[str, ...] | None = None  # the sys.path entry points were read for
        self._entry_points: dict[str, EntryPoint] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering a subclass of the base under ``name``."""

        def decorator(cls: type[T]) -> type[T]:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"register({name!r}) needs a {self.base.__name__} subclass")
            if ":" in name:
                raise ValueError(f"{self.kind} names may not contain ':' ({name!r})")
            if self._classes.get(name, cls) is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._classes[name] = cls
            self._origins[name] = (BUILT_IN if cls.__module__.split(".")[0] == "epnas"
                                   else f"{cls.__module__}:{cls.__qualname__}")
            return cls

        return decorator

    def names(self) -> list[str]:
        """Registered names and those of installed entry points (not imported yet)."""
        return sorted({*self._classes, *self._plugins()})

    def origins(self) -> dict[str, str]:
        """Where every name comes from: ``built-in``, ``entry point (dist version)``, or
        the ``module:Class`` of a class registered from Python."""
        plugins = self._plugins()
        return {name: self._origins[name] if name in self._classes
                else _entry_point_origin(plugins[name]) for name in self.names()}

    def resolve(self, spec: str) -> tuple[str, type[T]]:
        """The canonical name and class of a registered name, an entry point's name, or a
        ``module:Class`` spec."""
        if spec in self._classes:
            return spec, self._classes[spec]
        plugin = self._plugins().get(spec)
        if plugin is not None:
            return spec, self._load(plugin)
        if ":" not in spec:
            raise self.error(f"unknown {self.kind} {spec!r}; known: {', '.join(self.names())} "
                             "(or give package.module:ClassName)")
        module_name, _, attr = spec.partition(":")
        if "" not in sys.path and os.getcwd() not in sys.path:
            # like `python -m`, user modules in the working directory are importable
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise self.error(f"cannot import {self.kind} module {module_name!r}: {exc}") from None
        cls = getattr(module, attr, None)
        if cls is None:
            raise self.error(f"module {module_name!r} has no {self.kind} {attr!r}")
        self._check_class(cls, spec)
        for name, registered in self._classes.items():
            if registered is cls:
                return name, cls
        return spec, cls

    def snapshot(self) -> Any:
        """A copy of the registered names (tests restore it with :meth:`restore`)."""
        return dict(self._classes), dict(self._origins)

    def restore(self, snapshot: Any) -> None:
        classes, origins = snapshot
        self._classes, self._origins = dict(classes), dict(origins)

    def _plugins(self) -> dict[str, EntryPoint]:
        """The group's entry points, read again whenever ``sys.path`` changed."""
        path = tuple(sys.path)
        if self._scanned != path:
            found: dict[str, EntryPoint] = {}
            for point in entry_points(group=self.group):
                found.setdefault(point.name, point)  # the first on sys.path wins, like imports
            self._entry_points, self._scanned = found, path
        return self._entry_points

    def _load(self, point: EntryPoint) -> type[T]:
        origin = _entry_point_origin(point)
        try:
            cls = point.load()
        except Exception as exc:  # a broken plug-in: say which one, whatever it raised
            raise self.error(f"cannot load {self.kind} {point.name!r} ({point.value}) from "
                             f"{origin}: {type(exc).__name__}: {exc}") from None
        self._check_class(cls, f"{point.value} ({origin})")
        self._classes[point.name], self._origins[point.name] = cls, origin
        return cls

    def _check_class(self, cls: object, what: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):  # type: ignore[arg-type]
            raise self.error(f"{what} is not a subclass of {self.base.__module__}."
                        f"{self.base.__name__}")


def _entry_point_origin(point: EntryPoint) -> str:
    dist = point.dist
    return "entry point" if dist is None else f"entry point ({dist.name} {dist.version})"
