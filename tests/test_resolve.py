"""The default device: DEVICEMAP_DEVICE, then the process's torch if imported, then NVML without
torch, then XPU/MPS where the platform can have them, then the CPU."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
from _fake_nvml import gpus, run, scenario_env
from devicemap import ComponentDevice, Device, _resolve

RESOLVE = """
import json, sys
from devicemap import ComponentDevice
from devicemap._resolve import _intel_render_node, resolve
device = ComponentDevice.resolve_device()
print(json.dumps({"device": device.to_torch_str(), "reason": resolve().reason,
                  "torch": "torch" in sys.modules, "intel": _intel_render_node()}))
"""


def _resolve_in_subprocess(tmp_path: Path, devices: list | None, **kwargs: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(run(RESOLVE, scenario_env(tmp_path, devices, **kwargs)).stdout)
    return result


def test_fake_gpus_give_cuda_0_without_importing_torch(tmp_path: Path) -> None:
    report = _resolve_in_subprocess(tmp_path, gpus(2))
    assert report["device"] == "cuda:0"
    assert report["torch"] is False
    assert "NVML finds 2 CUDA devices" in str(report["reason"])


def test_visible_devices_hiding_every_gpu_gives_the_cpu(tmp_path: Path) -> None:
    report = _resolve_in_subprocess(tmp_path, gpus(2), CUDA_VISIBLE_DEVICES="")
    if report["intel"]:
        pytest.skip("this machine has an Intel GPU, so XPU is asked of torch")
    assert report["device"] == "cpu"
    assert report["torch"] is False


@pytest.mark.parametrize("init", ["ok", "driver_not_loaded", "no_permission"])
def test_without_usable_nvml_the_cpu_and_no_error(tmp_path: Path, init: str) -> None:
    report = _resolve_in_subprocess(tmp_path, [] if init == "ok" else gpus(1), init=init)
    if report["intel"]:
        pytest.skip("this machine has an Intel GPU, so XPU is asked of torch")
    assert report["device"] == "cpu"
    assert report["torch"] is False
    assert str(report["reason"]).startswith("no CUDA, XPU or MPS device: NVML")


def test_no_library_at_all(tmp_path: Path) -> None:
    report = _resolve_in_subprocess(tmp_path, None)
    if not report["intel"]:
        assert report["device"] == "cpu"
        assert report["torch"] is False


def test_override_in_subprocess_does_not_import_torch(tmp_path: Path) -> None:
    report = _resolve_in_subprocess(tmp_path, gpus(2), DEVICEMAP_DEVICE="cuda:1")
    assert report["device"] == "cuda:1"
    assert report["torch"] is False
    assert report["reason"] == "DEVICEMAP_DEVICE is set to 'cuda:1'"


@pytest.mark.filterwarnings("ignore::devicemap._resolve.UnseenDeviceWarning")  # cuda:1 unseen
@pytest.mark.parametrize(
    ("value", "expected"),
    [("cuda:1", Device.gpu(1)), ("cpu", Device.cpu()), ("mps", Device.mps()), ("xpu", Device.xpu())],
)
def test_override(monkeypatch: pytest.MonkeyPatch, value: str, expected: Device) -> None:
    monkeypatch.setenv("DEVICEMAP_DEVICE", value)
    assert ComponentDevice.resolve_device() == ComponentDevice.from_single(expected)


@pytest.mark.parametrize("value", ["gpu:0", "cuda:-1", "cuda:01", "tpu", "cuda:1:2"])
def test_override_invalid(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DEVICEMAP_DEVICE", value)
    with pytest.raises(ValueError, match=re.escape(f"DEVICEMAP_DEVICE={value!r} is not a valid device")):
        ComponentDevice.resolve_device()


def test_override_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICEMAP_DEVICE", "disk")
    with pytest.raises(ValueError, match=r"DEVICEMAP_DEVICE=.disk.*only be used as a part of device maps"):
        ComponentDevice.resolve_device()


def test_empty_override_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICEMAP_DEVICE", "")
    assert _resolve.from_environment() is None


# --- torch already imported: torch decides, as in Haystack ----------------------------------


@pytest.fixture
def torch(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("DEVICEMAP_DEVICE", raising=False)
    monkeypatch.delenv("HAYSTACK_MPS_ENABLED", raising=False)
    monkeypatch.delenv("HAYSTACK_XPU_ENABLED", raising=False)
    return torch


def _patch(
    monkeypatch: pytest.MonkeyPatch, torch: types.ModuleType, cuda: bool, xpu: bool, mps: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: xpu)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "xpu", "mps", "env", "expected"),
    [
        (True, True, True, {}, "cuda:0"),
        (False, True, True, {}, "xpu"),
        (False, False, True, {}, "mps"),
        (False, False, False, {}, "cpu"),
        (False, True, False, {"HAYSTACK_XPU_ENABLED": "false"}, "cpu"),
        (False, True, False, {"HAYSTACK_XPU_ENABLED": "False"}, "xpu"),
        (False, False, True, {"HAYSTACK_MPS_ENABLED": "false"}, "cpu"),
        (True, False, True, {"HAYSTACK_MPS_ENABLED": "false"}, "cuda:0"),
    ],
)
def test_torch_decides_like_haystack(
    monkeypatch: pytest.MonkeyPatch,
    torch: types.ModuleType,
    hs: types.ModuleType,
    cuda: bool,
    xpu: bool,
    mps: bool,
    env: dict[str, str],
    expected: str,
) -> None:
    _patch(monkeypatch, torch, cuda, xpu, mps)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ours = ComponentDevice.resolve_device()
    assert ours.to_torch_str() == expected
    assert hs.ComponentDevice.resolve_device().to_torch_str() == expected


def test_torch_wins_over_nvml_once_imported(monkeypatch: pytest.MonkeyPatch, torch: types.ModuleType) -> None:
    _patch(monkeypatch, torch, cuda=False, xpu=False, mps=False)
    monkeypatch.setattr(_resolve, "cuda_device_count", lambda: 4)
    assert ComponentDevice.resolve_device().to_torch_str() == "cpu"


# --- without torch imported: XPU/MPS only where the platform can have them ------------------


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """resolve() as if torch were not imported; records whether it would have imported torch."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delenv("DEVICEMAP_DEVICE", raising=False)
    monkeypatch.setattr(_resolve, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(_resolve, "_intel_render_node", lambda: False)
    monkeypatch.setattr(_resolve, "_apple_silicon", lambda: False)
    imports: list[str] = []
    monkeypatch.setattr(_resolve, "_import_torch", lambda: imports.append("torch"))
    return imports


def _fake_torch(xpu: bool, mps: bool) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        xpu=types.SimpleNamespace(is_available=lambda: xpu),
        backends=types.SimpleNamespace(mps=types.SimpleNamespace(is_available=lambda: mps)),
    )


