"""`Device`: construction, validation, text forms, equality, hashing, immutability, parsing."""

from __future__ import annotations

import pytest
from devicemap import Device, DeviceType

MAX_ID = 2**64 - 1


def test_constructor_positional_and_keyword():
    assert Device(DeviceType.GPU, 1) == Device(type=DeviceType.GPU, id=1)
    assert Device(DeviceType.CPU).id is None
    assert Device(type=DeviceType.DISK).type is DeviceType.DISK
    d = Device(DeviceType.XPU, id=2)
    assert (d.type, d.id) == (DeviceType.XPU, 2)


@pytest.mark.parametrize("member", list(DeviceType))
def test_type_may_be_given_as_value(member):
    assert Device(member.value, 3) == Device(member, 3)
    assert Device(member.value).type is member


def test_type_string_unknown_is_value_error_with_hint():
    with pytest.raises(ValueError, match="Unknown device type string 'gpu'; did you mean 'cuda'"):
        Device("gpu", 0)


@pytest.mark.parametrize("bad", [0, None, 1.5, b"cuda", object()])
def test_type_of_wrong_kind_is_type_error(bad):
    with pytest.raises(TypeError, match="Device type must be a DeviceType or one of its values"):
        Device(bad)


@pytest.mark.parametrize("bad", [True, False, 1.0, "1", b"1", [1]])
def test_id_not_int_is_type_error(bad):
    with pytest.raises(TypeError, match="Device id must be an int or None"):
        Device(DeviceType.GPU, bad)
    with pytest.raises(TypeError, match="Device id must be an int or None"):
        Device.gpu(bad)


@pytest.mark.parametrize("bad", [-1, -5, -(2**70)])
def test_negative_id_is_value_error(bad):
    with pytest.raises(ValueError, match=f"^Device id must be >= 0, got {bad}$"):
        Device(DeviceType.GPU, bad)


def test_negative_id_message_exact():
    with pytest.raises(ValueError, match=r"^Device id must be >= 0, got -1$"):
        Device(DeviceType.CPU, -1)


def test_id_range():
    assert Device(DeviceType.GPU, MAX_ID).id == MAX_ID
    assert Device(DeviceType.GPU, 0).id == 0
    with pytest.raises(ValueError, match="too large"):
        Device(DeviceType.GPU, MAX_ID + 1)
    assert Device.from_str(f"cuda:{MAX_ID}").id == MAX_ID
    with pytest.raises(ValueError, match="too large"):
        Device.from_str(f"cuda:{MAX_ID + 1}")


def test_int_subclass_id_is_accepted_as_its_value():
    class MyInt(int):
        pass

    d = Device(DeviceType.GPU, MyInt(4))
    assert d.id == 4
    assert type(d.id) is int


@pytest.mark.parametrize(
    ("device", "text"),
    [
        (Device(DeviceType.CPU), "cpu"),
        (Device(DeviceType.GPU, 1), "cuda:1"),
        (Device(DeviceType.GPU), "cuda"),
        (Device(DeviceType.DISK, 0), "disk:0"),
        (Device(DeviceType.META), "meta"),
        (Device(DeviceType.XPU, MAX_ID), f"xpu:{MAX_ID}"),
    ],
)
def test_str(device, text):
    assert str(device) == text


def test_repr_is_haystacks():
    assert repr(Device(DeviceType.GPU, 1)) == "Device(type=<DeviceType.GPU: 'cuda'>, id=1)"
    assert repr(Device.cpu()) == "Device(type=<DeviceType.CPU: 'cpu'>, id=None)"
    assert repr(Device.disk()) == "Device(type=<DeviceType.DISK: 'disk'>, id=None)"


def test_factories():
    assert Device.cpu() == Device(DeviceType.CPU, None)
    assert Device.gpu() == Device(DeviceType.GPU, 0)
    assert Device.gpu(3) == Device(DeviceType.GPU, 3)
    assert Device.gpu(id=2).id == 2
    # As Haystack: an explicit None is the id-less `cuda`, not the default 0.
    assert Device.gpu(None) == Device(DeviceType.GPU, None)
    assert str(Device.gpu(id=None)) == "cuda"
    assert Device.disk() == Device(DeviceType.DISK, None)
    assert Device.mps() == Device(DeviceType.MPS, None)
    assert Device.xpu() == Device(DeviceType.XPU, None)
    with pytest.raises(ValueError, match="Device id must be >= 0, got -1"):
        Device.gpu(-1)


def test_equality_by_type_and_id():
    assert Device.from_str("cuda") != Device.gpu()  # None is not 0
    assert Device(DeviceType.CPU, 0) != Device.cpu()
    assert Device(DeviceType.CPU, 0) == Device(DeviceType.CPU, 0)
    assert Device(DeviceType.GPU, 1) != Device(DeviceType.XPU, 1)
    assert not (Device.cpu() != Device.cpu())  # noqa: SIM202 - tests __ne__ itself


