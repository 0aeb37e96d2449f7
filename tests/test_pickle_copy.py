"""`pickle`, `copy` and `deepcopy` give equal objects for every type, and copies of maps are independent."""

from __future__ import annotations

import copy
import pickle

import pytest
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def sample_devices():
    return [Device(t, i) for t in DeviceType for i in (None, 0, 5, 2**64 - 1)]


def sample_maps():
    return [
        DeviceMap(),
        DeviceMap({"a": Device.cpu(), "b": Device.gpu(1), "c": Device.disk()}),
        DeviceMap({f"layer.{i}": Device.gpu(i % 3) for i in range(100)}),
        DeviceMap({"é\u2603": Device(DeviceType.META), "": Device(DeviceType.GPU)}),
    ]


def sample_components():
    return [
        ComponentDevice.from_str("cuda:1"),
        ComponentDevice.from_str("cpu"),
        ComponentDevice.from_multiple(sample_maps()[1]),
        ComponentDevice(),
        ComponentDevice(Device.cpu(), sample_maps()[1]),
        ComponentDevice(Device.disk()),
    ]


@pytest.mark.parametrize("device", sample_devices(), ids=str)
def test_device(device):
    for protocol in PROTOCOLS:
        back = pickle.loads(pickle.dumps(device, protocol))
        assert back == device
        assert type(back) is Device
        assert back.type is device.type
    assert copy.copy(device) == device
    assert copy.deepcopy(device) == device


@pytest.mark.parametrize("dm", sample_maps(), ids=repr)
def test_device_map(dm):
    for protocol in PROTOCOLS:
        back = pickle.loads(pickle.dumps(dm, protocol))
        assert back == dm
        assert list(back.keys()) == list(dm.keys())
        assert back.fingerprint() == dm.fingerprint()
    for clone in (copy.copy(dm), copy.deepcopy(dm), dm.copy()):
        assert clone == dm
        assert clone is not dm
        assert list(clone.keys()) == list(dm.keys())
        clone["added"] = Device.xpu()
        assert "added" not in dm


def test_device_map_inside_containers():
    dm = DeviceMap({"a": Device.cpu()})
    nested = {"maps": [dm, dm], "device": Device.gpu(1)}
    back = copy.deepcopy(nested)
    assert back["maps"][0] == dm
    back["maps"][0]["a"] = Device.gpu(0)
    assert dm["a"] == Device.cpu()
    restored = pickle.loads(pickle.dumps(nested))
    assert restored == nested


@pytest.mark.parametrize("cd", sample_components(), ids=repr)
def test_component_device(cd):
    for protocol in PROTOCOLS:
        back = pickle.loads(pickle.dumps(cd, protocol))
        assert back == cd
        assert type(back) is ComponentDevice
        assert repr(back) == repr(cd)
    assert copy.copy(cd) == cd
    assert copy.deepcopy(cd) == cd


def test_device_map_setstate_rejects_bad_state():
    dm = DeviceMap({"a": Device.cpu()})
    with pytest.raises(ValueError, match="key 'b'"):
        dm.__setstate__({"a": "cuda:1", "b": "nope"})
    assert dm.to_dict() == {"a": "cpu"}
