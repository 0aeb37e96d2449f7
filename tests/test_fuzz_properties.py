"""Property fuzzing of the Python API: every public constructor and parser on arbitrary input,
and `DeviceMap` driven through random sequences of mutations (its own methods and its `mapping`
view) checked after every step against a plain `dict` model.

The Rust side has its own fuzz targets (fuzz/, scripts/fuzz.sh); docs/fuzzing.md records both.
pyo3's PanicException derives from BaseException, so a panic anywhere fails these tests.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from conftest import devices, hf_safe, map_keys
from devicemap import ComponentDevice, CudaDevice, Device, DeviceMap, DeviceType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

CLEAR_ERRORS = (ValueError, TypeError, KeyError, OverflowError)

# --- constructors and parsers on anything --------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(),  # lone surrogates included
    st.text(st.sampled_from("cudaphmsxik:0123456789-+_ \t\u0661"), max_size=12),
    st.binary(max_size=8),
    devices,
    st.sampled_from(list(DeviceType)),
    st.sampled_from([DeviceMap(), DeviceMap({"a": Device.cpu()}), object(), ..., 1j, float("inf")]),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.none()), inner, max_size=3),
    ),
    max_leaves=8,
)


def attempt(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Calls `function`; any exception must be a clear one, with a message (KeyError aside)."""
    try:
        return function(*args, **kwargs)
    except CLEAR_ERRORS as error:
        caught = error
    assert str(caught) or isinstance(caught, KeyError), f"{function!r}: empty message"
    return caught


def check_device(result: Any) -> None:
    if isinstance(result, Device):
        assert Device.from_str(str(result)) == result
        assert hash(copy.copy(result)) == hash(result)
        assert pickle.loads(pickle.dumps(result)) == result


def check_map(result: Any) -> None:
    if isinstance(result, DeviceMap):
        assert DeviceMap.from_dict(result.to_dict()) == result
        assert pickle.loads(pickle.dumps(result)) == result
        assert list(result) == list(zip(result.keys(), result.values(), strict=True))


def check_component(result: Any) -> None:
    if isinstance(result, ComponentDevice):
        back = attempt(ComponentDevice.from_dict, attempt(result.to_dict))
        if isinstance(back, ComponentDevice):
            assert back == result
            assert hash(back) == hash(result)


@given(anything, anything)
def test_device_constructors_on_anything(a: Any, b: Any) -> None:
    for result in (
        attempt(Device, a),
        attempt(Device, a, b),
        attempt(Device, type=a, id=b),
        attempt(Device, DeviceType.GPU, a),
        attempt(Device.from_str, a),
        attempt(Device.gpu, a),
    ):
        check_device(result)
    kind = attempt(DeviceType.from_str, a)
    if isinstance(kind, DeviceType):
        assert kind.value == a


@given(anything, anything)
def test_map_constructors_on_anything(a: Any, b: Any) -> None:
    for function in (DeviceMap, DeviceMap.from_dict, DeviceMap.from_hf):
        check_map(attempt(function, a))
        check_map(attempt(function, {"k": a, "j": b}))
        check_map(attempt(function, {a: b} if _hashable(a) else {}))
    check_map(attempt(DeviceMap, mapping=a))


@given(anything, anything)
def test_component_constructors_on_anything(a: Any, b: Any) -> None:
    for result in (
        attempt(ComponentDevice, a),
        attempt(ComponentDevice, a, b),
        attempt(ComponentDevice, _single_device=a, _multiple_devices=b),
        attempt(ComponentDevice.from_str, a),
        attempt(ComponentDevice.from_single, a),
        attempt(ComponentDevice.from_multiple, a),
        attempt(ComponentDevice.from_dict, a),
        attempt(ComponentDevice.from_dict, {"type": a, "device": b, "device_map": b}),
        attempt(ComponentDevice.resolve_device, a),
    ):
        check_component(result)
        if isinstance(result, ComponentDevice):
            # Every method either answers or raises a clear error.
            for method in ("to_torch_str", "to_spacy", "to_hf", "to_dict"):
                attempt(getattr(result, method))
            attempt(result.update_hf_kwargs, {}, overwrite=True)
            attempt(lambda r=result: r.first_device)
            attempt(lambda r=result: r.has_multiple_devices)


