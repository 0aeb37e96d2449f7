"""Tensor-name lookup: `device_for`, `devices_for`, `group_by_device`, `explain`, `diff`,
`summary`, against a plain Python longest-prefix loop."""

from __future__ import annotations

import threading
import warnings

import pytest
from devicemap import Device, DeviceMap, Explanation, MapDiff, MapSummary, NearMiss
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import devices


def reference(mapping: dict[str, Device], name: str) -> Device | None:
    """The definition, one key at a time: the longest key that is `""`, the name, or a prefix
    of it followed by a dot."""
    best: str | None = None
    for key in mapping:
        if (key == "" or key == name or name.startswith(key + ".")) and (
            best is None or len(key) > len(best)
        ):
            best = key
    return None if best is None else mapping[best]


def valid(name: str) -> bool:
    return name != "" and "" not in name.split(".")


# Components that trap a lookup: numeric suffixes of each other, a prefix without a dot,
# regex metacharacters, non-ASCII text.
components = st.sampled_from(
    [
        "model",
        "layers",
        "1",
        "10",
        "11",
        "1a",
        "mlp",
        "lm_head",
        "lm_head_extra",
        "é",
        "日本",
        "a*",
        "[0-9]",
        "w",
    ]
)
names = st.lists(components, min_size=1, max_size=7).map(".".join)
deep_names = st.integers(1, 300).map(lambda n: ".".join(["x"] * n))
maps = st.dictionaries(st.one_of(st.just(""), names), devices, max_size=10)


@given(maps, st.lists(names, max_size=20))
def test_agrees_with_the_definition(mapping, tensor_names):
    dm = DeviceMap(mapping)
    for name in tensor_names:
        expected = reference(mapping, name)
        if expected is None:
            with pytest.raises(KeyError, match="covers tensor"):
                dm.device_for(name)
        else:
            assert dm.device_for(name) == expected


@given(maps, st.lists(names, max_size=30))
def test_single_batch_and_grouped_forms_agree(mapping, tensor_names):
    dm = DeviceMap(mapping)
    covered = [n for n in tensor_names if reference(mapping, n) is not None]
    singles = [dm.device_for(n) for n in covered]
    assert dm.devices_for(covered) == singles
    assert dm.devices_for(tuple(covered)) == singles
    assert dm.devices_for(iter(covered)) == singles
    grouped = dm.group_by_device(covered)
    regrouped: dict[Device, list[str]] = {}
    for name, device in zip(covered, singles, strict=True):
        regrouped.setdefault(device, []).append(name)
    assert grouped == regrouped
    assert list(grouped) == list(regrouped)  # devices in order of their first name


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@given(st.dictionaries(text, devices, max_size=8), st.lists(text, max_size=10))
def test_arbitrary_text_keys_and_names(mapping, tensor_names):
    dm = DeviceMap(mapping)
    for name in filter(valid, tensor_names):
        expected = reference(mapping, name)
        if expected is None:
            with pytest.raises(KeyError):
                dm.device_for(name)
        else:
            assert dm.device_for(name) == expected


@given(deep_names, st.integers(0, 300))
def test_deep_names(name, key_depth):
    key = ".".join(["x"] * key_depth)
    dm = DeviceMap({key: Device.gpu(1)} if key_depth else {"y": Device.cpu()})
    expected = reference(dict(dm), name)
    if expected is None:
        with pytest.raises(KeyError):
            dm.device_for(name)
    else:
        assert dm.device_for(name) == expected


def test_the_transformers_regex_traps():
    dm = DeviceMap.from_hf({"model.layers.1": 0, "model": 1, "lm_head": "cpu", "": "disk"})
    assert dm.device_for("model.layers.10.mlp.gate.weight") == Device.gpu(1)
    assert dm.device_for("model.layers.1.mlp.gate.weight") == Device.gpu(0)
    assert dm.device_for("lm_head_extra.weight") == Device.disk()
    assert dm.device_for("lm_head.weight") == Device.cpu()
    with pytest.raises(KeyError):
        DeviceMap.from_hf({"a.b": 0}).device_for("aXb.w")  # `.` is no regex wildcard
    assert DeviceMap.from_hf({"a.b": 0, "a": 1}).device_for("a.b") == Device.gpu(0)  # an exact key


def test_empty_key_covers_everything_and_loses_to_any_other():
    dm = DeviceMap.from_hf({"": 0})
    assert dm.devices_for(["x", "y.z", "lm_head.weight"]) == [Device.gpu(0)] * 3
    dm["y"] = Device.cpu()
    assert dm.device_for("y.z") == Device.cpu()


