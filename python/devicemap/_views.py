"""`dm.mapping.keys()`, `.values()` and `.items()`: live views, as a dict's are.

They are the standard library's views (set-like keys and items, `len`, `in`, comparison with
other sets and dict views), with iteration handed to the map's own iterators: CPython's list
iterators over the map's shared key objects and a list of its devices, zipped for items
(docs/design.md, "Iteration"), instead of one `__getitem__` per key. Like a dict's views they
show the map's current content; each loop walks the content as it was when the loop started,
and `reversed()` walks it backwards (from a copy of that content).
`__iter__` is `_ViewIter`, a descriptor in the extension, not a `def`: the map is read in C,
with no Python code (where threads may switch) between reading it and handing it out.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, KeysView, ValuesView
from typing import TYPE_CHECKING, TypeVar

from devicemap._core import _ViewIter

_T = TypeVar("_T")

if TYPE_CHECKING:
    from devicemap._core import Device, DeviceMapping


class _Listed:
    """What the three views do alike over one snapshot of their content (their own `__iter__`):
    `reversed()` and the repr."""

    __slots__ = ()

    def __reversed__(self: Iterable[_T]) -> Iterator[_T]:
        return reversed(list(self))

    def __repr__(self: Iterable[object]) -> str:
        return f"{type(self).__name__}({list(self)!r})"


class DeviceMappingKeys(_Listed, KeysView[str]):
    __slots__ = ()
    _mapping: DeviceMapping
    __iter__ = _ViewIter("_iter_keys")


class DeviceMappingValues(_Listed, ValuesView["Device"]):
    __slots__ = ()
    _mapping: DeviceMapping
    __iter__ = _ViewIter("_iter_values")

    def __contains__(self, value: object) -> bool:
        return any(v is value or v == value for v in self)


class DeviceMappingItems(_Listed, ItemsView[str, "Device"]):
    __slots__ = ()
    _mapping: DeviceMapping
    __iter__ = _ViewIter("_iter_items")