@given(st.lists(anything, min_size=11, max_size=11))
def test_cuda_device_constructor_on_anything(fields: list[Any]) -> None:
    result = attempt(CudaDevice, *fields)
    if isinstance(result, CudaDevice):
        assert pickle.loads(pickle.dumps(result)) == result
        assert hash(pickle.loads(pickle.dumps(result))) == hash(result)
        repr(result)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# --- DeviceMap against a dict model --------------------------------------------------------

# A small key space, so writes, deletes and lookups meet the same keys often, plus any text.
_few_keys = st.sampled_from(["a", "b", "c", "layer.0", "layer.1", "", "ключ", "\U0001f600"])
# Weighted three to one towards the few keys, so most operations meet a key already present.
keys = st.one_of(_few_keys, _few_keys, _few_keys, map_keys)
bad_values = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just(DeviceType.GPU))


def counts_in_order(model: dict[str, Device]) -> dict[Device, int]:
    counts: dict[Device, int] = {}
    for device in model.values():
        counts[device] = counts.get(device, 0) + 1
    return counts


class DeviceMapMachine(RuleBasedStateMachine):
    """One `DeviceMap` and one `dict`, put through the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.dm = DeviceMap()
        self.model: dict[str, Device] = {}
        # Copies taken along the way, each with the content it must keep.
        self.copies: list[tuple[DeviceMap, dict[str, Device]]] = []

    # writes
    @rule(key=keys, device=devices)
    def set_item(self, key: str, device: Device) -> None:
        self.dm[key] = device
        self.model[key] = device

    @rule(key=keys, device=devices)
    def set_item_through_mapping(self, key: str, device: Device) -> None:
        self.dm.mapping[key] = device
        self.model[key] = device

    @rule(key=keys, value=bad_values)
    def set_bad_value(self, key: str, value: Any) -> None:
        with pytest.raises(TypeError):
            self.dm[key] = value
        with pytest.raises(TypeError):
            self.dm.mapping[key] = value

    @rule(key=st.one_of(st.integers(), st.none(), st.binary(max_size=3)), device=devices)
    def set_bad_key(self, key: Any, device: Device) -> None:
        with pytest.raises(TypeError):
            self.dm[key] = device

    @rule(key=keys, device=st.one_of(st.none(), devices))
    def setdefault(self, key: str, device: Device | None) -> None:
        if device is None and key not in self.model:
            attempt(self.dm.mapping.setdefault, key)
            # Either refused (no default device) or stored; the model follows what happened.
            if key in self.dm:
                self.model[key] = self.dm[key]
            return
        expected = self.model.setdefault(key, device) if device is not None else self.model[key]
        got = (
            self.dm.mapping.setdefault(key, device) if device is not None else self.dm.mapping.setdefault(key)
        )
        assert got == expected

    @rule(entries=st.dictionaries(keys, devices, max_size=4), as_map=st.booleans(), via_view=st.booleans())
    def update(self, entries: dict[str, Device], as_map: bool, via_view: bool) -> None:
        target = self.dm.mapping if via_view else self.dm
        target.update(DeviceMap(entries) if as_map else entries)
        self.model.update(entries)

    @rule(entries=st.dictionaries(keys, st.one_of(devices, bad_values), max_size=4))
    def update_with_bad_values(self, entries: dict[str, Any]) -> None:
        if all(isinstance(v, Device) for v in entries.values()):
            self.dm.update(entries)
            self.model.update(entries)
            return
        # A failed update changes nothing.
        with pytest.raises(TypeError):
            self.dm.update(entries)

    @rule(entries=st.dictionaries(keys, devices, max_size=5))
    def assign_mapping(self, entries: dict[str, Device]) -> None:
        self.dm.mapping = entries
        self.model = dict(entries)

    # deletes
    @rule(key=keys, via_view=st.booleans())
    def delete(self, key: str, via_view: bool) -> None:
        target: Any = self.dm.mapping if via_view else self.dm
        if key in self.model:
            del target[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del target[key]

    @rule(key=keys, default=st.one_of(st.just(None), devices), give_default=st.booleans())
    def pop(self, key: str, default: Device | None, give_default: bool) -> None:
        for target in (self.dm, self.dm.mapping):
            if key in self.model:
                assert target.pop(key) == self.model.pop(key)
                return
            if give_default:
                assert target.pop(key, default) is default
            else:
                with pytest.raises(KeyError):
                    target.pop(key)

    @rule()
    def popitem(self) -> None:
        if not self.model:
            with pytest.raises(KeyError):
                self.dm.mapping.popitem()
            return
        assert self.dm.mapping.popitem() == self.model.popitem()

    @precondition(lambda self: len(self.model) < 4)
    @rule()
    def clear(self) -> None:
        self.dm.clear()
        self.model.clear()

    # copies and round trips
    @rule(kind=st.sampled_from(["copy", "copy.copy", "deepcopy", "pickle", "init"]))
    def take_copy(self, kind: str) -> None:
        made = {
            "copy": self.dm.copy,
            "copy.copy": lambda: copy.copy(self.dm),
            "deepcopy": lambda: copy.deepcopy(self.dm),
            "pickle": lambda: pickle.loads(pickle.dumps(self.dm)),
            "init": lambda: DeviceMap(self.dm.mapping),
        }[kind]()
        assert made is not self.dm
        assert made == self.dm
        self.copies.append((made, dict(self.model)))
        del self.copies[:-3]

    @rule()
    def round_trips(self) -> None:
        assert DeviceMap.from_dict(self.dm.to_dict()) == self.dm
        if all(hf_safe(d) for d in self.model.values()):
            hf = ComponentDevice.from_multiple(self.dm).to_hf()
            assert isinstance(hf, dict)
            assert DeviceMap.from_hf(hf) == self.dm
        component = ComponentDevice.from_multiple(self.dm)
        assert ComponentDevice.from_dict(component.to_dict()) == component

    @rule(key=keys)
    def lookups(self, key: str) -> None:
        expected = self.model.get(key)
        assert self.dm.get(key) == expected
        assert self.dm.mapping.get(key) == expected
        assert (key in self.dm) == (key in self.model)
        assert (key in self.dm.mapping) == (key in self.model)
        if expected is None:
            with pytest.raises(KeyError):
                self.dm[key]
        else:
            assert self.dm[key] == expected
            assert self.dm.mapping[key] == expected

    # after every step
    @invariant()
    def agrees_with_the_model(self) -> None:
        model = self.model
        dm = self.dm
        assert len(dm) == len(model) == len(dm.mapping)
        assert list(dm) == list(model.items())
        assert list(dm.keys()) == list(model)
        assert list(dm.values()) == list(model.values())
        assert list(dm.items()) == list(model.items())
        assert list(dm.mapping) == list(model)
        assert dm.mapping == model
        assert dm.to_dict() == {k: str(v) for k, v in model.items()}
        assert dm.first_device == next(iter(model.values()), None)
        assert dm.device_counts() == counts_in_order(model)
        # Equal content in another order: equal maps, equal fingerprints.
        reordered = DeviceMap(dict(reversed(model.items())))
        assert reordered == dm
        assert reordered.fingerprint() == dm.fingerprint()
        for made, content in self.copies:
            assert list(made) == list(content.items()), "a copy changed with the original"


DeviceMapMachine.TestCase.settings = settings(
    # The profile's count (fewer under DEVICEMAP_HYPOTHESIS_PROFILE=quick), at most 100 runs of
    # up to 40 steps.
    max_examples=min(100, settings.default.max_examples),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_device_map_against_a_dict = DeviceMapMachine.TestCase