@pytest.mark.parametrize("other", ["cpu", DeviceType.CPU, None, ("cpu", None), 0])
def test_equality_only_with_devices(other):
    assert Device.cpu() != other
    assert not (Device.cpu() == other)  # noqa: SIM201 - tests __eq__ itself


def test_no_ordering():
    with pytest.raises(TypeError):
        _ = Device.cpu() < Device.gpu()


def test_frozen():
    d = Device(DeviceType.GPU, 1)
    with pytest.raises(AttributeError):
        d.type = DeviceType.CPU
    with pytest.raises(AttributeError):
        d.id = 2
    with pytest.raises(AttributeError):
        d.other = 1
    assert d == Device(DeviceType.GPU, 1)


def test_hashable():
    a, b = Device(DeviceType.GPU, 1), Device("cuda", 1)
    assert hash(a) == hash(b)
    assert {a, b, Device.cpu(), Device(DeviceType.CPU, 0)} == {a, Device.cpu(), Device(DeviceType.CPU, 0)}
    table = {Device.gpu(0): "first", Device(DeviceType.GPU): "bare"}
    assert table[Device.from_str("cuda:0")] == "first"
    assert table[Device.from_str("cuda")] == "bare"
    # Distinct devices land in a set as distinct members, large ids included.
    many = {Device(t, i) for t in DeviceType for i in (None, 0, 1, 2**63, 2**64 - 1)}
    assert len(many) == len(DeviceType) * 5


def test_match_args():
    assert Device.__match_args__ == ("type", "id")
    match Device.from_str("cuda:3"):
        case Device(DeviceType.GPU, index):
            assert index == 3
        case _:
            pytest.fail("no match")


@pytest.mark.parametrize(
    ("text", "device"),
    [
        ("cpu", Device(DeviceType.CPU)),
        ("cuda", Device(DeviceType.GPU)),
        ("cuda:0", Device(DeviceType.GPU, 0)),
        ("cuda:10", Device(DeviceType.GPU, 10)),
        ("cpu:0", Device(DeviceType.CPU, 0)),
        ("disk:3", Device(DeviceType.DISK, 3)),
        ("mps:0", Device(DeviceType.MPS, 0)),
        ("xpu:1", Device(DeviceType.XPU, 1)),
        ("meta", Device(DeviceType.META)),
    ],
)
def test_from_str(text, device):
    assert Device.from_str(text) == device
    assert str(Device.from_str(text)) == text


@pytest.mark.parametrize(
    "text",
    ["cuda: 1", "cuda:+2", "cuda:1_0", "cuda:01", "cuda:00", "cuda:", "cuda:\u0661", "cuda:-0", "cuda:1 "],
)
def test_from_str_id_follows_torch_grammar(text):
    part = text.split(":", 1)[1]
    with pytest.raises(ValueError, match=r"^Device id must be an integer, got ") as info:
        Device.from_str(text)
    # The part is quoted as repr quotes it, so a space or an empty part is visible.
    assert str(info.value) == f"Device id must be an integer, got {part!r}"


@pytest.mark.parametrize(("text", "shown"), [("cuda:-1", "-1"), ("cpu:-12", "-12"), ("cuda:-007", "-7")])
def test_from_str_negative_id_as_haystack(hs, text, shown):
    message = f"Device id must be >= 0, got {shown}"
    with pytest.raises(ValueError, match=f"^{message}$"):
        Device.from_str(text)
    with pytest.raises(ValueError, match=f"^{message}$"):
        hs.Device.from_str(text)


def test_from_str_more_than_one_colon():
    with pytest.raises(ValueError, match="more than one ':'") as info:
        Device.from_str("cuda:0:1")
    assert "cuda:0:1" in str(info.value)


@pytest.mark.parametrize(("text", "bad"), [("gpu", "gpu"), ("GPU:1", "GPU"), ("tpu:0", "tpu"), ("", "")])
def test_from_str_unknown_type(text, bad):
    with pytest.raises(ValueError, match=f"Unknown device type string '{bad}'"):
        Device.from_str(text)


def test_from_str_checks_id_before_type():
    # Haystack parses the id first, so "gpu:x" complains about the id.
    with pytest.raises(ValueError, match=r"^Device id must be an integer, got 'x'$"):
        Device.from_str("gpu:x")


@pytest.mark.parametrize("bad", [None, 0, b"cuda", DeviceType.GPU, Device.cpu()])
def test_from_str_non_str_is_type_error(bad):
    with pytest.raises(TypeError, match="Device string must be a str"):
        Device.from_str(bad)
