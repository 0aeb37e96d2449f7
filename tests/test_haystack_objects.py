"""A program moving from Haystack to devicemap may hand devicemap Haystack's own `DeviceType`,
`Device`, `DeviceMap` or `ComponentDevice`: each is read by value, never refused for its class."""

from __future__ import annotations

import subprocess
import sys

import pytest
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType


@pytest.fixture
def hay_map(hs):
    return hs.DeviceMap(
        {"embed": hs.Device.gpu(0), "layers.0": hs.Device.gpu(1), "lm_head": hs.Device.disk()}
    )


def test_device_type_members(hs):
    for member in hs.DeviceType:
        assert Device(member).type is DeviceType(member.value)
        assert Device(member, 3) == Device(DeviceType(member.value), 3)


def test_device_values_in_a_map(hs):
    dm = DeviceMap({"a": hs.Device.gpu(2), "b": Device.cpu(), "c": hs.Device(hs.DeviceType.MPS)})
    assert dm.to_dict() == {"a": "cuda:2", "b": "cpu", "c": "mps"}
    dm["d"] = hs.Device.xpu()
    dm.mapping["e"] = hs.Device.disk()
    dm.update({"f": hs.Device.gpu(None)})
    assert dm.to_dict() == {"a": "cuda:2", "b": "cpu", "c": "mps", "d": "xpu", "e": "disk", "f": "cuda"}
    assert all(type(device) is Device for device in dm.values())


def test_haystack_device_map(hs, hay_map):
    ours = DeviceMap(hay_map)
    assert ours.to_dict() == hay_map.to_dict()
    assert list(ours.keys()) == list(hay_map.mapping)
    other = DeviceMap({"x": Device.cpu()})
    other.update(hay_map)
    assert other.to_dict() == {"x": "cpu", **hay_map.to_dict()}
    other.mapping = hay_map
    assert other.to_dict() == hay_map.to_dict()


def test_component_from_haystack_parts(hs, hay_map):
    assert ComponentDevice.from_single(hs.Device.gpu(3)) == ComponentDevice.from_str("cuda:3")
    ours = ComponentDevice.from_multiple(hay_map)
    theirs = hs.ComponentDevice.from_multiple(hay_map)
    assert ours.to_dict() == theirs.to_dict()
    assert ours.to_hf() == theirs.to_hf()
    assert ComponentDevice(hs.Device.cpu()) == ComponentDevice.from_str("cpu")
    assert ComponentDevice(_multiple_devices=hay_map).to_dict() == theirs.to_dict()


def test_resolve_device_takes_a_haystack_component(hs, hay_map):
    for theirs in (hs.ComponentDevice.from_str("cuda:1"), hs.ComponentDevice.from_multiple(hay_map)):
        ours = ComponentDevice.resolve_device(theirs)
        assert isinstance(ours, ComponentDevice)
        assert ours.to_dict() == theirs.to_dict()


def test_bad_haystack_content_is_named(hs):
    # Haystack's dataclass stores whatever it is given.
    broken = hs.Device("cuda", 1)  # a str where Haystack means a DeviceType: read as its value
    assert DeviceMap({"a": broken})["a"] == Device.gpu(1)
    odd = hs.Device.gpu(0)
    odd.type = "tpu"
    with pytest.raises(ValueError, match=r"Unknown device type string 'tpu' \(key 'a'\)"):
        DeviceMap({"a": odd})
    odd.type = 5
    with pytest.raises(TypeError, match=r"Device type must be a DeviceType.*\(key 'a'\)"):
        DeviceMap({"a": odd})


def test_other_objects_are_still_refused():
    class Device:  # same name, another module
        type = DeviceType.GPU
        id = 0

    with pytest.raises(TypeError, match="DeviceMap values must be Device"):
        DeviceMap({"a": Device()})
    with pytest.raises(TypeError, match="needs a Device"):
        ComponentDevice.from_single(Device())  # type: ignore[arg-type]


def test_meta_serialized_for_haystack_is_refused_by_haystack(hs):
    # A documented difference (docs/haystack-differences.md): META is ours only.
    data = ComponentDevice.from_multiple(DeviceMap({"a": Device(DeviceType.META)})).to_dict()
    with pytest.raises(ValueError, match="Unknown device type string 'meta'"):
        hs.ComponentDevice.from_dict(data)


def test_recognising_haystack_objects_never_imports_haystack():
    code = (
        "import sys, devicemap\n"
        "from devicemap import DeviceMap, Device, ComponentDevice\n"
        "DeviceMap({'a': Device.cpu()}); ComponentDevice.from_str('cpu')\n"
        "try:\n    DeviceMap({'a': object()})\nexcept TypeError:\n    pass\n"
        "assert not any(m.startswith('haystack') for m in sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
