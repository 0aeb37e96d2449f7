"""Device, DeviceMap and ComponentDevice are subclassable and weak-referenceable, as Haystack's
dataclasses are; `__init__` on an existing map replaces its content as on the dataclass."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import pytest
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType


class NamedMap(DeviceMap):
    def __init__(self, mapping: dict[str, Device] | None = None, *, name: str = "") -> None:
        super().__init__(mapping)
        self.name = name


def test_init_on_an_existing_map_replaces_its_content() -> None:
    dm = DeviceMap({"a": Device.cpu()})
    dm.__init__({"b": Device.gpu(1)})  # type: ignore[misc]
    assert dict(dm.mapping) == {"b": Device.gpu(1)}
    dm.__init__()  # type: ignore[misc]
    assert len(dm) == 0
    with pytest.raises(TypeError, match="DeviceMap values must be Device"):
        dm.__init__({"x": "cpu"})  # type: ignore[misc, dict-item]


def test_map_subclass_keeps_its_type_and_attributes() -> None:
    m = NamedMap({"a": Device.gpu(0)}, name="encoder")
    assert isinstance(m, DeviceMap)
    assert m["a"] == Device.gpu(0)
    assert m.name == "encoder"
    assert m == DeviceMap({"a": Device.gpu(0)})
    back = pickle.loads(pickle.dumps(m))
    assert type(back) is NamedMap
    assert back.name == "encoder"
    assert back == m
    copied = copy.copy(m)
    assert copied == m


def test_weak_references() -> None:
    makers = (
        lambda: DeviceMap({"a": Device.cpu()}),
        lambda: ComponentDevice.from_str("cpu"),
        lambda: Device(DeviceType.GPU, 5000),
    )
    for make in makers:
        obj = make()
        ref = weakref.ref(obj)
        assert ref() is obj
        del obj
        gc.collect()
        assert ref() is None


def test_device_and_component_subclasses() -> None:
    class MyDevice(Device):
        pass

    d = MyDevice(DeviceType.GPU, 1)
    assert isinstance(d, Device)
    assert d == Device.gpu(1)
    assert hash(d) == hash(Device.gpu(1))
    assert DeviceMap({"a": d})["a"] == Device.gpu(1)

    class MyComponent(ComponentDevice):
        pass

    c = MyComponent(Device.cpu())
    assert c.to_torch_str() == "cpu"
    assert c == ComponentDevice.from_str("cpu")


def test_map_deletes_are_order_true_at_scale() -> None:
    """Thinning a big map: every other key removed, then the front half, keeps the rest in
    insertion order, with first_device and popitem right throughout."""
    n = 50_000
    dm = DeviceMap({f"k.{i}": Device.gpu(i % 7) for i in range(n)})
    for i in range(0, n, 2):
        del dm[f"k.{i}"]
    assert len(dm) == n // 2
    assert list(dm.keys()) == [f"k.{i}" for i in range(1, n, 2)]
    for i in range(1, n // 2, 2):
        assert dm.pop(f"k.{i}") == Device.gpu(i % 7)
    rest = list(range(n // 2 + 1, n, 2))
    assert list(dm.keys()) == [f"k.{i}" for i in rest]
    assert dm.first_device == Device.gpu(rest[0] % 7)
    assert dm.mapping.popitem() == (f"k.{rest[-1]}", Device.gpu(rest[-1] % 7))
    dm["new"] = Device.cpu()
    assert list(dm.keys())[-1] == "new"
    assert dm == DeviceMap({**{f"k.{i}": Device.gpu(i % 7) for i in rest[:-1]}, "new": Device.cpu()})
