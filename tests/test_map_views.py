"""`dm.mapping.keys()`, `.values()` and `.items()` behave as a dict's views: live, set-like
for keys and items, and iterated in batches by the map (each loop sees the content as it was
when the loop started)."""

from __future__ import annotations

from collections.abc import ItemsView, KeysView, ValuesView

import pytest
from devicemap import Device, DeviceMap


@pytest.fixture
def dm() -> DeviceMap:
    return DeviceMap({"a": Device.cpu(), "b": Device.gpu(1), "c": Device.disk()})


def test_views_are_the_standard_views_and_iterate_in_order(dm: DeviceMap) -> None:
    view = dm.mapping
    assert isinstance(view.keys(), KeysView)
    assert isinstance(view.values(), ValuesView)
    assert isinstance(view.items(), ItemsView)
    assert list(view.keys()) == ["a", "b", "c"]
    assert list(view.values()) == [Device.cpu(), Device.gpu(1), Device.disk()]
    assert list(view.items()) == [("a", Device.cpu()), ("b", Device.gpu(1)), ("c", Device.disk())]
    assert len(view.keys()) == len(view.values()) == len(view.items()) == 3


def test_views_compare_and_contain_as_a_dicts_do(dm: DeviceMap) -> None:
    plain = {"a": Device.cpu(), "b": Device.gpu(1), "c": Device.disk()}
    view = dm.mapping
    assert view.keys() == plain.keys()
    assert view.keys() == {"a", "b", "c"}
    assert view.items() == plain.items()
    assert view.keys() != ["a", "b", "c"]  # a dict's keys never equal a list either
    assert view.keys() & {"b", "z"} == {"b"}
    assert "a" in view.keys()  # noqa: SIM118 - the view's own __contains__
    assert "z" not in view.keys()  # noqa: SIM118
    assert ("b", Device.gpu(1)) in view.items()
    assert ("b", Device.cpu()) not in view.items()
    assert ("z", Device.cpu()) not in view.items()
    assert Device.disk() in view.values()
    assert Device.gpu(7) not in view.values()


def test_views_are_live_and_a_loop_sees_its_start(dm: DeviceMap) -> None:
    keys, values, items = dm.mapping.keys(), dm.mapping.values(), dm.mapping.items()
    dm["d"] = Device.gpu(2)
    del dm["a"]
    assert list(keys) == ["b", "c", "d"]
    assert list(values) == [Device.gpu(1), Device.disk(), Device.gpu(2)]
    assert ("d", Device.gpu(2)) in items
    seen = []
    for key, device in items:
        seen.append((key, device))
        dm.clear()
    assert seen == [("b", Device.gpu(1)), ("c", Device.disk()), ("d", Device.gpu(2))]
    assert len(items) == 0
    assert list(values) == []


def test_iterating_hands_out_the_maps_shared_objects() -> None:
    dm = DeviceMap({f"layer.{i}": Device.gpu(i % 3) for i in range(2000)})
    first = [k for k, _ in dm.mapping.items()]
    again = list(dm.mapping.keys())
    assert first == [f"layer.{i}" for i in range(2000)]
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert all(d is dm[k] for k, d in dm.mapping.items())
    assert list(dm.mapping.values()) == [Device.gpu(i % 3) for i in range(2000)]


def test_an_early_break_and_an_empty_map() -> None:
    dm = DeviceMap({f"k{i}": Device.cpu() for i in range(1500)})
    for n, (key, _) in enumerate(dm.mapping.items()):
        if n == 700:
            assert key == "k700"
            break
    empty = DeviceMap()
    assert list(empty.mapping.items()) == []
    assert list(empty.mapping.values()) == []
    assert repr(empty.mapping.items()) == "DeviceMappingItems([])"
    assert repr(dm.mapping.keys()).startswith("DeviceMappingKeys(['k0', 'k1', ")


def test_reversed_as_a_dicts(dm: DeviceMap) -> None:
    plain = dict(dm.mapping.items())
    del dm["b"]
    del plain["b"]
    dm["b"] = Device.gpu(2)
    plain["b"] = Device.gpu(2)
    assert list(reversed(dm.mapping)) == list(reversed(plain)) == ["b", "c", "a"]
    for ours, theirs in [
        (dm.keys(), plain.keys()),
        (dm.values(), plain.values()),
        (dm.items(), plain.items()),
        (dm.mapping.items(), plain.items()),
    ]:
        assert list(reversed(ours)) == list(reversed(theirs))
    assert list(reversed(DeviceMap({}).mapping)) == []
