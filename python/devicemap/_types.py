"""`DeviceType`, a real `enum.Enum`: the Rust core refers to its members by position."""

from __future__ import annotations

from enum import Enum

from devicemap import _core


class DeviceType(Enum):
    """The kinds of device. The first five are Haystack's, in Haystack's order.

    `DISK` only appears inside device maps (weights offloaded to disk); `META` is torch's
    shape-only device, which Haystack does not know.
    """

    CPU = "cpu"
    GPU = "cuda"
    DISK = "disk"
    MPS = "mps"
    XPU = "xpu"
    META = "meta"

    def __str__(self) -> str:
        return self.value

    @staticmethod
    def from_str(string: str) -> DeviceType:
        """The member whose value is exactly `string`; `ValueError` otherwise."""
        return _MEMBERS[_core._device_type_index(string)]


_MEMBERS = tuple(DeviceType)
if tuple(m.value for m in _MEMBERS) != _core._DEVICE_TYPE_VALUES:  # pragma: no cover
    raise ImportError("devicemap._core and devicemap.DeviceType disagree on the device types; reinstall")
