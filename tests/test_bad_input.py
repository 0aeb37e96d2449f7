"""Bad input of any shape gives ValueError/TypeError/KeyError, never a panic or another crash.

pyo3's PanicException derives from BaseException, so `pytest.raises(CLEAR_ERRORS)` would not
swallow one: a panic fails these tests.
"""

from __future__ import annotations

import pytest
from conftest import device_maps
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType
from hypothesis import given
from hypothesis import strategies as st

CLEAR_ERRORS = (ValueError, TypeError, KeyError)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),  # surrogates included
    st.binary(max_size=8),
    st.sampled_from([Device.cpu(), DeviceType.GPU, DeviceMap(), object(), ..., 1j]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
mappings = st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), values, max_size=6)


def call(function, *args):
    """Calls `function`; any exception must be one of the clear ones, with a message."""
    try:
        return function(*args)
    except CLEAR_ERRORS as error:
        caught = error
    assert str(caught) or isinstance(caught, KeyError)
    return caught


@given(values)
def test_parsers_on_anything(value):
    call(Device.from_str, value)
    call(DeviceType.from_str, value)
    call(ComponentDevice.from_str, value)
    call(Device, value)
    call(Device, DeviceType.GPU, value)
    call(Device.gpu, value)


@given(st.text(max_size=12))
def test_text_never_panics(text):
    for parse in (Device.from_str, DeviceType.from_str, ComponentDevice.from_str):
        result = call(parse, text)
        if not isinstance(result, Exception) and parse is Device.from_str:
            assert str(result) == text


@given(st.one_of(values, mappings))
def test_map_constructors_on_anything(value):
    call(DeviceMap, value)
    call(DeviceMap.from_dict, value)
    call(DeviceMap.from_hf, value)
    call(ComponentDevice.from_dict, value)
    call(ComponentDevice.from_dict, {"type": "multiple", "device_map": value})
    call(ComponentDevice.from_dict, {"type": "single", "device": value})


@given(device_maps, st.one_of(st.text(max_size=4), st.integers(), st.none()), values)
def test_failed_writes_leave_the_map_unchanged(dm, key, value):
    before = list(dm.items())
    for write in (dm.__setitem__, dm.mapping.__setitem__):
        result = call(write, key, value)
        if isinstance(result, Exception):
            assert list(dm.items()) == before
    result = call(dm.update, {key: value})
    if isinstance(result, Exception):
        assert list(dm.items()) == before
    result = call(setattr, dm, "mapping", {key: value})
    if isinstance(result, Exception):
        assert list(dm.items()) == before


def test_surrogate_strings_are_value_errors():
    with pytest.raises(ValueError):  # noqa: PT011 - UnicodeEncodeError, whose text Python writes
        Device.from_str("cuda:\ud800")
    with pytest.raises(ValueError):  # noqa: PT011
        DeviceMap.from_dict({"\ud800": "cpu"})
    with pytest.raises(ValueError):  # noqa: PT011
        DeviceMap.from_hf({"a": "\udcff"})


class ItemsOnly:
    def __init__(self, items):
        self._items = items

    def items(self):
        return self._items


@pytest.mark.parametrize(
    "mapping",
    [ItemsOnly([("a",)]), ItemsOnly([("a", "cpu", "x")]), ItemsOnly(5), ItemsOnly(["ab"]), ItemsOnly([None])],
)
def test_odd_mapping_objects(mapping):
    for build in (DeviceMap, DeviceMap.from_dict, DeviceMap.from_hf):
        with pytest.raises((TypeError, ValueError)):
            build(mapping)


def test_object_whose_str_fails_in_from_hf():
    class Unprintable:
        def __str__(self):
            raise RuntimeError("no str")

    # Haystack formats the value into its message; a value that cannot be printed raises its own error.
    with pytest.raises((TypeError, RuntimeError)):
        DeviceMap.from_hf({"a": Unprintable()})


def test_lone_surrogate_key_is_absent_as_in_a_dict():
    """A `str` that is not UTF-8 can never be a key: lookups answer as a dict does for a missing
    key, instead of raising UnicodeEncodeError."""
    dm = DeviceMap({"a": Device.cpu()})
    key = "\ud800"
    assert key not in dm
    assert key not in dm.mapping
    assert dm.get(key) is None
    assert dm.pop(key, "default") == "default"
    with pytest.raises(KeyError):
        dm[key]
    with pytest.raises(KeyError):
        del dm[key]
    with pytest.raises(ValueError, match="surrogate"):
        dm[key] = Device.cpu()
