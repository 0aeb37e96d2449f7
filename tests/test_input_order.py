"""Maps are read in the input mapping's own iteration order, as Haystack reads them: only an
exact `dict` takes the fast path; an `OrderedDict` after `move_to_end`, a `dict` subclass
overriding `items()` and a `Mapping` are read through their own `items()`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

import pytest
from devicemap import ComponentDevice, Device, DeviceMap
from hypothesis import given
from hypothesis import strategies as st


class ReversedItems(dict):
    """A dict whose `items()` runs backwards (and drops keys starting with '_')."""

    def items(self):  # type: ignore[override]
        return [(k, v) for k, v in reversed(list(super().items())) if not k.startswith("_")]


class Frozen(Mapping):
    def __init__(self, pairs):
        self._pairs = list(pairs)

    def __getitem__(self, key):
        return dict(self._pairs)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


def moved_hf() -> OrderedDict:
    od = OrderedDict([("embed", 0), ("layers.0", 1), ("lm_head", "cpu")])
    od.move_to_end("embed")
    return od


def moved_strings() -> OrderedDict:
    od = OrderedDict([("embed", "cuda:0"), ("layers.0", "cuda:1"), ("lm_head", "cpu")])
    od.move_to_end("embed")
    return od


def as_pairs(mapping) -> list[tuple[str, str]]:
    return list(mapping.to_dict().items())


def test_from_hf_ordered_dict_after_move_to_end(hs):
    ours, theirs = DeviceMap.from_hf(moved_hf()), hs.DeviceMap.from_hf(moved_hf())
    assert (
        as_pairs(ours)
        == as_pairs(theirs)
        == [("layers.0", "cuda:1"), ("lm_head", "cpu"), ("embed", "cuda:0")]
    )
    assert str(ours.first_device) == str(theirs.first_device) == "cuda:1"


def test_from_dict_ordered_dict_after_move_to_end(hs):
    ours, theirs = DeviceMap.from_dict(moved_strings()), hs.DeviceMap.from_dict(moved_strings())
    assert as_pairs(ours) == as_pairs(theirs)
    assert str(ours.first_device) == str(theirs.first_device) == "cuda:1"


def test_constructor_ordered_dict_after_move_to_end(hs):
    od = OrderedDict([("a", Device.cpu()), ("b", Device.gpu(1))])
    od.move_to_end("a")
    assert list(DeviceMap(od).keys()) == ["b", "a"]
    assert DeviceMap(od).first_device == Device.gpu(1)


def test_component_from_dict_keeps_the_map_order(hs):
    data = {"type": "multiple", "device_map": moved_strings()}
    ours, theirs = ComponentDevice.from_dict(data), hs.ComponentDevice.from_dict(data)
    assert ours.to_dict() == theirs.to_dict()
    assert list(ours.to_dict()["device_map"]) == list(theirs.to_dict()["device_map"])
    assert ours.first_device.to_torch_str() == theirs.first_device.to_torch_str() == "cuda:1"


@pytest.mark.parametrize("build", ["from_hf", "from_dict"])
def test_dict_subclass_overriding_items_is_honoured(hs, build):
    values = {"from_hf": [0, 1, "cpu"], "from_dict": ["cuda:0", "cuda:1", "cpu"]}[build]
    data = ReversedItems(zip(["a", "_hidden", "c"], values, strict=True))
    ours, theirs = getattr(DeviceMap, build)(data), getattr(hs.DeviceMap, build)(data)
    assert as_pairs(ours) == as_pairs(theirs) == [("c", "cpu"), ("a", "cuda:0")]
    assert str(ours.first_device) == str(theirs.first_device)


def test_mapping_abc_is_read_through_items(hs):
    data = Frozen([("z", 1), ("y", "cpu"), ("x", 0)])
    assert as_pairs(DeviceMap.from_hf(data)) == as_pairs(hs.DeviceMap.from_hf(data))


def test_repeated_keys_in_items_keep_the_first_place_and_last_value(hs):
    class Repeats(dict):
        def items(self):  # type: ignore[override]
            return [("a", 0), ("b", 1), ("a", 2)]

    data = Repeats()
    # Haystack fills a dict: "a" keeps its first place and takes its last value.
    assert (
        as_pairs(DeviceMap.from_hf(data))
        == as_pairs(hs.DeviceMap.from_hf(data))
        == [
            ("a", "cuda:2"),
            ("b", "cuda:1"),
        ]
    )


def test_items_yielding_lists_of_two_unpack_as_in_a_for_loop(hs):
    class Lists(dict):
        def items(self):  # type: ignore[override]
            return [["a", 0], iter(["b", "cpu"])]

    assert as_pairs(DeviceMap.from_hf(Lists())) == [("a", "cuda:0"), ("b", "cpu")]


@pytest.mark.parametrize(("items", "message"), [([("a",)], "1 values"), ([("a", 0, 1)], "too many")])
def test_items_of_the_wrong_length_are_value_errors(items, message):
    class Odd(dict):
        def items(self):  # type: ignore[override]
            return items

    with pytest.raises(ValueError, match=message):
        DeviceMap.from_hf(Odd())


def test_exact_dict_fast_path_matches_haystack(hs):
    data = {f"layer.{i}": i % 8 for i in range(1000)}
    assert as_pairs(DeviceMap.from_hf(data)) == as_pairs(hs.DeviceMap.from_hf(data))


@given(
    values=st.lists(
        st.one_of(st.integers(0, 9), st.sampled_from(["cpu", "disk", "cuda:3", "mps"])), max_size=12
    ),
    moves=st.lists(st.integers(0, 11), max_size=6),
)
def test_any_ordered_dict_order_matches_haystack(hs, values, moves):
    od = OrderedDict((f"k{i}", value) for i, value in enumerate(values))
    for index in moves:
        if od:
            od.move_to_end(list(od)[index % len(od)], last=index % 2 == 0)
    ours, theirs = DeviceMap.from_hf(od), hs.DeviceMap.from_hf(od)
    assert as_pairs(ours) == as_pairs(theirs)
    assert (ours.first_device is None) == (theirs.first_device is None)
    if ours.first_device is not None:
        assert str(ours.first_device) == str(theirs.first_device)
