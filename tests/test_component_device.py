"""`ComponentDevice`: the frozen union of one device or one map, and its conversions."""

from __future__ import annotations

import pytest
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType

INVALID = "The component device can neither be empty nor contain both a single device and a device map"


@pytest.fixture
def dm():
    return DeviceMap({"layer1": Device.cpu(), "layer2": Device.gpu(1), "layer3": Device.disk()})


def invalid_components():
    return [
        ComponentDevice(),
        ComponentDevice(Device.cpu(), DeviceMap({"a": Device.cpu()})),
    ]


def test_constructor_positional_and_keyword(dm):
    single = ComponentDevice(Device.gpu(1))
    assert single._single_device == Device.gpu(1)
    assert single._multiple_devices is None
    multi = ComponentDevice(_multiple_devices=dm)
    assert multi._single_device is None
    assert multi._multiple_devices == dm
    assert ComponentDevice(None, dm) == multi
    assert ComponentDevice(_single_device=Device.gpu(1)) == single


def test_constructor_does_not_validate(dm):
    # Haystack checks only when used; a disk single device is accepted here too.
    assert ComponentDevice()._single_device is None
    both = ComponentDevice(Device.cpu(), dm)
    assert both._single_device == Device.cpu()
    assert ComponentDevice(Device.disk())._single_device == Device.disk()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"_single_device": "cuda:0"},
        {"_multiple_devices": {"a": Device.cpu()}},
        {"_single_device": DeviceMap()},
    ],
)
def test_constructor_rejects_other_types(kwargs):
    with pytest.raises(TypeError):
        ComponentDevice(**kwargs)


def test_frozen(dm):
    cd = ComponentDevice.from_single(Device.cpu())
    with pytest.raises(AttributeError):
        cd._single_device = Device.gpu()
    with pytest.raises(AttributeError):
        cd._multiple_devices = dm
    with pytest.raises(AttributeError):
        cd.other = 1


@pytest.mark.parametrize("cd", invalid_components())
@pytest.mark.parametrize(
    "operation",
    [
        lambda cd: cd.to_torch(),
        lambda cd: cd.to_torch_str(),
        lambda cd: cd.to_spacy(),
        lambda cd: cd.to_hf(),
        lambda cd: cd.update_hf_kwargs({}, overwrite=True),
        lambda cd: cd.update_hf_kwargs({"device": 1}, overwrite=False),
        lambda cd: cd.has_multiple_devices,
        lambda cd: cd.first_device,
    ],
)
def test_validation_runs_first(cd, operation):
    with pytest.raises(ValueError, match=INVALID):
        operation(cd)


def test_from_str():
    assert ComponentDevice.from_str("cuda:1") == ComponentDevice.from_single(Device.gpu(1))
    assert ComponentDevice.from_str("cpu")._single_device == Device.cpu()
    with pytest.raises(ValueError, match="The disk device can only be used as a part of device maps"):
        ComponentDevice.from_str("disk")
    with pytest.raises(ValueError, match="Unknown device type string 'gpu'"):
        ComponentDevice.from_str("gpu")
    with pytest.raises(TypeError, match="must be a str"):
        ComponentDevice.from_str(0)


def test_from_single():
    assert ComponentDevice.from_single(Device.mps())._single_device == Device.mps()
    with pytest.raises(ValueError, match="The disk device can only be used as a part of device maps"):
        ComponentDevice.from_single(Device(DeviceType.DISK, 2))
    with pytest.raises(TypeError):
        ComponentDevice.from_single("cpu")


def test_from_multiple(dm):
    cd = ComponentDevice.from_multiple(dm)
    assert cd._multiple_devices == dm
    assert cd._single_device is None
    with pytest.raises(TypeError):
        ComponentDevice.from_multiple({"a": Device.cpu()})


def test_multiple_devices_is_copy_on_write(dm):
    cd = ComponentDevice.from_multiple(dm)
    fingerprint = cd._multiple_devices.fingerprint()
    dm["layer1"] = Device.gpu(7)
    dm["new"] = Device.cpu()
    assert "new" not in cd._multiple_devices
    assert cd._multiple_devices["layer1"] == Device.cpu()
    returned = cd._multiple_devices
    returned["layer2"] = Device.xpu()
    del returned["layer3"]
    returned.mapping["zz"] = Device.cpu()
    assert cd._multiple_devices["layer2"] == Device.gpu(1)
    assert "layer3" in cd._multiple_devices
    assert cd._multiple_devices.fingerprint() == fingerprint
    assert cd._multiple_devices is not cd._multiple_devices


def test_to_torch_str():
    assert ComponentDevice.from_str("cuda:2").to_torch_str() == "cuda:2"
    assert ComponentDevice.from_single(Device.cpu()).to_torch_str() == "cpu"
    assert ComponentDevice.from_single(Device(DeviceType.GPU)).to_torch_str() == "cuda"


