"""A name -> class registry with ``package.module:ClassName`` loading of user code.

Spaces, strategies and evaluators each have one; see ``epnas.spaces.register``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Generic, TypeVar

from epnas.errors import EpnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes of one kind (``base``) by name."""

    def __init__(self, kind: str, base: type[T], error: type[EpnasError] = EpnasError) -> None:
        self.kind, self.base, self.error = kind, base, error
        self._classes: dict[str, type[T]] = {}

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
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self._classes)

    def resolve(self, spec: str) -> tuple[str, type[T]]:
        """The canonical name and class of a registered name or a ``module:Class`` spec."""
        if spec in self._classes:
            return spec, self._classes[spec]
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
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise self.error(f"{spec} is not a subclass of {self.base.__module__}."
                             f"{self.base.__name__}")
        for name, registered in self._classes.items():
            if registered is cls:
                return name, cls
        return spec, cls

    def snapshot(self) -> dict[str, type[T]]:
        """A copy of the registered classes (tests restore it with :meth:`restore`)."""
        return dict(self._classes)

    def restore(self, snapshot: dict[str, type[T]]) -> None:
        self._classes = dict(snapshot)