def test_plain_linux_never_asks_torch(no_torch: list[str]) -> None:
    assert _resolve.resolve().device == Device.cpu()
    assert no_torch == []


def test_nvml_gpu_gives_cuda_0(monkeypatch: pytest.MonkeyPatch, no_torch: list[str]) -> None:
    monkeypatch.setattr(_resolve, "cuda_device_count", lambda: 1)
    assert _resolve.resolve().device == Device.gpu(0)
    assert no_torch == []


@pytest.mark.parametrize(("available", "expected"), [(True, Device.xpu()), (False, Device.cpu())])
def test_intel_gpu_is_confirmed_with_torch(
    monkeypatch: pytest.MonkeyPatch, no_torch: list[str], available: bool, expected: Device
) -> None:
    monkeypatch.setattr(_resolve, "_intel_render_node", lambda: True)
    monkeypatch.setattr(_resolve, "_import_torch", lambda: _fake_torch(xpu=available, mps=False))
    assert _resolve.resolve().device == expected
    monkeypatch.setenv("HAYSTACK_XPU_ENABLED", "false")
    assert _resolve.resolve().device == Device.cpu()


@pytest.mark.parametrize(("available", "expected"), [(True, Device.mps()), (False, Device.cpu())])
def test_apple_silicon_is_confirmed_with_torch(
    monkeypatch: pytest.MonkeyPatch, no_torch: list[str], available: bool, expected: Device
) -> None:
    monkeypatch.setattr(_resolve, "_apple_silicon", lambda: True)
    monkeypatch.setattr(_resolve, "_import_torch", lambda: _fake_torch(xpu=False, mps=available))
    assert _resolve.resolve().device == expected
    monkeypatch.setenv("HAYSTACK_MPS_ENABLED", "false")
    assert _resolve.resolve().device == Device.cpu()


def test_torch_missing_on_a_capable_platform(monkeypatch: pytest.MonkeyPatch, no_torch: list[str]) -> None:
    monkeypatch.setattr(_resolve, "_apple_silicon", lambda: True)
    monkeypatch.setattr(_resolve, "_import_torch", lambda: None)
    assert _resolve.resolve().device == Device.cpu()