def test_single_only_conversions_reject_maps(dm):
    cd = ComponentDevice.from_multiple(dm)
    with pytest.raises(ValueError, match=r"^Only single devices can be converted to PyTorch format$"):
        cd.to_torch()
    with pytest.raises(ValueError, match=r"^Only single devices can be converted to PyTorch format$"):
        cd.to_torch_str()
    with pytest.raises(ValueError, match=r"^Only single devices can be converted to spaCy format$"):
        cd.to_spacy()


def test_to_spacy():
    assert ComponentDevice.from_str("cuda:3").to_spacy() == 3
    assert ComponentDevice.from_str("cuda:0").to_spacy() == 0
    for text in ("cpu", "mps", "xpu:1", "meta"):
        assert ComponentDevice.from_str(text).to_spacy() == -1
    with pytest.raises(ValueError, match=r"GPU id.*'cuda'"):
        ComponentDevice.from_str("cuda").to_spacy()


def test_to_hf(dm):
    single = ComponentDevice.from_str("cuda:1").to_hf()
    assert single == "cuda:1"
    assert isinstance(single, str)
    assert ComponentDevice.from_str("cpu").to_hf() == "cpu"
    hf = ComponentDevice.from_multiple(dm).to_hf()
    assert hf == {"layer1": "cpu", "layer2": 1, "layer3": "disk"}
    assert list(hf) == ["layer1", "layer2", "layer3"]
    assert type(hf["layer2"]) is int


def test_to_hf_gpu_without_id_in_map_names_key():
    cd = ComponentDevice.from_multiple(DeviceMap({"a": Device.gpu(0), "blocks.3": Device(DeviceType.GPU)}))
    with pytest.raises(ValueError, match=r"GPU id.*\(key 'blocks\.3'\)$"):
        cd.to_hf()
    with pytest.raises(ValueError, match=r"key 'blocks\.3'"):
        cd.update_hf_kwargs({}, overwrite=True)


def test_update_hf_kwargs_single():
    cd = ComponentDevice.from_str("cuda:1")
    kwargs = {"model": "x"}
    assert cd.update_hf_kwargs(kwargs, overwrite=False) is kwargs
    assert kwargs == {"model": "x", "device": "cuda:1"}


def test_update_hf_kwargs_multiple(dm):
    cd = ComponentDevice.from_multiple(dm)
    kwargs: dict = {}
    assert cd.update_hf_kwargs(kwargs, overwrite=False) is kwargs
    assert kwargs == {"device_map": {"layer1": "cpu", "layer2": 1, "layer3": "disk"}}


@pytest.mark.parametrize(
    "existing", [{"device": None}, {"device_map": None}, {"device": "cpu"}, {"device_map": "auto"}]
)
def test_update_hf_kwargs_keeps_users_choice(existing):
    kwargs = dict(existing)
    assert ComponentDevice.from_str("cuda:0").update_hf_kwargs(kwargs, overwrite=False) is kwargs
    assert kwargs == existing


def test_update_hf_kwargs_overwrite_never_deletes_other_key(dm):
    kwargs = {"device_map": "auto"}
    ComponentDevice.from_str("cuda:0").update_hf_kwargs(kwargs, overwrite=True)
    assert kwargs == {"device_map": "auto", "device": "cuda:0"}
    kwargs = {"device": "cpu"}
    ComponentDevice.from_multiple(dm).update_hf_kwargs(kwargs, overwrite=True)
    assert kwargs == {"device": "cpu", "device_map": {"layer1": "cpu", "layer2": 1, "layer3": "disk"}}


def test_update_hf_kwargs_overwrite_is_keyword_only_and_required():
    cd = ComponentDevice.from_str("cpu")
    with pytest.raises(TypeError):
        cd.update_hf_kwargs({})
    with pytest.raises(TypeError):
        cd.update_hf_kwargs({}, True)


def test_has_multiple_devices(dm):
    assert ComponentDevice.from_multiple(dm).has_multiple_devices is True
    assert ComponentDevice.from_str("cpu").has_multiple_devices is False


def test_first_device(dm):
    single = ComponentDevice.from_str("cuda:2")
    first = single.first_device
    assert isinstance(first, ComponentDevice)
    assert first == single
    multi = DeviceMap({"a": Device.disk(), "b": Device.gpu(3), "c": Device.cpu()})
    assert ComponentDevice.from_multiple(multi).first_device == ComponentDevice.from_single(Device.gpu(3))
    assert ComponentDevice.from_multiple(dm).first_device == ComponentDevice.from_str("cpu")


