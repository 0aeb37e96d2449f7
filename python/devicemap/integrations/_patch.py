"""Swapping functions in every loaded module of a package, and putting them back exactly."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from devicemap.integrations import UnsupportedVersionError


def _modules(prefixes: tuple[str, ...]) -> Iterator[ModuleType]:
    for name, module in list(sys.modules.items()):
        # Blocked imports leave None in sys.modules; a few packages put other objects there.
        if isinstance(module, ModuleType) and (
            name in prefixes or name.startswith(tuple(p + "." for p in prefixes))
        ):
            yield module


class Patch:
    """Replaces each original function wherever a module of `prefixes` binds it (under any
    name: `from .accelerate import get_device as gd` is caught too), and undoes that exactly.

    Modules imported later that take a function from its defining module get the replacement,
    since the defining module is patched as well; `undo` rescans, so it finds them too.
    """

    def __init__(self, prefixes: tuple[str, ...], replacements: dict[str, tuple[Any, Any]]) -> None:
        self.prefixes = prefixes
        self.replacements = replacements
        # By id: the functions are compared by identity, never by ==.
        self._new_for = {id(old): new for old, new in replacements.values()}
        self._old_for = {id(new): old for old, new in replacements.values()}

    def _swap(self, table: dict[int, Any]) -> list[str]:
        swapped = []
        for module in _modules(self.prefixes):
            namespace = vars(module)
            for attr, value in list(namespace.items()):
                target = table.get(id(value))
                if target is not None and namespace.get(attr) is value:
                    setattr(module, attr, target)
                    swapped.append(f"{module.__name__}.{attr}")
        return swapped

    def apply(self) -> list[str]:
        """Patches every module now loaded; returns the attributes replaced."""
        return self._swap(self._new_for)

    def undo(self) -> list[str]:
        """Puts the originals back wherever a replacement is bound."""
        return self._swap(self._old_for)


def import_target(package: str, module: str) -> tuple[ModuleType, str]:
    """The module of `package` whose functions an integration replaces, and the package's
    version; an `ImportError` saying what to install (the package and torch) when missing."""
    try:
        target = importlib.import_module(module)
        version = str(importlib.import_module(package).__version__)
    except ImportError as error:
        raise ImportError(
            f"devicemap.integrations.{package} needs {package} and torch: pip install {package} torch"
        ) from error
    return target, version


def expect_functions(
    module: ModuleType,
    package: str,
    version: str,
    tested: str,
    expected: Mapping[str, tuple[str, ...]],
) -> dict[str, Callable[..., Any]]:
    """The functions of `module` named in `expected`, checked to take exactly those parameters;
    `UnsupportedVersionError` naming the installed version otherwise."""
    found: dict[str, Callable[..., Any]] = {}
    for name, parameters in expected.items():
        where = f"{module.__name__}.{name}"
        function = getattr(module, name, None)
        if not inspect.isfunction(function):
            raise UnsupportedVersionError(
                f"{package} {version} is not supported by devicemap.integrations.{package}: it has no "
                f"function {where} (tested with {package} {tested}); nothing was patched"
            )
        actual = tuple(inspect.signature(function).parameters)
        if actual != parameters:
            raise UnsupportedVersionError(
                f"{package} {version} is not supported by devicemap.integrations.{package}: {where} takes "
                f"({', '.join(actual)}), expected ({', '.join(parameters)}) "
                f"(tested with {package} {tested}); nothing was patched"
            )
        found[name] = function
    return found


class Switch:
    """One integration's on/off state. `enable` builds its `Patch` (`build(**options)` imports
    the target and checks its functions) and applies it, again on later calls so that modules
    imported since are patched too; a call with other options puts the originals back and
    builds the patch for those. `disable` undoes it, then runs `after_disable`."""

    def __init__(self, build: Callable[..., Patch], after_disable: Callable[[], None] = lambda: None) -> None:
        self._build = build
        self._after_disable = after_disable
        self._lock = threading.Lock()
        self._patch: Patch | None = None
        self._options: dict[str, Any] = {}

    def enable(self, **options: Any) -> None:
        with self._lock:
            if self._patch is not None and options != self._options:
                self._patch.undo()
                self._patch = None
            if self._patch is None:
                self._patch = self._build(**options)
                self._options = options
            self._patch.apply()

    def disable(self) -> None:
        with self._lock:
            if self._patch is None:
                return
            self._patch.undo()
            self._patch = None
            self._options = {}
            self._after_disable()

    def is_enabled(self) -> bool:
        return self._patch is not None

    def options(self) -> dict[str, Any]:
        """The options it is enabled with (`{}` when disabled)."""
        return dict(self._options)

    @contextlib.contextmanager
    def enabled(self, **options: Any) -> Iterator[None]:
        """Enabled (with `options`) inside the block; left as it was found afterwards, with the
        options it had (nested blocks are fine)."""
        previous = self.options() if self.is_enabled() else None
        self.enable(**options)
        try:
            yield
        finally:
            if previous is None:
                self.disable()
            else:
                self.enable(**previous)
