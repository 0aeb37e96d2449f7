"""No Rust panic reaches Python as `PanicException` (a `BaseException`): inputs that used to
panic raise ordinary exceptions, and a panic that escapes anyway becomes a `RuntimeError`
naming the operation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from _mappings import Huge
from devicemap import ComponentDevice, DeviceMap, _core


@pytest.mark.parametrize("build", [DeviceMap, DeviceMap.from_dict, DeviceMap.from_hf])
def test_mapping_claiming_2_62_entries(build):
    with pytest.raises(OverflowError, match="4611686018427387904 entries"):
        build(Huge(2**62))


def test_mapping_claiming_2_63_entries_is_pythons_overflow():
    with pytest.raises(OverflowError):
        DeviceMap.from_hf(Huge(2**63))


def test_a_lying_small_length_is_only_a_hint():
    assert DeviceMap.from_hf(Huge(10**6)).to_dict() == {"a": "cuda:0"}


@pytest.mark.parametrize("build", [DeviceMap.from_hf, DeviceMap.from_dict, DeviceMap])
def test_repr_that_changes_the_dict_while_it_is_read(build):
    data: dict[str, object] = {}

    class Sneaky:
        def __repr__(self) -> str:
            data.clear()
            return "sneaky"

        __str__ = __repr__

    data.update(a=Sneaky(), b=1)
    # Stopping at the first bad entry: the error about it, made before the loop goes on.
    with pytest.raises(TypeError, match="sneaky"):
        build(data)
    data.update(a=Sneaky(), b=1)
    # Collecting every bad entry: the loop goes on and sees the dict changed, as a for loop would.
    with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
        _core._check_map(data, hf=build is DeviceMap.from_hf)


def test_str_key_that_changes_the_dict_while_collected():
    data: dict[object, object] = {}

    class Key:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            return self is other

        def __repr__(self) -> str:
            data["added"] = 0
            return "Key()"

    data[Key()] = 0
    data["b"] = 1
    with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
        _core._check_map(data, hf=True)


def test_component_from_dict_with_changing_map():
    inner: dict[str, object] = {}

    class Sneaky:
        def __repr__(self) -> str:
            inner["z"] = "cpu"
            return "sneaky"

    inner.update(a=Sneaky(), b="cpu")
    with pytest.raises(TypeError, match="Device string must be a str"):
        ComponentDevice.from_dict({"type": "multiple", "device_map": inner})


def test_escaped_panic_is_a_runtime_error_naming_the_operation():
    panic = getattr(_core, "_panic_for_tests", None)
    assert panic is not None, "build with the 'testing' feature (scripts/test.sh does)"
    with pytest.raises(RuntimeError) as info:
        panic("boom")
    message = str(info.value)
    assert message.startswith("internal error in _panic_for_tests: boom at src/bindings/guard.rs:")
    assert message.endswith(f"; please report it (devicemap {_core.__version__})")
    # Still usable afterwards: the panic left nothing broken.
    assert DeviceMap.from_hf({"a": 0}).to_dict() == {"a": "cuda:0"}


def test_a_failing_len_only_loses_the_hint(hs):
    class NoLen(Mapping):
        def __getitem__(self, key: str) -> int:
            return 1

        def __iter__(self) -> Iterator[str]:
            return iter(["a", "b"])

        def __len__(self) -> int:
            raise NotImplementedError("streamed")

    # Haystack never asks for the length; neither result depends on it.
    assert DeviceMap.from_hf(NoLen()).to_dict() == hs.DeviceMap.from_hf(NoLen()).to_dict()
