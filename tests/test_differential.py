"""Differential tests against Haystack's `haystack.utils.device` on a generated corpus.

Each input either gives the same result in both, or both raise the same exception type (our
message containing Haystack's), or falls under one of the spec's [better] rules, in which case
ours must do what that rule documents. `diverges_*` below name those rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType
from hypothesis import given
from hypothesis import strategies as st

MAX_ID = 2**64 - 1
TORCH_ID = re.compile(r"0|[1-9][0-9]*", re.ASCII)

TYPE_PARTS = [
    "cpu",
    "cuda",
    "disk",
    "mps",
    "xpu",
    "meta",
    "gpu",
    "GPU",
    "CUDA",
    "Cpu",
    "tpu",
    "",
    " cpu",
    "cuda ",
]
ID_PARTS = [
    "0",
    "1",
    "7",
    "10",
    "127",
    "128",
    str(MAX_ID),
    str(MAX_ID + 1),
    str(10**30),
    "01",
    "00",
    " 1",
    "1 ",
    "+2",
    "-1",
    "-0",
    "1_0",
    "x",
    "1.0",
    "\u0661",
    "\uff11",
    "",
    "1:2",
    ":",
    "\n1",
]
FIXED_STRINGS = [t for t in TYPE_PARTS] + [f"{t}:{i}" for t in TYPE_PARTS for i in ID_PARTS]
device_strings = st.one_of(
    st.sampled_from(FIXED_STRINGS),
    st.text(alphabet="cudaptmxsk:0123456789+-_ GPU\u0661", max_size=10),
)


@dataclass
class Outcome:
    """A call's result as comparable data: the value, or the exception's type and message."""

    value: Any = None
    error: type[BaseException] | None = None
    message: str = ""


def outcome(call) -> Outcome:
    try:
        return Outcome(value=call())
    except Exception as error:
        return Outcome(error=type(error), message=str(error))


def device_key(device) -> tuple[str, Any]:
    """A Device of either library as plain data."""
    return (device.type.value, device.id)


# Haystack's own messages start so; others come from Python itself ("argument of type 'int' is
# not iterable") and only their type is compared.
HAYSTACK_PHRASES = (
    "Unknown",
    "Device id must",
    "Couldn't convert",
    "The disk device",
    "The component device",
    "Only single",
    "No usable",
    "Invalid component",
)


def assert_same(ours: Outcome, theirs: Outcome) -> None:
    assert ours.error is theirs.error, (ours, theirs)
    if ours.error is None:
        assert ours.value == theirs.value
    elif theirs.message.startswith(HAYSTACK_PHRASES):
        assert theirs.message in ours.message, (ours, theirs)


# --- device strings -------------------------------------------------------------------


def string_rule(text: str) -> Outcome | None:
    """What a [better] rule makes of `text`, or None when we must match Haystack."""
    if text.count(":") > 1:
        return Outcome(error=ValueError, message="more than one ':'")
    type_part, colon, id_part = text.partition(":")
    if colon and re.fullmatch(r"-0*[1-9][0-9]*", id_part, re.ASCII):
        # A negative id: Haystack's own check and message (after the type's), except for meta.
        if type_part == "meta":
            return Outcome(error=ValueError, message=f"Device id must be >= 0, got {int(id_part)}")
        return None
    if colon and not TORCH_ID.fullmatch(id_part):
        # Quoted as repr quotes it (Haystack writes the part bare).
        return Outcome(error=ValueError, message=f"Device id must be an integer, got {id_part!r}")
    if colon and int(id_part) > MAX_ID:
        return Outcome(error=ValueError, message="too large")
    if type_part == "meta":
        return Outcome(value=("meta", int(id_part) if colon else None))
    return None


def assert_rule(ours: Outcome, rule: Outcome) -> None:
    assert ours.error is rule.error, (ours, rule)
    if rule.error is None:
        assert ours.value == rule.value
    else:
        assert rule.message in ours.message, (ours, rule)


def check_string(hs, text: str) -> None:
    ours = outcome(lambda: device_key(Device.from_str(text)))
    rule = string_rule(text)
    if rule is not None:
        assert_rule(ours, rule)
        return
    theirs = outcome(lambda: device_key(hs.Device.from_str(text)))
    assert_same(ours, theirs)
    if ours.error is None:
        assert str(Device.from_str(text)) == str(hs.Device.from_str(text)) == text


@pytest.mark.parametrize("text", FIXED_STRINGS)
def test_device_from_str_fixed_corpus(hs, text):
    check_string(hs, text)


@given(device_strings)
def test_device_from_str_generated(hs, text):
    check_string(hs, text)


@pytest.mark.parametrize("text", [t for t in FIXED_STRINGS if string_rule(t) is None])
def test_device_type_from_str_and_component_from_str(hs, text):
    assert_same(
        outcome(lambda: DeviceType.from_str(text).value), outcome(lambda: hs.DeviceType.from_str(text).value)
    )
    assert_same(
        outcome(lambda: ComponentDevice.from_str(text).to_dict()),
        outcome(lambda: hs.ComponentDevice.from_str(text).to_dict()),
    )


@pytest.mark.parametrize("value", [None, 0, b"cuda", ["cpu"]])
def test_device_from_str_non_str_both_type_error(hs, value):
    assert outcome(lambda: Device.from_str(value)).error is TypeError
    assert outcome(lambda: hs.Device.from_str(value)).error is TypeError


def test_reprs_and_strs_match(hs):
    for member in hs.DeviceType:
        ours_member = DeviceType(member.value)
        assert ours_member.name == member.name
        assert str(ours_member) == str(member)
        assert repr(ours_member) == repr(member)
        for id_ in (None, 0, 3):
            assert repr(Device(ours_member, id_)) == repr(hs.Device(member, id_))
            assert str(Device(ours_member, id_)) == str(hs.Device(member, id_))
    ours = DeviceMap({"a": Device.cpu(), "b.0": Device.gpu(1)})
    theirs = hs.DeviceMap({"a": hs.Device.cpu(), "b.0": hs.Device.gpu(1)})
    assert repr(ours) == repr(theirs)
    assert repr(ComponentDevice.from_multiple(ours)) == repr(hs.ComponentDevice.from_multiple(theirs))
    assert repr(ComponentDevice.from_str("cuda:2")) == repr(hs.ComponentDevice.from_str("cuda:2"))


def test_factories_match(hs):
    for name in ("cpu", "gpu", "disk", "mps", "xpu"):
        assert device_key(getattr(Device, name)()) == device_key(getattr(hs.Device, name)())
    assert device_key(Device.gpu(4)) == device_key(hs.Device.gpu(4))
    assert device_key(Device.gpu(None)) == device_key(hs.Device.gpu(None))


# --- HF maps --------------------------------------------------------------------------


def torch_devices() -> list[Any]:
    torch = pytest.importorskip("torch")
    return [torch.device(text) for text in ("cpu", "cuda", "cuda:1", "mps", "xpu:0", "meta", "cpu:3")]


def hf_rule(key: Any, value: Any) -> Outcome | None:
    """What a [better] rule makes of one HF entry, or None when we must match Haystack."""
    if not isinstance(key, str):
        return Outcome(error=TypeError, message="keys must be str")
    if isinstance(value, bool):
        return Outcome(error=TypeError, message=f"unexpected device '{value}' for '{key}'")
    if isinstance(value, int) and value > MAX_ID:
        return Outcome(error=ValueError, message="too large")
    if isinstance(value, str):
        return string_rule(value)
    if type(value).__module__ == "torch" and value.type == "meta":
        return Outcome(value=("meta", value.index))
    return None


def check_map(mapping: dict, ours_build, theirs_build, entry_rule, hs) -> Outcome:
    """Checks each entry alone (against Haystack or a [better] rule), then the whole map:
    ours gives every entry's device, or the first bad entry's error; where no rule applies
    to any entry, Haystack agrees on the whole map too. Returns our whole-map outcome."""
    per_entry = []
    for key, value in mapping.items():
        ours = outcome(lambda: device_key(ours_build({key: value})[key]))  # noqa: B023 - called at once
        rule = entry_rule(key, value)
        if rule is not None:
            assert_rule(ours, rule)
        else:
            theirs = outcome(lambda: device_key(theirs_build({key: value})[key]))  # noqa: B023
            assert_same(ours, theirs)
        if ours.error is not None and isinstance(key, str):
            # Errors about an entry name its key: as repr quotes it, or in Haystack's own
            # "for '<key>'" of an unexpected HF value.
            assert repr(key) in ours.message or f"'{key}'" in ours.message, ours
        per_entry.append((ours, rule is None))
    whole = outcome(lambda: ours_build(mapping).to_dict())
    first_error = next((o for o, _ in per_entry if o.error is not None), None)
    if first_error is None:
        expected = {
            key: (f"{t}:{i}" if i is not None else t)
            for key, (o, _) in zip(mapping, per_entry, strict=True)
            for t, i in [o.value]
        }
        assert whole == Outcome(value=expected)
        assert list(whole.value) == list(mapping)
    else:
        assert (whole.error, whole.message) == (first_error.error, first_error.message)
    if all(comparable for _, comparable in per_entry):
        assert_same(whole, outcome(lambda: theirs_build(mapping).to_dict()))
    return whole


def hf_values(torch_values: list[Any]):
    return st.one_of(
        st.integers(-3, 12),
        st.sampled_from([MAX_ID, MAX_ID + 1, 10**30, True, False, 1.5, None, [0], b"cpu", {"d": 0}]),
        device_strings,
        st.sampled_from(torch_values),
    )


hf_keys = st.one_of(
    st.from_regex(r"[a-z]{1,6}(\.[0-9]{1,2}){0,2}", fullmatch=True),
    st.sampled_from(["", "é", "a'b", 0, None]),
)


@given(data=st.data())
def test_from_hf_generated(hs, data):
    values = hf_values(torch_devices())
    mapping = dict(data.draw(st.lists(st.tuples(hf_keys, values), max_size=8)))
    check_map(mapping, DeviceMap.from_hf, hs.DeviceMap.from_hf, hf_rule, hs)


def test_from_hf_fixed_examples(hs):
    torch = pytest.importorskip("torch")
    mapping = {
        "embed": 0,
        "layers.0": 1,
        "layers.1": "cpu",
        "lm_head": "disk",
        "norm": torch.device("cuda:1"),
    }
    assert DeviceMap.from_hf(mapping).to_dict() == hs.DeviceMap.from_hf(mapping).to_dict()
    assert DeviceMap.from_hf(mapping) == DeviceMap.from_dict(hs.DeviceMap.from_hf(mapping).to_dict())


# --- serialized dicts -----------------------------------------------------------------


def dict_entry_rule(key: Any, value: Any) -> Outcome | None:
    """What a [better] rule makes of one `DeviceMap.from_dict` entry, or None to match Haystack."""
    if not isinstance(key, str):
        return Outcome(error=TypeError, message="keys must be str")
    if isinstance(value, str):
        return string_rule(value)
    return None


def check_from_dict(hs, mapping: dict) -> Outcome:
    """Checks `DeviceMap.from_dict(mapping)` entry by entry and whole; returns our outcome."""
    return check_map(mapping, DeviceMap.from_dict, hs.DeviceMap.from_dict, dict_entry_rule, hs)


serialized_maps = st.dictionaries(
    st.one_of(st.from_regex(r"[a-z]{1,4}", fullmatch=True), st.sampled_from([0, ""])),
    st.one_of(device_strings, st.sampled_from([0, None, True])),
    max_size=5,
)
serialized = st.one_of(
    st.builds(
        lambda d: {"type": "single", "device": d}, st.one_of(device_strings, st.sampled_from([0, None]))
    ),
    st.builds(lambda m: {"type": "multiple", "device_map": m}, serialized_maps),
    st.sampled_from(
        [
            {},
            {"type": "single"},
            {"type": "multiple"},
            {"type": "multiple", "device_map": None},
            {"type": "multiple", "device_map": ["cpu"]},
            {"type": "both", "device": "cpu"},
            {"type": None},
            {"type": 1},
            {"device": "cpu"},
            None,
            [],
        ]
    ),
)


@given(serialized)
def test_component_from_dict_generated(hs, data):
    ours = outcome(lambda: ComponentDevice.from_dict(data).to_dict())
    if isinstance(data, dict) and data.get("type") == "multiple" and "device_map" in data:
        device_map = data["device_map"]
        if not isinstance(device_map, dict):
            # [better]: Haystack fails on `.items()` with AttributeError; ours says a mapping is expected.
            assert ours.error is TypeError
            assert "expected a mapping" in ours.message
            return
        inner = check_from_dict(hs, device_map)
        if inner.error is None:
            assert ours == Outcome(value={"type": "multiple", "device_map": inner.value})
        else:
            assert (ours.error, ours.message) == (inner.error, inner.message)
        return
    if isinstance(data, dict) and data.get("type") == "single" and isinstance(data.get("device"), str):
        rule = string_rule(data["device"])
        if rule is not None:
            if rule.error is None:
                rule = Outcome(value={"type": "single", "device": data["device"]})
            assert_rule(ours, rule)
            return
    theirs = outcome(lambda: hs.ComponentDevice.from_dict(data).to_dict())
    assert_same(ours, theirs)


@given(serialized_maps)
def test_device_map_from_dict_generated(hs, data):
    check_from_dict(hs, data)


# --- ComponentDevice operations -------------------------------------------------------

haystack_devices = st.builds(
    lambda t, i: (t, i),
    st.sampled_from(["cpu", "cuda", "disk", "mps", "xpu"]),
    st.one_of(st.none(), st.integers(0, 9)),
)
component_specs = st.one_of(
    st.tuples(st.just("single"), haystack_devices),
    st.tuples(
        st.just("multiple"),
        st.dictionaries(st.from_regex(r"[a-z]{1,4}(\.[0-9])?", fullmatch=True), haystack_devices, max_size=6),
    ),
    st.tuples(
        st.just("raw"), st.one_of(st.none(), haystack_devices), st.sampled_from([None, {"a": ("cpu", None)}])
    ),
)


def build(spec, lib):
    def device(pair):
        return lib.Device(lib.DeviceType(pair[0]), pair[1])

    if spec[0] == "single":
        # A disk cannot go through from_single; the constructor takes it unchecked.
        if spec[1][0] == "disk":
            return lib.ComponentDevice(device(spec[1]))
        return lib.ComponentDevice.from_single(device(spec[1]))
    if spec[0] == "multiple":
        return lib.ComponentDevice.from_multiple(lib.DeviceMap({k: device(v) for k, v in spec[1].items()}))
    single = device(spec[1]) if spec[1] is not None else None
    multiple = lib.DeviceMap({k: device(v) for k, v in spec[2].items()}) if spec[2] is not None else None
    return lib.ComponentDevice(single, multiple)


def comparable(value: Any) -> Any:
    if hasattr(value, "to_dict") and hasattr(value, "has_multiple_devices"):
        return ("ComponentDevice", value.to_dict())
    return value


OPERATIONS = {
    "to_torch_str": lambda cd: cd.to_torch_str(),
    "to_spacy": lambda cd: cd.to_spacy(),
    "to_hf": lambda cd: cd.to_hf(),
    "update_hf_kwargs": lambda cd: cd.update_hf_kwargs({"x": 1}, overwrite=False),
    "update_hf_kwargs_existing": lambda cd: cd.update_hf_kwargs({"device": None}, overwrite=False),
    "update_hf_kwargs_overwrite": lambda cd: cd.update_hf_kwargs({"device_map": "auto"}, overwrite=True),
    "has_multiple_devices": lambda cd: cd.has_multiple_devices,
    "first_device": lambda cd: cd.first_device,
    "to_dict": lambda cd: cd.to_dict(),
}


def gpu_without_id(cd) -> bool:
    devices = [cd._single_device] if cd._single_device is not None else []
    if cd._multiple_devices is not None:
        devices += cd._multiple_devices.values()
    return any(d.type is DeviceType.GPU and d.id is None for d in devices)


@given(component_specs, st.sampled_from(sorted(OPERATIONS)))
def test_component_operations_generated(hs, spec, name):
    ours_cd, theirs_cd = build(spec, __import__("devicemap")), build(spec, hs)
    operation = OPERATIONS[name]
    ours = outcome(lambda: comparable(operation(ours_cd)))
    theirs = outcome(lambda: comparable(operation(theirs_cd)))
    if theirs.error is AssertionError:
        # [better]: where Haystack has a bare assert (GPU without id, empty to_dict), a clear ValueError.
        assert ours.error is ValueError
        assert ours.message
        if name == "to_dict":
            assert "neither be empty" in ours.message
        else:
            assert gpu_without_id(ours_cd)
            assert "GPU id" in ours.message
        return
    assert_same(ours, theirs)


# --- interchange ----------------------------------------------------------------------


@given(component_specs.filter(lambda s: s[0] != "raw" and not (s[0] == "single" and s[1][0] == "disk")))
def test_interchange_both_ways(hs, spec):
    theirs = build(spec, hs)
    data = theirs.to_dict()
    ours = ComponentDevice.from_dict(data)
    assert ours.to_dict() == data
    assert list(ours.to_dict().get("device_map", {})) == list(data.get("device_map", {}))
    assert ours == build(spec, __import__("devicemap"))
    back = hs.ComponentDevice.from_dict(ours.to_dict())
    assert back == theirs
    assert back.to_dict() == data


def test_interchange_fixed(hs):
    theirs = hs.ComponentDevice.from_multiple(
        hs.DeviceMap({"layer1": hs.Device.cpu(), "layer2": hs.Device.gpu(1), "layer3": hs.Device.disk()})
    )
    data = theirs.to_dict()
    assert data == {"type": "multiple", "device_map": {"layer1": "cpu", "layer2": "cuda:1", "layer3": "disk"}}
    ours = ComponentDevice.from_dict(data)
    assert ours.to_dict() == data
    assert ours.to_hf() == theirs.to_hf() == {"layer1": "cpu", "layer2": 1, "layer3": "disk"}
    assert hs.ComponentDevice.from_dict(ours.to_dict()) == theirs
    assert DeviceMap.from_dict(theirs._multiple_devices.to_dict()) == ours._multiple_devices
    assert hs.DeviceMap.from_dict(ours._multiple_devices.to_dict()) == theirs._multiple_devices
    single = hs.ComponentDevice.from_str("cuda:3")
    assert ComponentDevice.from_dict(single.to_dict()).to_dict() == {"type": "single", "device": "cuda:3"}
    assert hs.ComponentDevice.from_dict(ComponentDevice.from_str("cuda:3").to_dict()) == single