def test_mutation_is_seen_by_the_next_lookup():
    dm = DeviceMap.from_hf({"model": 0})
    assert dm.device_for("model.layers.3.w") == Device.gpu(0)
    dm["model.layers.3"] = Device.gpu(1)
    assert dm.device_for("model.layers.3.w") == Device.gpu(1)
    dm["model.layers.3"] = Device.disk()
    assert dm.devices_for(["model.layers.3.w"]) == [Device.disk()]
    del dm["model.layers.3"]
    assert dm.group_by_device(["model.layers.3.w"]) == {Device.gpu(0): ["model.layers.3.w"]}
    dm.update({"model.layers": Device.cpu()})
    assert dm.device_for("model.layers.3.w") == Device.cpu()
    dm.mapping = {"other": Device.cpu()}
    with pytest.raises(KeyError):
        dm.device_for("model.layers.3.w")
    dm.clear()
    with pytest.raises(KeyError):
        dm.device_for("other")
    copy = DeviceMap.from_hf({"a": 0})
    original = copy.copy()
    copy["a"] = Device.cpu()
    assert original.device_for("a.w") == Device.gpu(0)
    assert copy.device_for("a.w") == Device.cpu()


def test_key_error_names_the_tensor_and_its_position():
    dm = DeviceMap.from_hf({"model": 0})
    with pytest.raises(KeyError, match=r"'lm_head\.weight'"):
        dm.device_for("lm_head.weight")
    with pytest.raises(KeyError, match=r"'lm_head\.weight' \(at position 2\)"):
        dm.devices_for(["model.a", "model.b", "lm_head.weight"])
    with pytest.raises(KeyError, match=r"lm_head\.weight"):
        dm.group_by_device(["model.a", "lm_head.weight"])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "is empty"),
        ("model.", "ends with '.'"),
        (".model", "starts with '.'"),
        ("model..w", "empty component"),
        (".".join(["x"] * 1025), "1025 components deep"),
        ("x" * (64 * 1024 + 1), "bytes long"),
    ],
)
def test_bad_names_are_value_errors(bad, message):
    dm = DeviceMap.from_hf({"": 0, "model": 1})
    with pytest.raises(ValueError, match=message):
        dm.device_for(bad)
    with pytest.raises(ValueError, match=rf"{message}.*\(at position 1\)"):
        dm.devices_for(["model.w", bad])
    with pytest.raises(ValueError, match=message):
        dm.check(["model.w", bad])
    with pytest.raises(ValueError, match=message):
        dm.explain(bad)
    with pytest.raises(ValueError, match=message):
        dm.summary({bad: 1})


def test_deepest_allowed_name_works():
    name = ".".join(["x"] * 1024)
    assert DeviceMap.from_hf({"x.x": 3}).device_for(name) == Device.gpu(3)


@pytest.mark.parametrize("bad", [3, None, b"model.w", Device.cpu()])
def test_non_str_names_are_type_errors_naming_the_position(bad):
    dm = DeviceMap.from_hf({"": 0})
    with pytest.raises(TypeError, match="tensor names must be str"):
        dm.device_for(bad)
    for method in (dm.devices_for, dm.group_by_device, dm.check, dm.coverage):
        for names in (["a", "b", bad], ("a", "b", bad), iter(["a", "b", bad])):
            with pytest.raises(TypeError, match=r"position 2 holds"):
                method(names)


def test_one_str_is_not_a_list_of_names():
    dm = DeviceMap.from_hf({"": 0})
    for method in (dm.devices_for, dm.group_by_device, dm.check, dm.coverage):
        with pytest.raises(TypeError, match="not one str"):
            method("model.w")
    assert dm.devices_for({"a.w": 1, "b.w": 2}) == [Device.gpu(0)] * 2  # a dict gives its keys
    with pytest.raises(TypeError, match="sequence of tensor names"):
        dm.devices_for(5)


def test_batch_lookup_from_threads_while_another_map_changes():
    names = [f"model.layers.{i % 61}.mlp.experts.{i % 256}.w" for i in range(20_000)]
    dm = DeviceMap.from_hf({f"model.layers.{i}": i % 8 for i in range(61)})
    expected = dm.devices_for(names)
    results: list[bool] = []

    def work() -> None:
        results.append(dm.devices_for(names) == expected)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 4


