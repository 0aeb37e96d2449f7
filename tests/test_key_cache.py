"""The key-object cache behind `to_dict`/`to_hf`: results always match the map's current content.

A map keeps the key `str`s its first conversion made and reuses them; maps, copies and components
sharing a snapshot share that cache. These tests change maps in every way after the cache is
filled and compare each output, in order, with a plain-Python model of the expected content.
"""

from __future__ import annotations

import copy
import pickle
from types import MappingProxyType

from devicemap import ComponentDevice, Device, DeviceMap
from hypothesis import given, settings
from hypothesis import strategies as st


def hf_form(device: Device) -> int | str:
    text = str(device)
    return int(text.split(":")[1]) if text.startswith("cuda:") else text


def check(dm: DeviceMap, model: dict[str, Device]) -> None:
    """Every conversion of `dm`, twice (filling then reusing the cache), matches `model` in order."""
    expected = [(k, str(d)) for k, d in model.items()]
    expected_hf = [(k, hf_form(d)) for k, d in model.items()]
    for _ in range(2):
        assert list(dm.to_dict().items()) == expected
        cd = ComponentDevice.from_multiple(dm)
        assert list(cd.to_dict()["device_map"].items()) == expected
        assert list(cd.to_hf().items()) == expected_hf
        assert list(cd.update_hf_kwargs({}, overwrite=True)["device_map"].items()) == expected_hf
    fresh = DeviceMap.from_dict(dict(expected))
    assert list(fresh.to_dict().items()) == expected
    assert dm == fresh


def start(n: int = 6) -> tuple[DeviceMap, dict[str, Device]]:
    hf = {f"layer.{i}": i % 3 for i in range(n)}
    dm = DeviceMap.from_hf(hf)
    model = {k: Device.gpu(v) for k, v in hf.items()}
    check(dm, model)
    return dm, model


def test_outputs_are_new_dicts_of_exact_strs() -> None:
    class Key(str):
        pass

    dm = DeviceMap.from_dict({Key("a"): "cpu", "b": "cuda:1"})
    first = dm.to_dict()
    first["c"] = "cpu"
    del first["a"]
    second = dm.to_dict()
    assert second == {"a": "cpu", "b": "cuda:1"}
    assert second is not first
    assert all(type(k) is str for k in second)
    assert all(type(k) is str for k in ComponentDevice.from_multiple(dm).to_hf())


def test_every_mutation_after_the_cache_is_filled() -> None:
    dm, model = start()
    dm["layer.1"] = Device.cpu()  # existing key: keys unchanged
    model["layer.1"] = Device.cpu()
    check(dm, model)
    dm["new"] = Device.disk()
    model["new"] = Device.disk()
    check(dm, model)
    del dm["layer.0"]
    del model["layer.0"]
    check(dm, model)
    assert dm.pop("layer.2") == model.pop("layer.2")
    check(dm, model)
    assert dm.mapping.popitem() == model.popitem()
    check(dm, model)
    assert dm.mapping.setdefault("other", Device.gpu(7)) == Device.gpu(7)
    model["other"] = Device.gpu(7)
    check(dm, model)
    dm.update({"layer.3": Device.gpu(2)})  # only existing keys
    model.update({"layer.3": Device.gpu(2)})
    check(dm, model)
    dm.update(DeviceMap({"z": Device.cpu(), "layer.4": Device.cpu()}))
    model.update({"z": Device.cpu(), "layer.4": Device.cpu()})
    check(dm, model)
    dm.clear()
    model.clear()
    check(dm, model)
    dm["x"] = Device.cpu()
    model["x"] = Device.cpu()
    check(dm, model)


def test_keys_readded_in_another_order() -> None:
    dm, model = start(4)
    for key in ("layer.0", "layer.1", "layer.2"):
        del dm[key]
        del model[key]
    check(dm, model)
    for key in ("layer.2", "layer.0", "layer.1"):
        dm[key] = Device.cpu()
        model[key] = Device.cpu()
    check(dm, model)
    dm.clear()
    model.clear()
    for key in ("b", "a", "layer.3"):
        dm[key] = Device.gpu(0)
        model[key] = Device.gpu(0)
    check(dm, model)


def test_replacing_the_whole_content() -> None:
    dm, _ = start()
    dm.mapping = {"q": Device.cpu(), "p": Device.gpu(1)}
    check(dm, {"q": Device.cpu(), "p": Device.gpu(1)})
    dm.__setstate__({"p": "cuda:3", "q": "disk"})
    check(dm, {"p": Device.gpu(3), "q": Device.disk()})


