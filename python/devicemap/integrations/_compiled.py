"""An HF device map (a plain dict) compiled once into devicemap's lookup, and kept while the
dict's keys are unchanged.

transformers asks `get_device(device_map, name)` once or twice per tensor, always with the same
dict, and rebuilding anything of size O(keys) per call is what makes stock transformers slow.
So a dict's keys are compiled once, and two caches find the compiled form again:

1. `TrackedDeviceMap`, a `dict` subclass the integration hands to transformers where it
   finalizes a load's device map. It carries its compiled form and drops it on any mutation
   through its methods, so a lookup costs one attribute read to find it (O(1)).
2. For a plain dict the integration did not make (a caller's own, or one transformers built
   elsewhere), an id-keyed cache holds the dict itself (so its id cannot be reused while
   cached) and the set of its keys, and checks `dict.keys() == keys` before each use. That is
   O(keys), but runs in C without hashing a key (their hashes are cached in the `str`s).
   CPython has no O(1) way to know a plain dict is unchanged (its version tag is private and
   going away), so exactness costs this check; `from_pretrained` never pays it, since its map
   is tracked. Measured per `get_device` call (benches/bench_from_pretrained.py --lookups,
   release build, shared machine): 2-4 us with a tracked map whatever its size; 41 us (604
   keys) and 375 us (5,404 keys) with a plain dict; 1.2 ms and 15 ms for stock transformers,
   which sorts all keys and matches one regular expression of them per call.

Only the keys are compiled: which key covers a name depends on the keys alone, and the value
handed back is read from the dict itself at the covering key, so it is the very object the map
holds (an `int`, a `str` or a `torch.device`), as transformers returns it, and a value changed in
place is seen at once. Values are never parsed; transformers does not parse them either.
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, cast

from devicemap._core import Device, DeviceMap
from devicemap._types import DeviceType

logger = logging.getLogger("devicemap.integrations")

# transformers' fallback for a name no key covers (when the map has no "" key).
FALLBACK = "cpu"
_ids = operator.attrgetter("id")


class CompiledKeys:
    """The keys of one map as a devicemap lookup. Key `i` is stored with the device `meta:i`,
    so a lookup gives the position of the covering key; the dict supplies the value."""

    __slots__ = ("_index", "keys", "reported")

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys
        self._index = DeviceMap(
            dict(zip(keys, map(Device, itertools.repeat(DeviceType.META), range(len(keys))), strict=True))
        )
        # Names already reported as uncovered: each is logged once per compiled map.
        self.reported: set[str] = set()

    def key_for(self, name: str) -> Any | None:
        """The key covering `name`, or None."""
        try:
            device = self._index.device_for(name)
        except (KeyError, ValueError):
            # KeyError: nothing covers it. ValueError: a name the lookup rejects (empty, a
            # trailing dot), which no key can cover at a dot boundary either.
            return None
        return self.keys[cast(int, device.id)]

    def keys_for(self, names: list[str]) -> list[Any | None]:
        """The covering key of each name (None where nothing covers it), in one batch call."""
        try:
            devices = self._index.devices_for(names, None)
        except ValueError:
            # A name the lookup rejects (empty, a trailing dot): no key covers it at a dot
            # boundary either. Rare enough to find by looking the names up one by one.
            return [self.key_for(name) for name in names]
        return [None if device is None else self.keys[_ids(device)] for device in devices]

    def uncovered_groups(self, names: list[str]) -> list[str]:
        """The names no key covers, runs grouped (`model.layers.{3..60}.mlp.weight`)."""
        return [group for group, _ in self._index.coverage(names).uncovered_groups]

    def report(self, uncovered: Iterable[str]) -> None:
        new = [name for name in uncovered if name not in self.reported]
        if not new:
            return
        self.reported.update(new)
        shown = ", ".join(repr(name) for name in new[:5])
        more = f" and {len(new) - 5} more" if len(new) > 5 else ""
        logger.warning(
            'device map covers %d tensor name(s) with no key and has no "" key: %s%s; '
            "they go to %r, as transformers places them",
            len(new),
            shown,
            more,
            FALLBACK,
        )


class TrackedDeviceMap(dict):  # type: ignore[type-arg]
    """A `dict` that carries its compiled lookup and drops it on any change made through its
    methods. It pickles and copies as a plain `dict`."""

    __slots__ = ("_compiled", "_generation")
    _compiled: CompiledKeys | None
    _generation: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changed()

    def _changed(self) -> None:
        # Called after the change, so a compile that raced with it and stored a stale form is
        # wiped; the generation stops a compile that started before the change from storing.
        self._compiled = None
        self._generation = getattr(self, "_generation", 0) + 1

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed()

    def __ior__(self, other: Any) -> TrackedDeviceMap:  # type: ignore[misc]
        super().__ior__(other)
        self._changed()
        return self

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, *args: Any) -> Any:
        try:
            return super().pop(*args)
        finally:
            self._changed()

    def popitem(self) -> tuple[Any, Any]:
        try:
            return super().popitem()
        finally:
            self._changed()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        try:
            return super().setdefault(key, default)
        finally:
            self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().update(*args, **kwargs)
        finally:
            self._changed()

    def __reduce__(self) -> tuple[type[dict], tuple[dict]]:  # type: ignore[type-arg]
        return (dict, (dict(self),))

    def compiled(self) -> CompiledKeys:
        compiled = self._compiled
        # The length check catches inserts and deletes made around the methods
        # (`dict.__setitem__(d, ...)`, C code), at no cost.
        if compiled is None or len(compiled.keys) != len(self):
            generation = self._generation
            compiled = CompiledKeys(list(self))
            if generation == self._generation:
                self._compiled = compiled
        return compiled


# Plain dicts: id -> (the dict, its keys, compiled). The dict is held so its id stays its own.
_CACHE_SIZE = 4
_cache: OrderedDict[int, tuple[dict, frozenset[Any], CompiledKeys]] = OrderedDict()  # type: ignore[type-arg]
_cache_lock = threading.Lock()


def compiled_for(mapping: dict) -> CompiledKeys:  # type: ignore[type-arg]
    """The compiled lookup of `mapping`, built at most once while its keys stay the same."""
    if type(mapping) is TrackedDeviceMap:
        return mapping.compiled()
    key = id(mapping)
    entry = _cache.get(key)
    if entry is not None and entry[0] is mapping and mapping.keys() == entry[1]:
        return entry[2]
    keys = list(mapping)
    compiled = CompiledKeys(keys)
    with _cache_lock:
        _cache[key] = (mapping, frozenset(keys), compiled)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def clear_cache() -> None:
    """Forgets the plain dicts held by the cache."""
    with _cache_lock:
        _cache.clear()


def track(device_map: Any) -> Any:
    """A `TrackedDeviceMap` copy of a plain dict; anything else unchanged."""
    if type(device_map) is dict:
        return TrackedDeviceMap(device_map)
    return device_map


def lookup(mapping: dict, name: str) -> Any:  # type: ignore[type-arg]
    """What transformers' `expand_device_map(mapping, [name])[name]` gives where it is right."""
    compiled = compiled_for(mapping)
    key = compiled.key_for(name)
    if key is None:
        compiled.report((name,))
        return FALLBACK
    return mapping[key]


def expand(mapping: dict, names: Iterable[str]) -> dict[str, Any]:  # type: ignore[type-arg]
    """What transformers' `expand_device_map(mapping, names)` gives where it is right."""
    names = names if isinstance(names, list) else list(names)
    compiled = compiled_for(mapping)
    keys = compiled.keys_for(names)
    if None in keys:
        compiled.report(name for name, key in zip(names, keys, strict=True) if key is None)
        return {
            name: FALLBACK if key is None else mapping[key] for name, key in zip(names, keys, strict=True)
        }
    return dict(zip(names, map(mapping.__getitem__, keys), strict=True))
