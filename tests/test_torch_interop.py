"""Real torch: `to_torch`, `from_hf` with `torch.device` values, and torch never imported by us."""

from __future__ import annotations

import pytest
from _subprocess import run_python
from devicemap import ComponentDevice, Device, DeviceMap, DeviceType

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "text", ["cpu", "cuda", "cuda:0", "cuda:1", "cuda:127", "mps", "xpu:2", "meta", "cpu:0"]
)
def test_to_torch(text):
    result = ComponentDevice.from_str(text).to_torch()
    assert isinstance(result, torch.device)
    assert result == torch.device(text)
    assert str(result) == text


def test_to_torch_id_beyond_torchs_index():
    assert ComponentDevice.from_str("cuda:127").to_torch().index == 127
    for text in ("cuda:128", "xpu:255", f"cuda:{2**64 - 1}"):
        with pytest.raises(ValueError, match="out of range for PyTorch"):
            ComponentDevice.from_str(text).to_torch()
    # No torch needed for the string form, which has no such limit.
    assert ComponentDevice.from_str("cuda:128").to_torch_str() == "cuda:128"


def test_to_torch_rejects_maps():
    cd = ComponentDevice.from_multiple(DeviceMap({"a": Device.cpu()}))
    with pytest.raises(ValueError, match="Only single devices can be converted to PyTorch format"):
        cd.to_torch()


def test_first_device_to_torch():
    dm = DeviceMap.from_hf({"embed": "disk", "layers.0": 1, "head": "cpu"})
    assert ComponentDevice.from_multiple(dm).first_device.to_torch() == torch.device("cuda:1")


@pytest.mark.parametrize(
    ("value", "device"),
    [
        (torch.device("cpu"), Device.cpu()),
        (torch.device("cuda"), Device(DeviceType.GPU)),
        (torch.device("cuda:1"), Device.gpu(1)),
        (torch.device("cuda", 3), Device.gpu(3)),
        (torch.device("mps"), Device.mps()),
        (torch.device("xpu:0"), Device(DeviceType.XPU, 0)),
        (torch.device("meta"), Device(DeviceType.META)),
        (torch.device("cpu:2"), Device(DeviceType.CPU, 2)),
    ],
)
def test_from_hf_torch_device(value, device):
    assert DeviceMap.from_hf({"layer": value})["layer"] == device


def test_from_hf_mixed_values_round_trip_through_torch():
    hf = {"a": torch.device("cuda:0"), "b": 1, "c": "cpu", "d": torch.device("cpu"), "e": "disk"}
    dm = DeviceMap.from_hf(hf)
    assert dm.to_dict() == {"a": "cuda:0", "b": "cuda:1", "c": "cpu", "d": "cpu", "e": "disk"}
    for device in dm.values():
        if device.type is not DeviceType.DISK:
            assert ComponentDevice.from_single(device).to_torch() == torch.device(str(device))


def test_from_hf_unknown_torch_type_names_key():
    with pytest.raises(ValueError, match=r"Unknown device type string 'hpu' \(key 'x'\)"):
        DeviceMap.from_hf({"ok": 0, "x": torch.device("hpu")})


def test_torch_device_not_mistaken_for_a_string_or_int():
    # Would be 'cuda:0' either way; checks the value went through the torch branch, not str().
    dm = DeviceMap.from_hf({"a": torch.device("cuda", 0)})
    assert dm["a"] == Device.gpu(0)


def test_torch_is_imported_only_when_the_user_did():
    result = run_python(
        """
        import sys
        import devicemap
        from devicemap import ComponentDevice, Device, DeviceMap
        dm = DeviceMap.from_hf({"a": 0, "b": "cpu", "c": "disk"})
        cd = ComponentDevice.from_multiple(dm)
        cd.to_hf(); cd.to_dict(); cd.first_device.to_torch_str(); dm.fingerprint()
        ComponentDevice.from_str("cuda:1").to_spacy()
        try:
            DeviceMap.from_hf({"x": object()})
        except TypeError:
            pass
        assert "torch" not in sys.modules, "devicemap imported torch"
        import torch
        assert DeviceMap.from_hf({"t": torch.device("cuda:2")})["t"] == Device.gpu(2)
        print("ok")
        """
    )
    assert result.stdout.strip() == "ok"