def test_component_snapshot_keeps_its_content_after_the_map_changes() -> None:
    dm, model = start()
    before = dict(model)
    cd = ComponentDevice.from_multiple(dm)
    via_init = ComponentDevice(_multiple_devices=dm)
    dm.to_dict()  # the map fills the cache it shares with both components
    del dm["layer.0"]
    dm["layer.0"] = Device.cpu()  # same key set, different order
    dm["layer.5"] = Device.disk()  # existing key, new value
    model.pop("layer.0")
    model["layer.0"] = Device.cpu()
    model["layer.5"] = Device.disk()
    check(dm, model)
    for component in (cd, via_init):
        assert list(component.to_dict()["device_map"].items()) == [(k, str(d)) for k, d in before.items()]
        assert list(component.to_hf().items()) == [(k, hf_form(d)) for k, d in before.items()]


def test_component_filled_first_then_map_changes() -> None:
    dm, model = start()
    cd = ComponentDevice.from_multiple(dm)
    expected = list(cd.to_hf().items())  # the component fills the shared cache
    dm.pop("layer.3")
    dm["layer.3"] = Device.gpu(1)
    model.pop("layer.3")
    model["layer.3"] = Device.gpu(1)
    check(dm, model)
    assert list(cd.to_hf().items()) == expected


def test_multiple_devices_copy_and_pickle_share_nothing_wrong() -> None:
    dm, model = start()
    cd = ComponentDevice.from_multiple(dm)
    snapshot = [(k, str(d)) for k, d in model.items()]
    inner = cd._multiple_devices
    assert inner is not None
    inner.to_dict()
    del inner["layer.1"]
    inner["layer.1"] = Device.cpu()
    assert list(cd.to_dict()["device_map"].items()) == snapshot
    assert list(inner.to_dict().items())[-1] == ("layer.1", "cpu")
    for other in (dm.copy(), copy.copy(dm), copy.deepcopy(dm)):
        other.pop("layer.4")
        other["layer.4"] = Device.disk()
        assert list(dm.to_dict().items()) == snapshot
        assert list(other.to_dict().items())[-1] == ("layer.4", "disk")
    restored = pickle.loads(pickle.dumps(cd))
    assert list(restored.to_dict()["device_map"].items()) == snapshot
    check(dm, model)


def test_component_from_dict_and_non_dict_inputs() -> None:
    cd = ComponentDevice.from_dict({"type": "multiple", "device_map": {"b": "cuda:0", "a": "cpu"}})
    assert list(cd.to_hf().items()) == [("b", 0), ("a", "cpu")]
    assert list(cd.to_dict()["device_map"].items()) == [("b", "cuda:0"), ("a", "cpu")]
    dm = DeviceMap.from_hf(MappingProxyType({"y": 1, "x": "cpu"}))  # not a dict
    check(dm, {"y": Device.gpu(1), "x": Device.cpu()})


KEYS = st.sampled_from([f"k{i}" for i in range(6)])
DEVICES = st.sampled_from([Device.cpu(), Device.disk(), Device.gpu(0), Device.gpu(1)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, DEVICES),
        st.tuples(st.just("del"), KEYS),
        st.tuples(st.just("convert")),
        st.tuples(st.just("snapshot")),
        st.tuples(st.just("clear")),
        st.tuples(st.just("update"), st.dictionaries(KEYS, DEVICES, max_size=3)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_random_changes_match_a_dict(ops: list[tuple]) -> None:
    dm = DeviceMap()
    model: dict[str, Device] = {}
    snapshots: list[tuple[ComponentDevice, list[tuple[str, str]]]] = []
    for op in ops:
        if op[0] == "set":
            dm[op[1]] = op[2]
            model[op[1]] = op[2]
        elif op[0] == "del":
            assert dm.pop(op[1], None) == model.pop(op[1], None)
        elif op[0] == "convert":
            assert list(dm.to_dict().items()) == [(k, str(d)) for k, d in model.items()]
        elif op[0] == "snapshot":
            snapshots.append((ComponentDevice.from_multiple(dm), [(k, str(d)) for k, d in model.items()]))
        elif op[0] == "clear":
            dm.clear()
            model.clear()
        else:
            dm.update(op[1])
            model.update(op[1])
    check(dm, model)
    for component, expected in snapshots:
        assert list(component.to_dict()["device_map"].items()) == expected
