"""Choosing the default device: the one function `ComponentDevice.resolve_device()` asks.

Order (docs/cuda-numbering.md has the details):

1. `DEVICEMAP_DEVICE`, a device string such as `cuda:1` or `cpu`, validated, overrides all
   (a CUDA device this process does not see is used as given, with an `UnseenDeviceWarning`).
2. If torch is already imported, torch decides, with Haystack's precedence (CUDA, XPU, MPS,
   CPU), so the process agrees with its own torch (and with tests that patch it).
3. Otherwise, without importing torch: a CUDA device found through NVML gives `cuda:0`.
4. XPU or MPS only where the platform can have them (an Intel GPU render node on Linux; macOS
   on Apple silicon), confirmed by importing torch.
5. The CPU.

`HAYSTACK_XPU_ENABLED=false` and `HAYSTACK_MPS_ENABLED=false` switch those two off throughout.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from devicemap._core import CudaDiscovery, Device, cuda_device_count, cuda_status
from devicemap._text import shown
from devicemap._types import DeviceType

OVERRIDE_VARIABLE = "DEVICEMAP_DEVICE"


class Resolution:
    """The chosen default device and, in a sentence, why. Frozen.

    A plain class rather than a dataclass: `dataclasses` imports `inspect`, about 5 ms of every
    cold `resolve_device()`.
    """

    __slots__ = ("device", "reason")
    device: Device
    reason: str

    def __init__(self, device: Device, reason: str) -> None:
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "reason", reason)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Resolution is frozen; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Resolution is frozen; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resolution):
            return NotImplemented
        return (self.device, self.reason) == (other.device, other.reason)

    def __hash__(self) -> int:
        return hash((self.device, self.reason))

    def __repr__(self) -> str:
        return f"Resolution(device={self.device!r}, reason={self.reason!r})"


def _enabled(variable: str) -> bool:
    # Haystack compares with exactly "false"; "False" or "0" leave the backend enabled.
    return os.environ.get(variable, "true") != "false"


def _ask_torch(torch: ModuleType) -> Resolution:
    """Haystack's own decision, asked of the process's torch."""
    has_mps = (
        hasattr(torch.backends, "mps")
        and torch.backends.mps.is_available()
        and _enabled("HAYSTACK_MPS_ENABLED")
    )
    has_cuda = torch.cuda.is_available()
    has_xpu = (
        hasattr(torch, "xpu")
        and hasattr(torch.xpu, "is_available")
        and torch.xpu.is_available()
        and _enabled("HAYSTACK_XPU_ENABLED")
    )
    if has_cuda:
        return Resolution(Device.gpu(), "torch reports CUDA available")
    if has_xpu:
        return Resolution(Device.xpu(), "torch reports an Intel XPU available")
    if has_mps:
        return Resolution(Device.mps(), "torch reports Apple MPS available")
    return Resolution(Device.cpu(), "torch reports no CUDA, XPU or MPS device")


def from_environment() -> Resolution | None:
    """The device `DEVICEMAP_DEVICE` names, or None when it is unset or empty."""
    value = os.environ.get(OVERRIDE_VARIABLE)
    if not value:
        return None
    try:
        device = Device.from_str(value)
    except ValueError as error:
        raise ValueError(f"{OVERRIDE_VARIABLE}={shown(value)} is not a valid device: {error}") from None
    if device.type is DeviceType.DISK:
        raise ValueError(
            f"{OVERRIDE_VARIABLE}={shown(value)} names the disk, "
            "which can only be used as a part of device maps"
        )
    if device.type is DeviceType.GPU:
        _warn_if_unseen(value, device.id or 0)
    return Resolution(device, f"{OVERRIDE_VARIABLE} is set to {shown(value)}")


class UnseenDeviceWarning(UserWarning):
    """`DEVICEMAP_DEVICE` names a CUDA device this process does not see."""


def _warn_if_unseen(value: str, index: int) -> None:
    """The override is used as given (it is how a user says "this device, whatever you find"),
    but naming a CUDA device this process does not see is almost always a mistake (a machine
    without the GPU, `CUDA_VISIBLE_DEVICES` hiding it): say so, once per place it is asked from.
    Asked of the process's torch when it is imported already, else of NVML."""
    torch = sys.modules.get("torch")
    count = torch.cuda.device_count() if torch is not None else cuda_device_count()
    if index < count:
        return
    why = "torch" if torch is not None else cuda_status().rstrip(".")
    import warnings

    plural = "device" if count == 1 else "devices"
    warnings.warn(
        f"{OVERRIDE_VARIABLE}={shown(value)} names CUDA device {index}, but this process sees "
        f"{count} CUDA {plural} ({why}); using it as given",
        UnseenDeviceWarning,
        stacklevel=_outside_level(),
    )


def _outside_level() -> int:
    """The `stacklevel` of the nearest caller outside devicemap, for `_warn_if_unseen`'s
    warning (Python 3.12's `skip_file_prefixes`, for 3.10 and 3.11)."""
    package = os.path.dirname(__file__)
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _intel_render_node() -> bool:
    """Whether Linux has a DRM render node of an Intel GPU (PCI vendor 0x8086)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        nodes = [name for name in os.listdir("/sys/class/drm") if name.startswith("renderD")]
    except OSError:
        return False
    for node in nodes:
        try:
            with open(f"/sys/class/drm/{node}/device/vendor", encoding="ascii") as file:
                if file.read().strip().lower() == "0x8086":
                    return True
        except OSError:
            continue
    return False


def _apple_silicon() -> bool:
    return sys.platform == "darwin" and os.uname().machine == "arm64"


def _import_torch() -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _xpu_or_mps() -> Resolution | None:
    """XPU, then MPS, asked of torch only on platforms that can have them."""
    if _enabled("HAYSTACK_XPU_ENABLED") and _intel_render_node():
        torch = _import_torch()
        xpu = getattr(torch, "xpu", None)
        if xpu is not None and hasattr(xpu, "is_available") and xpu.is_available():
            return Resolution(Device.xpu(), "an Intel GPU is present and torch reports XPU available")
    if _enabled("HAYSTACK_MPS_ENABLED") and _apple_silicon():
        torch = _import_torch()
        backends = getattr(torch, "backends", None)
        mps = getattr(backends, "mps", None)
        if mps is not None and mps.is_available():
            return Resolution(Device.mps(), "this is Apple silicon and torch reports MPS available")
    return None


NO_DEVICE = "no CUDA, XPU or MPS device"


def resolve(discovery: CudaDiscovery | None = None) -> Resolution:
    """The default device for this process, with the reason.

    `discovery`, from `cuda_discover()`, lets a caller that already ran CUDA discovery reuse it
    rather than run it again; without one, discovery runs here when needed.
    """
    override = from_environment()
    if override is not None:
        return override
    torch = sys.modules.get("torch")
    if torch is not None:
        return _ask_torch(torch)
    count = len(discovery.devices) if discovery is not None else cuda_device_count()
    if count:
        plural = "device" if count == 1 else "devices"
        return Resolution(Device.gpu(), f"NVML finds {count} CUDA {plural} visible to this process")
    other = _xpu_or_mps()
    if other is not None:
        return other
    status = discovery.status if discovery is not None else cuda_status()
    return Resolution(Device.cpu(), f"{NO_DEVICE}: {status}")


def default_device() -> Device:
    return resolve().device
