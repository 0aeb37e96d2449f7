"""`dm.mapping.keys()`, `.values()` and `.items()`: live views, as a dict's are.

They are the standard library's views (set-like keys and items, `len`, `in`, comparison with
other sets and dict views), with iteration handed to the map's own iterators, which step through
batches of ready objects in C (docs/design.md, "Iteration") instead of one `__getitem__` per
key. Like a dict's views they show the map's current content; each loop walks the content as it
was when the loop started.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devicemap._core import Device, DeviceMapping


class DeviceMappingKeys(KeysView[str]):
    __slots__ = ()
    _mapping: DeviceMapping

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


class DeviceMappingValues(ValuesView["Device"]):
    __slots__ = ()
    _mapping: DeviceMapping

    def __iter__(self) -> Iterator[Device]:
        return self._mapping._iter_values()

    def __contains__(self, value: object) -> bool:
        return any(v is value or v == value for v in self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


class DeviceMappingItems(ItemsView[str, "Device"]):
    __slots__ = ()
    _mapping: DeviceMapping

    def __iter__(self) -> Iterator[tuple[str, Device]]:
        return self._mapping._iter_items()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"