def test_explain():
    dm = DeviceMap.from_hf(
        {"model.layers.1": 0, "model": 1, "model.layer.10": 2, "model.layers.10.mlp.up": 3, "": "cpu"}
    )
    explanation = dm.explain("model.layers.10.mlp")
    assert isinstance(explanation, Explanation)
    assert explanation.name == "model.layers.10.mlp"
    assert explanation.key == "model"
    assert explanation.device == Device.gpu(1)
    assert explanation.shadowed == (("", Device.cpu()),)
    misses = explanation.near_misses
    assert all(isinstance(m, NearMiss) for m in misses)
    assert [(m.key, m.device, m.reason) for m in misses] == [
        ("model.layers.1", Device.gpu(0), "no-dot-boundary"),
        ("model.layer.10", Device.gpu(2), "component-differs"),
        ("model.layers.10.mlp.up", Device.gpu(3), "inside-name"),
    ]
    text = str(explanation)
    assert text.startswith("model.layers.10.mlp -> cuda:1 (key 'model')")
    assert "'model.layers.1' (cuda:0): a text prefix of the name, but not at a '.' boundary" in text
    assert "component 2 differs: 'layer' in the key, 'layers' in the name" in text
    assert repr(explanation) == "Explanation(name='model.layers.10.mlp', key='model', device=cuda:1)"
    uncovered = DeviceMap.from_hf({"lm_head": 0}).explain("lm_head_extra.weight")
    assert uncovered.key is None
    assert uncovered.device is None
    assert "no key covers it" in str(uncovered)
    assert uncovered.near_misses[0].reason == "no-dot-boundary"
    assert explanation.more_near_misses == 0


def test_explain_counts_the_near_misses_it_does_not_list():
    dm = DeviceMap.from_hf({f"model.layers.{i}": 0 for i in range(100, 125)})
    explanation = dm.explain("model.layers.1.mlp")
    assert len(explanation.near_misses) == 20
    assert explanation.more_near_misses == 5
    assert str(explanation).endswith("\n    ... and 5 more")


def test_diff():
    old = DeviceMap.from_hf({"a": "cpu", "b": 0, "c": 1})
    new = DeviceMap.from_hf({"c": 2, "b": 0, "d": "disk"})
    diff = old.diff(new)
    assert isinstance(diff, MapDiff)
    assert diff.added == (("d", Device.disk()),)
    assert diff.removed == (("a", Device.cpu()),)
    assert diff.moved == (("c", Device.gpu(1), Device.gpu(2)),)
    assert diff
    assert str(diff) == "1 added, 1 removed, 1 moved\n+ 'd': disk\n- 'a': cpu\n~ 'c': cuda:1 -> cuda:2"
    assert old.diff({"a": Device.cpu(), "b": Device.gpu(0), "c": Device.gpu(1)}).added == ()
    same = old.diff(old.copy())
    assert not same
    assert str(same) == "no differences"
    with pytest.raises(TypeError, match="DeviceMap or a mapping"):
        old.diff(3)


def test_summary():
    dm = DeviceMap.from_hf({"a": 0, "b": "cpu", "c": 0})
    plain = dm.summary()
    assert isinstance(plain, MapSummary)
    assert plain.entries == {Device.gpu(0): 2, Device.cpu(): 1}
    assert plain.tensors is None
    assert plain.bytes is None
    sized = dm.summary({"a.w": 10, "c.w": 5, "b.w": 7, "z.w": 3})
    assert sized.tensors == {Device.gpu(0): 2, Device.cpu(): 1}
    assert sized.bytes == {Device.gpu(0): 15, Device.cpu(): 7}
    assert (sized.uncovered_tensors, sized.uncovered_bytes) == (1, 3)
    assert dm.summary([("a.w", 10), ("b.w", 7)]).bytes == {Device.gpu(0): 10, Device.cpu(): 7}
    assert "not covered: 1 tensor, 3 B" in str(sized)
    assert str(plain).splitlines()[0] == "3 entries on 2 devices"
    with pytest.raises(TypeError, match="must be an int"):
        dm.summary({"a.w": 1.5})
    with pytest.raises(ValueError, match="must be a non-negative int"):
        dm.summary({"a.w": -1})
    with pytest.raises(TypeError, match="pair"):
        dm.summary([("a.w",)])


def test_result_classes_are_frozen():
    explanation = DeviceMap.from_hf({"a": 0}).explain("a.w")
    with pytest.raises(AttributeError):
        explanation.key = "b"  # type: ignore[misc]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert explanation.__class__.__module__ == "devicemap"


def test_devices_for_with_a_default_answers_uncovered_names_with_it():
    dm = DeviceMap.from_hf({"model.layers.1": 0, "lm_head": "cpu"})
    names = ["model.layers.1.w", "lm_head_extra.weight", "lm_head.weight", "model.layers.10.w"]
    assert dm.devices_for(names, None) == [Device.gpu(0), None, Device.cpu(), None]
    marker = object()
    assert dm.devices_for(names, marker)[1] is marker
    with pytest.raises(KeyError, match="lm_head_extra"):
        dm.devices_for(names)
    with pytest.raises(ValueError, match="empty"):
        dm.devices_for(["", "lm_head.weight"], None)
    with pytest.raises(TypeError, match="at most 2 arguments"):
        dm.devices_for(names, None, None)  # type: ignore[call-overload]
