"""Batch lookups read each name where it lies (list and tuple items borrowed, other iterables
collected) in one pass: every input kind gives the answers of one `device_for` per name, and a
bad name anywhere in a batch is the error before an uncovered one, as when the names were
read first."""

from __future__ import annotations

import random

import pytest
from devicemap import Device, DeviceMap


def _map() -> DeviceMap:
    return DeviceMap({"a": Device.cpu(), "a.b": Device.gpu(1), "c.d.e": Device.gpu(2)})


def test_every_input_kind_gives_single_lookups() -> None:
    dm = _map()
    names = [f"{p}.w{i}" for i in range(40) for p in ("a", "a.b", "c.d.e", "a.bb")]
    random.Random(3).shuffle(names)
    expected = [dm.device_for(n) for n in names]
    for batch in (names, tuple(names), iter(names), (n for n in names), dict.fromkeys(names).keys()):
        assert dm.devices_for(batch) == expected
    for batch in (names, tuple(names), (n for n in names)):
        groups = dm.group_by_device(batch)
        assert list(groups) == list(dict.fromkeys(expected))
        assert {n: d for d, ns in groups.items() for n in ns} == dict(zip(names, expected, strict=True))
        for device, group in groups.items():
            assert group == [n for n in names if dm.device_for(n) == device]


def test_group_lists_hold_the_callers_objects() -> None:
    dm = _map()
    names = ["".join(["a.", "x"]) for _ in range(3)]
    (group,) = dm.group_by_device(names).values()
    assert all(got is given for got, given in zip(group, names, strict=True))


def test_a_bad_name_later_wins_over_an_earlier_uncovered_name() -> None:
    dm = _map()
    for call in (dm.devices_for, dm.group_by_device):
        with pytest.raises(ValueError, match=r"'x\.\.y'.*position 2"):
            call(["a.q", "zzz", "x..y"])
        with pytest.raises(KeyError, match=r"'zzz'.*position 1"):
            call(["a.q", "zzz", "qqq"])
    assert dm.devices_for(["a.q", "zzz", "qqq"], None) == [Device.cpu(), None, None]
    with pytest.raises(ValueError, match=r"position 1"):
        dm.devices_for(["zzz", "x..y"], None)


def test_a_name_that_is_not_a_str_is_named_with_its_position() -> None:
    dm = _map()
    for batch in (["a.q", 7], ("a.q", 7), (x for x in ["a.q", 7])):
        with pytest.raises(TypeError, match=r"position 1"):
            dm.devices_for(batch)
    with pytest.raises(TypeError):
        dm.group_by_device(["a.q", b"a.r"])
    with pytest.raises(TypeError):
        dm.devices_for("a.q")
