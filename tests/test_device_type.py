"""`DeviceType`: a real `enum.Enum` with Haystack's members, order and `from_str`."""

from __future__ import annotations

import copy
import enum
import pickle

import pytest
from devicemap import DeviceType


def test_members_in_haystack_order_then_meta():
    assert [(m.name, m.value) for m in DeviceType] == [
        ("CPU", "cpu"),
        ("GPU", "cuda"),
        ("DISK", "disk"),
        ("MPS", "mps"),
        ("XPU", "xpu"),
        ("META", "meta"),
    ]


def test_is_an_enum():
    assert issubclass(DeviceType, enum.Enum)
    assert isinstance(DeviceType.GPU, DeviceType)
    assert DeviceType("cuda") is DeviceType.GPU
    assert DeviceType["GPU"] is DeviceType.GPU
    assert DeviceType.GPU.name == "GPU"
    assert DeviceType.GPU.value == "cuda"
    assert len(DeviceType) == 6
    with pytest.raises(ValueError, match="'gpu' is not a valid DeviceType"):
        DeviceType("gpu")
    with pytest.raises(KeyError):
        DeviceType["cuda"]


@pytest.mark.parametrize("member", list(DeviceType))
def test_str_is_value(member):
    assert str(member) == member.value
    assert f"{member}" == member.value


@pytest.mark.parametrize("member", list(DeviceType))
def test_pickle_and_copy_keep_identity(member):
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(member, protocol)) is member
    assert copy.copy(member) is member
    assert copy.deepcopy(member) is member


@pytest.mark.parametrize("member", list(DeviceType))
def test_from_str_exact_value(member):
    assert DeviceType.from_str(member.value) is member


@pytest.mark.parametrize("text", ["tpu", "", " cpu", "cpu ", "cuda:0", "CPU_", "gpuu", "cud"])
def test_from_str_unknown(text):
    with pytest.raises(ValueError, match=f"^Unknown device type string '{text}'"):
        DeviceType.from_str(text)


@pytest.mark.parametrize(
    ("text", "hint"),
    [("gpu", "cuda"), ("GPU", "cuda"), ("Gpu", "cuda"), ("CPU", "cpu"), ("CUDA", "cuda"), ("Mps", "mps")],
)
def test_from_str_hint(text, hint):
    with pytest.raises(ValueError, match=f"^Unknown device type string '{text}'; did you mean '{hint}'\\?$"):
        DeviceType.from_str(text)


def test_from_str_no_hint_for_unrelated():
    with pytest.raises(ValueError, match=r"^Unknown device type string 'tpu'$"):
        DeviceType.from_str("tpu")


def test_from_str_member_names_are_not_values():
    # Exact, case-sensitive match on the value: the name "DISK" is not accepted.
    with pytest.raises(ValueError, match="Unknown device type string 'DISK'"):
        DeviceType.from_str("DISK")


@pytest.mark.parametrize("value", [None, 0, b"cuda", DeviceType.GPU, ["cpu"]])
def test_from_str_non_str_is_type_error(value):
    with pytest.raises(TypeError, match="must be a str"):
        DeviceType.from_str(value)