@pytest.mark.parametrize(
    "mapping", [{}, {"a": Device.disk()}, {"a": Device.disk(), "b": Device(DeviceType.DISK, 1)}]
)
def test_first_device_without_usable_device(mapping):
    with pytest.raises(ValueError, match="No usable device found in the device map"):
        _ = ComponentDevice.from_multiple(DeviceMap(mapping)).first_device


def test_resolve_device_contract():
    cd = ComponentDevice.from_str("cuda:1")
    assert ComponentDevice.resolve_device(cd) is cd
    assert ComponentDevice.resolve_device(device=cd) is cd
    chosen = ComponentDevice.resolve_device()
    assert isinstance(chosen, ComponentDevice)
    assert chosen.has_multiple_devices is False
    assert isinstance(ComponentDevice.resolve_device(None), ComponentDevice)


@pytest.mark.parametrize(
    ("value", "name"), [("cuda", "str"), (Device.cpu(), "Device"), (DeviceMap(), "DeviceMap"), (0, "int")]
)
def test_resolve_device_rejects_other_types(value, name):
    with pytest.raises(
        ValueError, match=f"^Invalid component device type '{name}'. Must either be None or ComponentDevice.$"
    ):
        ComponentDevice.resolve_device(value)


def test_to_dict(dm):
    assert ComponentDevice.from_str("cuda:1").to_dict() == {"type": "single", "device": "cuda:1"}
    assert ComponentDevice.from_multiple(dm).to_dict() == {
        "type": "multiple",
        "device_map": {"layer1": "cpu", "layer2": "cuda:1", "layer3": "disk"},
    }
    # Both set: the single form, as Haystack.
    assert ComponentDevice(Device.cpu(), dm).to_dict() == {"type": "single", "device": "cpu"}
    with pytest.raises(ValueError, match=INVALID):
        ComponentDevice().to_dict()


def test_from_dict(dm):
    assert ComponentDevice.from_dict({"type": "single", "device": "cuda:1"}) == ComponentDevice.from_str(
        "cuda:1"
    )
    multi = ComponentDevice.from_dict(
        {"type": "multiple", "device_map": {"layer1": "cpu", "layer2": "cuda:1", "layer3": "disk"}}
    )
    assert multi == ComponentDevice.from_multiple(dm)
    with pytest.raises(ValueError, match="The disk device can only be used as a part of device maps"):
        ComponentDevice.from_dict({"type": "single", "device": "disk"})
    with pytest.raises(ValueError, match=r"^Unknown component device type 'pair' in serialized data$"):
        ComponentDevice.from_dict({"type": "pair"})
    with pytest.raises(KeyError):
        ComponentDevice.from_dict({})
    with pytest.raises(KeyError):
        ComponentDevice.from_dict({"type": "single"})
    with pytest.raises(KeyError):
        ComponentDevice.from_dict({"type": "multiple"})
    with pytest.raises(ValueError, match="key 'b'"):
        ComponentDevice.from_dict({"type": "multiple", "device_map": {"a": "cpu", "b": "cuda:x"}})
    with pytest.raises(TypeError, match="key 'b'"):
        ComponentDevice.from_dict({"type": "multiple", "device_map": {"a": "cpu", "b": 1}})


def test_equality_and_hash(dm):
    a = ComponentDevice.from_multiple(dm)
    b = ComponentDevice.from_multiple(DeviceMap(dict(reversed(dm.items()))))
    assert a == b
    assert hash(a) == hash(b)
    assert a != ComponentDevice.from_str("cpu")
    assert ComponentDevice.from_str("cpu") == ComponentDevice.from_single(Device.cpu())
    assert hash(ComponentDevice.from_str("cpu")) == hash(ComponentDevice.from_single(Device.cpu()))
    assert ComponentDevice.from_str("cpu") != ComponentDevice.from_str("cuda:0")
    assert ComponentDevice() == ComponentDevice()
    assert ComponentDevice(Device.cpu(), dm) != ComponentDevice.from_str("cpu")
    assert ComponentDevice.from_str("cpu") != "cpu"
    assert ComponentDevice.from_str("cpu") != Device.cpu()
    assert len({a, b, ComponentDevice.from_str("cpu"), ComponentDevice.from_str("cpu")}) == 2


def test_repr(dm):
    assert repr(ComponentDevice.from_str("cuda:1")) == (
        "ComponentDevice(_single_device=Device(type=<DeviceType.GPU: 'cuda'>, id=1), _multiple_devices=None)"
    )
    small = DeviceMap({"a": Device.cpu()})
    assert repr(ComponentDevice.from_multiple(small)) == (
        f"ComponentDevice(_single_device=None, _multiple_devices={small!r})"
    )
    assert repr(ComponentDevice()) == "ComponentDevice(_single_device=None, _multiple_devices=None)"
