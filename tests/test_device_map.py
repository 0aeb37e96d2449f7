"""`DeviceMap`: the mutable mapping, its Haystack quirks, `mapping` view, conversions, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import MutableMapping

import pytest
from devicemap import Device, DeviceMap, DeviceType


@pytest.fixture
def dm():
    return DeviceMap({"a": Device.cpu(), "b": Device.gpu(1), "c": Device.disk()})


def snapshot(m: DeviceMap) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in m.items()]


def test_constructor():
    assert len(DeviceMap()) == 0
    assert DeviceMap(None) == DeviceMap()
    assert DeviceMap({"a": Device.cpu()}) == DeviceMap(mapping={"a": Device.cpu()})
    assert DeviceMap(DeviceMap({"a": Device.cpu()}).mapping) == DeviceMap({"a": Device.cpu()})


def test_getitem_setitem_contains_len(dm):
    assert dm["b"] == Device.gpu(1)
    assert "a" in dm
    assert "z" not in dm
    assert 1 not in dm
    assert len(dm) == 3
    dm["z"] = Device.mps()
    assert dm["z"] == Device.mps()
    assert len(dm) == 4
    dm["a"] = Device.gpu(0)  # overwrite keeps position
    assert list(dm.keys()) == ["a", "b", "c", "z"]


@pytest.mark.parametrize("key", ["missing", 1, None])
def test_missing_key(dm, key):
    with pytest.raises(KeyError) as info:
        dm[key]
    assert info.value.args == (key,)


def test_iter_yields_pairs(dm):
    assert list(dm) == [("a", Device.cpu()), ("b", Device.gpu(1)), ("c", Device.disk())]
    assert dict(dm) == {"a": Device.cpu(), "b": Device.gpu(1), "c": Device.disk()}


def test_iteration_works_on_a_snapshot(dm):
    seen = []
    for key, _device in dm:
        seen.append(key)
        dm["new-" + key] = Device.cpu()
        dm.pop("c", None)
    assert seen == ["a", "b", "c"]
    assert list(dm.keys()) == ["a", "b", "new-a", "new-b", "new-c"]
    keys = []
    for key in dm.mapping:
        keys.append(key)
        dm.clear()
    assert keys == ["a", "b", "new-a", "new-b", "new-c"]
    assert len(dm) == 0


def test_keys_values_items_are_the_mapping_views(dm):
    assert list(dm.keys()) == ["a", "b", "c"]
    assert list(dm.values()) == [Device.cpu(), Device.gpu(1), Device.disk()]
    assert list(dm.items()) == [("a", Device.cpu()), ("b", Device.gpu(1)), ("c", Device.disk())]
    assert type(dm.keys()) is type(dm.mapping.keys())
    assert type(dm.values()) is type(dm.mapping.values())
    assert type(dm.items()) is type(dm.mapping.items())
    assert dm.keys() == {"a", "b", "c"}
    assert dm.items() == dict(dm).items()


def test_get(dm):
    assert dm.get("a") == Device.cpu()
    assert dm.get("zz") is None
    assert dm.get("zz", Device.xpu()) == Device.xpu()
    assert dm.get(3, "fallback") == "fallback"


def test_pop(dm):
    assert dm.pop("b") == Device.gpu(1)
    assert "b" not in dm
    assert dm.pop("b", None) is None
    assert dm.pop(7, "d") == "d"
    with pytest.raises(KeyError):
        dm.pop("b")
    assert list(dm.keys()) == ["a", "c"]


def test_del(dm):
    del dm["b"]
    assert list(dm.keys()) == ["a", "c"]
    with pytest.raises(KeyError):
        del dm["b"]
    with pytest.raises(KeyError):
        del dm[0]
    assert list(dm.keys()) == ["a", "c"]


def test_clear(dm):
    dm.clear()
    assert len(dm) == 0
    assert dm == DeviceMap()
    assert dm.first_device is None


def test_update(dm):
    dm.update({"b": Device.gpu(2), "d": Device.xpu()})
    assert snapshot(dm) == [("a", "cpu"), ("b", "cuda:2"), ("c", "disk"), ("d", "xpu")]
    dm.update(DeviceMap({"e": Device.mps()}))
    assert dm["e"] == Device.mps()


@pytest.mark.parametrize(
    ("bad", "error", "phrase"),
    [
        ({"x": Device.cpu(), "y": "cuda:0"}, TypeError, "(key 'y')"),
        ({"x": Device.cpu(), 3: Device.cpu()}, TypeError, "keys must be str"),
        ({"x": Device.cpu(), "y": None}, TypeError, "(key 'y')"),
        ([("x", Device.cpu())], TypeError, "expected a mapping"),
    ],
)
def test_update_is_all_or_nothing(dm, bad, error, phrase):
    before = snapshot(dm)
    fingerprint = dm.fingerprint()
    with pytest.raises(error) as info:
        dm.update(bad)
    assert phrase in str(info.value)
    assert snapshot(dm) == before
    assert dm.fingerprint() == fingerprint


def test_copy_is_independent(dm):
    other = dm.copy()
    assert other == dm
    assert other is not dm
    other["a"] = Device.gpu(5)
    del other["c"]
    assert dm["a"] == Device.cpu()
    assert "c" in dm
    dm["b"] = Device.gpu(9)
    assert other["b"] == Device.gpu(1)


def test_equality_ignores_order():
    a = DeviceMap({"a": Device.cpu(), "b": Device.gpu(1)})
    b = DeviceMap({"b": Device.gpu(1), "a": Device.cpu()})
    assert a == b
    assert not (a != b)  # noqa: SIM202 - tests __ne__ itself
    assert a != DeviceMap({"a": Device.cpu(), "b": Device.gpu(2)})
    assert a != DeviceMap({"a": Device.cpu(), "c": Device.gpu(1)})
    assert a != DeviceMap({"a": Device.cpu()})
    assert DeviceMap() == DeviceMap()


@pytest.mark.parametrize("other", [{}, {"a": Device.cpu()}, [("a", Device.cpu())], None, "a"])
def test_equality_only_with_device_maps(other):
    m = DeviceMap(dict(other) if isinstance(other, (dict, list)) else {})
    assert m != other
    assert not (m == other)  # noqa: SIM201 - tests __eq__ itself


def test_unhashable(dm):
    with pytest.raises(TypeError, match="unhashable"):
        hash(dm)


def test_to_dict(dm):
    assert dm.to_dict() == {"a": "cpu", "b": "cuda:1", "c": "disk"}
    assert list(dm.to_dict()) == ["a", "b", "c"]
    assert DeviceMap().to_dict() == {}


def test_first_device(dm):
    assert dm.first_device == Device.cpu()
    assert DeviceMap({"x": Device.disk(), "y": Device.gpu()}).first_device == Device.disk()
    assert DeviceMap().first_device is None


def test_from_dict():
    m = DeviceMap.from_dict({"a": "cpu", "b": "cuda:1", "c": "disk", "d": "meta"})
    assert list(m.items()) == [
        ("a", Device.cpu()),
        ("b", Device.gpu(1)),
        ("c", Device.disk()),
        ("d", Device(DeviceType.META)),
    ]
    assert DeviceMap.from_dict(dict={"a": "mps"})["a"] == Device.mps()


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ({"ok": "cpu", "w": 3}, TypeError, "Device string must be a str, got int 3 (key 'w')"),
        ({"ok": "cpu", "w": None}, TypeError, "Device string must be a str, got NoneType None (key 'w')"),
        (
            {"ok": "cpu", "w": "gpu"},
            ValueError,
            "Unknown device type string 'gpu'; did you mean 'cuda'? (key 'w')",
        ),
        ({"ok": "cpu", "w": "cuda:x"}, ValueError, "Device id must be an integer, got 'x' (key 'w')"),
        ({"ok": "cpu", "w": "cuda:1:2"}, ValueError, "more than one ':'"),
        ({"ok": "cpu", 5: "cpu"}, TypeError, "DeviceMap keys must be str, got int 5"),
    ],
)
def test_from_dict_bad_entry(bad, error, message):
    with pytest.raises(error) as info:
        DeviceMap.from_dict(bad)
    assert message in str(info.value)


@pytest.mark.parametrize("bad", [None, 3, "cpu", ["cpu"]])
def test_from_dict_not_a_mapping(bad):
    with pytest.raises(TypeError, match="expected a mapping"):
        DeviceMap.from_dict(bad)


def test_from_hf():
    m = DeviceMap.from_hf({"a": 0, "b": 3, "c": "cpu", "d": "disk", "e": "cuda:2", "f": "meta"})
    assert list(m.items()) == [
        ("a", Device.gpu(0)),
        ("b", Device.gpu(3)),
        ("c", Device.cpu()),
        ("d", Device.disk()),
        ("e", Device.gpu(2)),
        ("f", Device(DeviceType.META)),
    ]
    assert DeviceMap.from_hf(hf_device_map={"x": 1})["x"] == Device.gpu(1)


@pytest.mark.parametrize("value", [True, False, 1.0, None, [0], b"cpu", object])
def test_from_hf_unexpected_value(value):
    with pytest.raises(TypeError) as info:
        DeviceMap.from_hf({"ok": 0, "layer.1": value})
    assert str(info.value) == (
        f"Couldn't convert HuggingFace device map - unexpected device '{value}' for 'layer.1'"
    )


def test_from_hf_negative_int_names_key():
    with pytest.raises(ValueError, match=r"^Device id must be >= 0, got -1 \(key 'layer\.2'\)$"):
        DeviceMap.from_hf({"layer.1": 0, "layer.2": -1})


def test_from_hf_huge_int():
    assert DeviceMap.from_hf({"a": 2**64 - 1})["a"].id == 2**64 - 1
    with pytest.raises(ValueError, match=r"too large.*key 'a'"):
        DeviceMap.from_hf({"a": 2**64})


def test_from_hf_bad_string_names_key():
    with pytest.raises(ValueError, match=r"^Unknown device type string 'tpu' \(key 'm'\)$"):
        DeviceMap.from_hf({"m": "tpu"})


def test_from_hf_non_str_key():
    with pytest.raises(TypeError, match="DeviceMap keys must be str, got int 0"):
        DeviceMap.from_hf({0: 0})


def test_from_mapping_like_objects():
    class Mapping:
        def items(self):
            return [("a", "cpu"), ("b", "cuda:1")]

    assert DeviceMap.from_dict(Mapping()).to_dict() == {"a": "cpu", "b": "cuda:1"}
    assert DeviceMap.from_hf(Mapping()).to_dict() == {"a": "cpu", "b": "cuda:1"}


@pytest.mark.parametrize(
    ("key", "value", "error", "phrases"),
    [
        (1, Device.cpu(), TypeError, ["keys must be str", "1"]),
        (None, Device.cpu(), TypeError, ["keys must be str", "None"]),
        ("k", "cuda:0", TypeError, ["values must be Device", "'cuda:0'", "key 'k'"]),
        ("k", None, TypeError, ["values must be Device", "None", "key 'k'"]),
        ("k", DeviceType.GPU, TypeError, ["values must be Device", "key 'k'"]),
    ],
)
def test_failed_setitem_leaves_map_unchanged(dm, key, value, error, phrases):
    before = snapshot(dm)
    with pytest.raises(error) as info:
        dm[key] = value
    for phrase in phrases:
        assert phrase in str(info.value)
    assert snapshot(dm) == before
    with pytest.raises(error):
        dm.mapping[key] = value
    assert snapshot(dm) == before


@pytest.mark.parametrize(
    ("mapping", "phrase"),
    [({1: Device.cpu()}, "keys must be str"), ({"k": "cpu"}, "key 'k'"), ({"k": 0}, "key 'k'")],
)
def test_constructor_bad_entries(mapping, phrase):
    with pytest.raises(TypeError) as info:
        DeviceMap(mapping)
    assert phrase in str(info.value)


def test_constructor_not_a_mapping():
    with pytest.raises(TypeError, match="expected a mapping"):
        DeviceMap(3)


def test_mapping_is_a_live_view(dm):
    view = dm.mapping
    assert isinstance(view, MutableMapping)
    assert list(view) == ["a", "b", "c"]
    assert len(view) == 3
    assert "a" in view
    assert view["b"] == Device.gpu(1)
    assert dict(view.items()) == {"a": Device.cpu(), "b": Device.gpu(1), "c": Device.disk()}
    assert list(view.keys()) == ["a", "b", "c"]
    assert list(view.values()) == [Device.cpu(), Device.gpu(1), Device.disk()]
    assert view.get("zz") is None
    assert view == {"a": Device.cpu(), "b": Device.gpu(1), "c": Device.disk()}
    view["d"] = Device.xpu()
    assert dm["d"] == Device.xpu()
    del view["a"]
    assert "a" not in dm
    dm["e"] = Device.mps()
    assert view["e"] == Device.mps()
    assert view.pop("e") == Device.mps()  # from MutableMapping
    assert "e" not in dm
    view.update({"f": Device.cpu()})
    assert dm["f"] == Device.cpu()
    with pytest.raises(KeyError):
        view["missing"]


def test_mapping_view_has_the_mutable_mapping_methods(dm):
    view = dm.mapping
    assert view.pop("a") == Device.cpu()
    assert view.pop("a", "gone") == "gone"
    assert view.setdefault("b", Device.xpu()) == Device.gpu(1)
    assert view.setdefault("n", Device.xpu()) == Device.xpu()
    assert dm["n"] == Device.xpu()
    with pytest.raises(TypeError, match="key 'q'"):
        view.setdefault("q")  # None is not a Device
    assert "q" not in dm
    assert view.popitem() == ("n", Device.xpu())
    assert list(dm.keys()) == ["b", "c"]
    with pytest.raises(TypeError, match="key 'y'"):
        view.update({"x": Device.cpu(), "y": 0})
    assert list(dm.keys()) == ["b", "c"]
    view.clear()
    assert len(dm) == 0
    with pytest.raises(KeyError):
        view.popitem()


def test_mapping_assignment_replaces_after_validation(dm):
    dm.mapping = {"x": Device.gpu(4)}
    assert snapshot(dm) == [("x", "cuda:4")]
    before = snapshot(dm)
    with pytest.raises(TypeError, match="key 'y'"):
        dm.mapping = {"z": Device.cpu(), "y": "cpu"}
    assert snapshot(dm) == before


def test_haystack_style_read_through_mapping(dm):
    # Haystack's own code does this.
    assert {k: str(v) for k, v in dm.mapping.items()} == dm.to_dict()


def test_device_counts():
    m = DeviceMap.from_hf({"a": 1, "b": "cpu", "c": 1, "d": "disk", "e": "cpu", "f": 1})
    counts = m.device_counts()
    assert type(counts) is dict
    assert list(counts.items()) == [(Device.gpu(1), 3), (Device.cpu(), 2), (Device.disk(), 1)]
    del m["b"]
    del m["e"]
    assert list(m.device_counts().items()) == [(Device.gpu(1), 3), (Device.disk(), 1)]
    assert DeviceMap().device_counts() == {}


def test_repr_small_is_haystacks_dataclass_repr():
    m = DeviceMap({"a": Device.cpu(), "b'q": Device.gpu(1)})
    assert repr(m) == (
        "DeviceMap(mapping={'a': Device(type=<DeviceType.CPU: 'cpu'>, id=None), "
        "\"b'q\": Device(type=<DeviceType.GPU: 'cuda'>, id=1)})"
    )
    assert repr(DeviceMap()) == "DeviceMap(mapping={})"


def test_repr_large_is_a_summary():
    m32 = DeviceMap({f"k{i}": Device.cpu() for i in range(32)})
    assert repr(m32).startswith("DeviceMap(mapping={'k0': ")
    m = DeviceMap({f"k{i}": Device.gpu(i % 2) for i in range(33)})
    text = repr(m)
    assert text.startswith("DeviceMap(")
    assert "33 entries" in text
    assert "cuda:0" in text
    assert "cuda:1" in text
    assert "k17" not in text


def test_fingerprint_basics(dm):
    fp = dm.fingerprint()
    assert len(fp) == 32
    assert int(fp, 16) >= 0
    assert fp == dm.fingerprint()
    same = DeviceMap({"c": Device.disk(), "a": Device.cpu(), "b": Device.gpu(1)})
    assert same.fingerprint() == fp
    dm["b"] = Device.gpu(2)
    assert dm.fingerprint() != fp
    dm["b"] = Device.gpu(1)
    assert dm.fingerprint() == fp
    assert DeviceMap().fingerprint() != DeviceMap({"": Device.cpu()}).fingerprint()


FINGERPRINT_MAPS = [
    {},
    {"a": "cpu", "b": "cuda:1", "c": "disk"},
    {"model.layers.0": "cuda:0", "model.layers.1": "cuda:1", "lm_head": "cpu", "é": "meta"},
    {f"layer.{i}": f"cuda:{i % 4}" for i in range(500)},
]


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_fingerprint_is_stable_across_processes(seed):
    here = [DeviceMap.from_dict(m).fingerprint() for m in FINGERPRINT_MAPS]
    code = (
        "import json, sys\n"
        "from devicemap import DeviceMap\n"
        "maps = json.loads(sys.argv[1])\n"
        "print(json.dumps([DeviceMap.from_dict(dict(reversed(m.items()))).fingerprint() for m in maps]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(FINGERPRINT_MAPS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": seed},
    )
    assert json.loads(result.stdout) == here
    assert len(set(here)) == len(here)


def test_updates_from_the_map_itself_or_its_view(dm):
    # Each once panicked ("Already mutably borrowed"): the input was read while the map was borrowed.
    before = dm.to_dict()
    dm.update(dm)
    dm.update(dm.mapping)
    dm.mapping.update(dm)
    dm.mapping.update(dm.mapping)
    dm.mapping = dm.mapping
    assert dm.to_dict() == before
    other = DeviceMap({"z": Device.xpu()})
    other.mapping = dm.mapping
    assert other == dm
    with pytest.raises(TypeError):
        dm.__setstate__(dm.mapping)  # state holds strings, not Devices
    assert dm.to_dict() == before


def test_iteration_across_batches_matches_the_entries() -> None:
    # Past one batch of the iterator (512 entries), with a deletion leaving a tombstone inside.
    m = DeviceMap.from_hf({f"layer.{i}": i % 3 for i in range(1500)})
    del m["layer.700"]
    expected = [(f"layer.{i}", Device.gpu(i % 3)) for i in range(1500) if i != 700]
    assert list(m) == expected
    assert list(m.items()) == expected
    assert list(m.keys()) == [k for k, _ in expected]
    assert list(m.mapping) == [k for k, _ in expected]
    assert dict(m) == dict(expected)
    it = iter(m)
    assert [next(it) for _ in range(3)] == expected[:3]
    m["layer.0"] = Device.cpu()
    m["new"] = Device.disk()
    rest = list(it)
    assert rest == expected[3:], "an iterator keeps the snapshot it started with"
    assert next(iter(m)) == ("layer.0", Device.cpu())
    assert list(m)[-1] == ("new", Device.disk())


def test_keys_are_views_sharing_key_objects(dm: DeviceMap) -> None:
    assert all(a is b for a, b in zip(dm.keys(), dm.keys(), strict=True))
    assert next(k for k, _ in dm) is next(iter(dm.keys()))


def test_views_see_later_changes(dm: DeviceMap) -> None:
    keys, values, items = dm.keys(), dm.values(), dm.items()
    dm["new"] = Device.gpu(5)
    del dm["a"]
    assert list(keys) == ["b", "c", "new"]
    assert list(values) == [Device.gpu(1), Device.disk(), Device.gpu(5)]
    assert list(items)[-1] == ("new", Device.gpu(5))
    assert len(keys) == len(values) == len(items) == 3
    assert "new" in keys
    assert "a" not in keys
    assert ("new", Device.gpu(5)) in items
    assert Device.gpu(5) in values
    dm.clear()
    assert list(keys) == []
    assert len(items) == 0


def test_mapping_view_is_kept_and_keeps_the_content() -> None:
    import gc
    import weakref

    m = DeviceMap({"a": Device.cpu()})
    view = m.mapping
    assert m.mapping is view
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None, "the view holds no reference back to the map object"
    assert view["a"] == Device.cpu()
    view["b"] = Device.gpu(0)
    assert dict(view) == {"a": Device.cpu(), "b": Device.gpu(0)}
