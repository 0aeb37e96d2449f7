"""Property tests: round trips, copies, and equality/fingerprint consistency on generated maps."""

from __future__ import annotations

import copy
import pickle

import pytest
from conftest import device_dicts, device_maps, devices, hf_safe, map_keys
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType
from hypothesis import assume, given
from hypothesis import strategies as st


@given(devices)
def test_device_parse_print_round_trip(device):
    text = str(device)
    assert Device.from_str(text) == device
    assert str(Device.from_str(text)) == text
    assert Device(device.type.value, device.id) == device


@given(devices, devices)
def test_device_equality_and_hash_agree(a, b):
    assert (a == b) == ((a.type, a.id) == (b.type, b.id))
    assert (a == b) == (str(a) == str(b))
    if a == b:
        assert hash(a) == hash(b)


@given(devices)
def test_device_pickle_and_copy(device):
    assert pickle.loads(pickle.dumps(device)) == device
    assert copy.copy(device) == device
    assert copy.deepcopy(device) == device


@given(device_dicts)
def test_map_mirrors_a_dict(entries):
    dm = DeviceMap(entries)
    assert len(dm) == len(entries)
    assert list(dm.keys()) == list(entries)
    assert list(dm.values()) == list(entries.values())
    assert dict(dm) == entries
    assert dm.first_device == next(iter(entries.values()), None)
    for key, device in entries.items():
        assert key in dm
        assert dm[key] == device


@given(device_maps)
def test_to_dict_from_dict_round_trip(dm):
    data = dm.to_dict()
    assert all(isinstance(v, str) for v in data.values())
    back = DeviceMap.from_dict(data)
    assert back == dm
    assert list(back.keys()) == list(dm.keys())
    assert back.to_dict() == data


@given(device_maps)
def test_component_to_dict_from_dict_round_trip(dm):
    cd = ComponentDevice.from_multiple(dm)
    back = ComponentDevice.from_dict(cd.to_dict())
    assert back == cd
    assert hash(back) == hash(cd)


@given(devices.filter(lambda d: d.type is not DeviceType.DISK))
def test_single_component_round_trips(device):
    cd = ComponentDevice.from_single(device)
    assert ComponentDevice.from_dict(cd.to_dict()) == cd
    assert ComponentDevice.from_str(cd.to_torch_str()) == cd
    assert cd.to_hf() == str(device)


@given(device_maps)
def test_from_hf_to_hf_round_trip(dm):
    assume(all(hf_safe(d) for d in dm.values()))
    hf = ComponentDevice.from_multiple(dm).to_hf()
    for key, device in dm.items():
        if device.type is DeviceType.GPU:
            assert hf[key] == device.id
            assert type(hf[key]) is int
        else:
            assert hf[key] == str(device)
    back = DeviceMap.from_hf(hf)
    assert back == dm
    assert list(back.keys()) == list(dm.keys())


@given(device_maps)
def test_pickle_and_copy_round_trip(dm):
    for clone in (pickle.loads(pickle.dumps(dm)), copy.copy(dm), copy.deepcopy(dm), dm.copy()):
        assert clone == dm
        assert list(clone.keys()) == list(dm.keys())
        assert clone.fingerprint() == dm.fingerprint()
    cd = ComponentDevice.from_multiple(dm)
    assert pickle.loads(pickle.dumps(cd)) == cd


@given(device_dicts, st.randoms(use_true_random=False))
def test_equal_maps_in_any_order_have_equal_fingerprints(entries, random):
    items = list(entries.items())
    random.shuffle(items)
    a, b = DeviceMap(entries), DeviceMap(dict(items))
    assert a == b
    assert a.fingerprint() == b.fingerprint()
    # Built step by step, with detours, it is still the same map.
    c = DeviceMap()
    for key, _ in items:
        c[key] = Device.cpu()
    c["\x00detour"] = Device.disk()
    for key, device in items:
        c[key] = device
    del c["\x00detour"]
    assert c == a
    assert c.fingerprint() == a.fingerprint()


@given(device_maps, device_maps)
def test_equality_matches_fingerprints_and_dicts(a, b):
    same = dict(a) == dict(b)
    assert (a == b) == same
    assert (a != b) == (not same)
    assert (a.fingerprint() == b.fingerprint()) == same


@given(device_dicts.filter(bool), devices, map_keys, st.data())
def test_any_single_change_alters_the_fingerprint(entries, other_device, new_key, data):
    dm = DeviceMap(entries)
    before = dm.fingerprint()
    key = data.draw(st.sampled_from(list(entries)))

    changed = dm.copy()
    if changed[key] != other_device:
        changed[key] = other_device
        assert changed.fingerprint() != before
        assert changed != dm

    removed = dm.copy()
    del removed[key]
    assert removed.fingerprint() != before

    if new_key not in entries:
        added = dm.copy()
        added[new_key] = other_device
        assert added.fingerprint() != before
        renamed = dm.copy()
        renamed[new_key] = renamed.pop(key)
        assert renamed.fingerprint() != before
        assert renamed != dm

    assert dm.fingerprint() == before


@given(device_dicts)
def test_device_counts_consistent(entries):
    counts = DeviceMap(entries).device_counts()
    assert sum(counts.values()) == len(entries)
    expected: dict[Device, int] = {}
    for device in entries.values():
        expected[device] = expected.get(device, 0) + 1
    assert list(counts.items()) == list(expected.items())


@given(device_maps, st.lists(st.tuples(map_keys, st.one_of(devices, st.just("bad"), st.none())), max_size=6))
def test_failed_update_leaves_map_unchanged(dm, incoming):
    before, fingerprint = dm.to_dict(), dm.fingerprint()
    new = dict(incoming)
    if all(isinstance(v, Device) for v in new.values()):
        dm.update(new)
        expected = dict(before)
        expected.update({k: str(v) for k, v in new.items()})
        assert dm.to_dict() == expected
    else:
        with pytest.raises(TypeError, match=r"\(key "):
            dm.update(new)
        assert dm.to_dict() == before
        assert list(dm.to_dict()) == list(before)
        assert dm.fingerprint() == fingerprint
